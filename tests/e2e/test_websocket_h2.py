"""WebSocket over HTTP/2 (RFC 8441): an HTTP/2 client opens a WebSocket with an extended CONNECT
(:protocol websocket) on a listener with `http2: true`. The gateway turns it into the HTTP/1.1
upgrade the route expects: passthrough to a WebSocket upstream (`websocket: true`) or terminated
here (`websocket_bridge`). The client is python `h2` over a raw socket, with WebSocket frames
built by hand, so every byte on the wire is the test's own."""

import json
import os
import socket
import struct

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from conftest import HOST, free_port, proxy_config, wait_for
from test_websocket import WsServer


@pytest.fixture
def ws_server():
    s = WsServer()
    yield s
    s.stop()


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked (client-to-server) WebSocket frame."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    else:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", n)
    return head + mask + masked


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each complete unmasked frame in `data`."""
    out, i = [], 0
    while i + 2 <= len(data):
        op, n = data[i] & 0x0F, data[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            if j + 2 > len(data):
                break
            n, j = struct.unpack("!H", data[j:j + 2])[0], j + 2
        elif n == 127:
            if j + 8 > len(data):
                break
            n, j = struct.unpack("!Q", data[j:j + 8])[0], j + 8
        if j + n > len(data):
            break
        out.append((op, data[j:j + n]))
        i = j + n
    return out


class H2WebSocket:
    """One extended-CONNECT stream on a fresh h2c connection."""

    def __init__(self, port: int, path: str, headers=()):
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.status = None
        self.headers = {}
        self.data = b""
        self.ended = False
        self.reset = None
        self.settings = None
        while self.settings is None:
            self._pump()
        self.sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(self.sid, [(":method", "CONNECT"), (":protocol", "websocket"),
                                          (":scheme", "http"), (":path", path),
                                          (":authority", f"{HOST}:{port}"),
                                          ("sec-websocket-version", "13"), *headers])
        self.sock.sendall(self.conn.data_to_send())
        while self.status is None and not self.ended:
            self._pump()

    def _pump(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            self.ended = True
            return
        for e in self.conn.receive_data(chunk):
            if isinstance(e, h2.events.RemoteSettingsChanged):
                self.settings = dict(self.conn.remote_settings)
            elif isinstance(e, h2.events.ResponseReceived):
                self.headers = dict(e.headers)
                self.status = int(self.headers[":status"])
            elif isinstance(e, h2.events.DataReceived):
                self.data += e.data
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded):
                self.ended = True
            elif isinstance(e, h2.events.StreamReset):
                self.ended, self.reset = True, e.error_code
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def send(self, payload: bytes, opcode: int = 1):
        self.conn.send_data(self.sid, client_frame(payload, opcode))
        self.sock.sendall(self.conn.data_to_send())

    def frames(self, count: int) -> list[tuple[int, bytes]]:
        """Waits until `count` frames arrived (or the stream ended) and returns them all."""
        while len(server_frames(self.data)) < count and not self.ended:
            self._pump()
        return server_frames(self.data)

    def wait_end(self):
        while not self.ended:
            self._pump()

    def close(self):
        self.sock.close()


def h2_gateway(gateway_factory, upstreams: dict, route: dict):
    port = free_port()
    cfg = {"listeners": [{"name": "web", "listen": f"{HOST}:{port}", "http2": True}],
           "workers": 1, "shutdown_timeout": "2s",
           "log": {"access": "stdout", "error": "stderr"}} | proxy_config(upstreams, [route])
    return gateway_factory(cfg, port=port)


def test_passthrough_websocket_over_http2_echoes_and_closes_cleanly(gateway_factory, ws_server):
    gw = h2_gateway(gateway_factory, {"ws": [ws_server.address]},
                    {"match": {"path": "/"}, "upstream": "ws", "websocket": True})
    ws = H2WebSocket(gw.port, "/echo")
    try:
        assert ws.settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL) == 1
        assert ws.status == 200, ws.headers  # RFC 8441: 2xx, not 101
        assert "sec-websocket-accept" not in ws.headers and "upgrade" not in ws.headers
        sent = [b"hello", b"over http/2", b"x" * 1000]
        for i, msg in enumerate(sent):
            ws.send(msg)
            assert ws.frames(i + 1)[i] == (1, msg)  # echoed, in order
        ws.send(struct.pack("!H", 1000), opcode=8)  # close
        frames = ws.frames(len(sent) + 1)
        assert frames[-1] == (8, struct.pack("!H", 1000))
        ws.wait_end()  # the upstream closed: END_STREAM, not a reset
        assert ws.reset is None
    finally:
        ws.close()
    line = wait_for(lambda: next((json.loads(l) for l in gw.stdout().splitlines()
                                  if l.startswith("{") and '"protocol":"websocket"' in l), None))
    assert line["status"] == 101 and line["path"] == "/echo"
    assert line["bytes_in"] > 0 and line["bytes_out"] > 0


def test_the_upstream_sees_a_real_upgrade_with_forwarding_headers(gateway_factory, ws_server):
    gw = h2_gateway(gateway_factory, {"ws": [ws_server.address]},
                    {"match": {"path": "/"}, "upstream": "ws", "websocket": True})
    ws = H2WebSocket(gw.port, "/hello", headers=[("x-client", "h2")])
    try:
        assert ws.status == 200
        op, payload = ws.frames(1)[0]
        hello = json.loads(payload)
    finally:
        ws.close()
    h = hello["headers"]
    assert hello["path"] == "/hello"
    assert h["upgrade"].lower() == "websocket" and "upgrade" in h["connection"].lower()
    assert len(h["sec-websocket-key"]) == 24 and h["sec-websocket-version"] == "13"
    assert h["x-client"] == "h2" and h["x-forwarded-for"] == "127.0.0.1" and "x-request-id" in h


def test_a_route_that_does_not_upgrade_does_not_open_a_tunnel(gateway_factory, backend):
    # An ordinary HTTP backend answers the GET with 200: that is no WebSocket, so the client
    # must not get a 2xx (it would take the body for WebSocket frames).
    gw = h2_gateway(gateway_factory, {"app": [backend.address]},
                    {"match": {"path": "/"}, "upstream": "app"})
    ws = H2WebSocket(gw.port, "/plain")
    try:
        assert ws.status == 502, (ws.status, ws.headers)
    finally:
        ws.close()


def test_websocket_bridge_over_http2_turns_messages_into_requests(gateway_factory, backend):
    gw = h2_gateway(gateway_factory, {"app": [backend.address]},
                    {"match": {"path": "/rpc"}, "upstream": "app",
                     "websocket_bridge": {"method": "POST"}})
    ws = H2WebSocket(gw.port, "/rpc/orders")
    try:
        assert ws.status == 200, ws.headers
        ws.send(b'{"n": 1}')
        ws.send(b'{"n": 2}')
        frames = ws.frames(2)
        assert len(frames) >= 2
        answers = [json.loads(p) for _, p in frames[:2]]
        ws.send(struct.pack("!H", 1000), opcode=8)
        ws.frames(3)
    finally:
        ws.close()
    # the default backend answers with the method and target it got, one request per message
    assert [a["method"] for a in answers] == ["POST", "POST"]
    assert all(a["target"] == "/rpc/orders" for a in answers)
    bodies = [r.body for r in backend.requests if r.target == "/rpc/orders"]
    assert bodies == [b'{"n": 1}', b'{"n": 2}']
