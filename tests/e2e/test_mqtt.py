"""The MQTT -> HTTP bridge (SPEC.md `mqtt:`, docs/configuration.md#mqtt): MQTT 3.1.1 and 5.0
clients (mosquitto_pub, paho-mqtt, and a raw-socket client that sends exact bytes) publish
through a `protocol: mqtt` listener; a recording backend shows what each PUBLISH became.

What is proven: topic filters with {n} substitution, the headers sent upstream, QoS 1 PUBACK only
after a 2xx (and none when the upstream fails: the client's resend lands once it recovers),
CONNECT credentials, refusals (SUBSCRIBE, QoS 2, unrouted topics, malformed packets) with their
reason codes, keep alive, will messages, TLS, draining, the access log and the metrics."""

from __future__ import annotations

import datetime
import ipaddress
import json
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest
import requests

from conftest import HOST, REPO, SLUICE_BIN, Reply, free_port

# --------------------------------------------------------------------------------------------
# config


def mqtt_config(routes: list, upstreams: dict, mqtt_extra: dict | None = None,
                listener_extra: dict | None = None, **extra) -> tuple[dict, int]:
    """A gateway with one mqtt listener (`iot`) on a fresh port; returns (config, port)."""
    port = free_port()
    listener = {"name": "iot", "listen": f"{HOST}:{port}", "protocol": "mqtt"}
    listener.update(listener_extra or {})
    ups = {name: (spec if isinstance(spec, dict) else [b.address if hasattr(b, "address") else b
                                                       for b in spec])
           for name, spec in upstreams.items()}
    cfg = {
        "workers": 1,
        "shutdown_timeout": "5s",
        "log": {"access": "stdout", "error": "stderr", "level": "info"},
        "listeners": [listener],
        "upstreams": ups,
        "mqtt": {"routes": routes, **(mqtt_extra or {})},
    }
    cfg.update(extra)
    return cfg, port


TELEMETRY = {"topic": "devices/+/telemetry", "upstream": "telemetry", "path": "/ingest/{1}"}


def start(gateway_factory, backend, routes=None, **kw):
    cfg, port = mqtt_config(routes or [TELEMETRY], {"telemetry": [backend]}, **kw)
    gw = gateway_factory(cfg, port)
    return gw, port


# --------------------------------------------------------------------------------------------
# a raw MQTT client: exact packets out, packets back as (type, flags, body)

V311, V5 = 4, 5


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s16(data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode()
    return struct.pack("!H", len(data)) + data


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def props(*items: bytes) -> bytes:
    block = b"".join(items)
    return varint(len(block)) + block


def connect_packet(client_id: str = "raw-1", version: int = V311, keep_alive: int = 60,
                   clean: bool = True, username: str | None = None, password: str | None = None,
                   will: tuple[str, bytes] | None = None, will_qos: int = 0,
                   properties: bytes = b"") -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | \
            (0x40 if password is not None else 0)
    if will:
        flags |= 0x04 | (will_qos << 3)
    body = s16("MQTT") + bytes([version, flags]) + struct.pack("!H", keep_alive)
    if version == V5:
        body += props(properties)
    body += s16(client_id)
    if will:
        if version == V5:
            body += props()
        body += s16(will[0]) + s16(will[1])
    if username is not None:
        body += s16(username)
    if password is not None:
        body += s16(password)
    return packet(0x10, body)


def publish_packet(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0,
                   version: int = V311, dup: bool = False, retain: bool = False,
                   properties: bytes = b"") -> bytes:
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = s16(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    if version == V5:
        body += props(properties)
    return packet(first, body + payload)


def subscribe_packet(packet_id: int, filters: list[str], version: int = V311) -> bytes:
    body = struct.pack("!H", packet_id) + (props() if version == V5 else b"")
    for f in filters:
        body += s16(f) + b"\x01"
    return packet(0x82, body)


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


class MqttRaw:
    def __init__(self, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.sock.settimeout(timeout)
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read(self, timeout: float = 5.0) -> tuple[int, int, bytes]:
        """The next packet as (type, flags, body); ConnectionError when the gateway closed."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(self.buf) and i <= 4:
                    n += (self.buf[i] & 0x7F) * mult
                    mult *= 128
                    if not self.buf[i] & 0x80:
                        break
                    i += 1
                if i < len(self.buf) and len(self.buf) >= i + 1 + n:
                    first = self.buf[0]
                    body = bytes(self.buf[i + 1:i + 1 + n])
                    del self.buf[:i + 1 + n]
                    return first >> 4, first & 0x0F, body
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet from the gateway")
            try:
                if not self._fill(left):
                    raise ConnectionError("closed by the gateway")
            except ConnectionResetError as e:
                raise ConnectionError("reset by the gateway") from e

    def connack(self, version: int = V311) -> tuple[int, dict]:
        """(return code / reason code, v5 properties)."""
        t, _, body = self.read()
        assert t == 2, f"expected CONNACK, got type {t}"
        return body[1], parse_props(body[2:])[0] if version == V5 else {}

    def connect(self, version: int = V311, **kw) -> dict:
        self.send(connect_packet(version=version, **kw))
        code, properties = self.connack(version)
        assert code == 0, f"CONNACK {code:#x}"
        return properties

    def puback(self, version: int = V311) -> tuple[int, int]:
        """(packet id, reason code) of the next packet, which must be a PUBACK."""
        t, _, body = self.read()
        return puback_of(t, body, version)

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the gateway closes the connection within `timeout` (packets before the close
        are skipped)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.read(max(0.01, deadline - time.monotonic()))
        except ConnectionError:
            return True
        except TimeoutError:
            return False

    def silent(self, seconds: float) -> bool:
        """True when nothing arrives for `seconds` (a bounded wait for something that must not
        happen)."""
        try:
            self.read(seconds)
            return False
        except TimeoutError:
            return True


def parse_props(data: bytes) -> tuple[dict, bytes]:
    """v5 properties at the start of `data`: ({id: value}, the bytes after them). Only the
    identifiers this gateway sends are decoded."""
    n, mult, i = 0, 1, 0
    while True:
        n += (data[i] & 0x7F) * mult
        mult *= 128
        i += 1
        if not data[i - 1] & 0x80:
            break
    block, rest = data[i:i + n], data[i + n:]
    out, j = {}, 0
    one_byte = {0x01, 0x24, 0x25, 0x28, 0x29, 0x2A}
    two_byte = {0x13, 0x21, 0x22}
    four_byte = {0x11, 0x27}
    strings = {0x12, 0x1F, 0x1A, 0x1C, 0x03, 0x08}
    while j < len(block):
        pid = block[j]
        j += 1
        if pid in one_byte:
            out[pid] = block[j]
            j += 1
        elif pid in two_byte:
            out[pid] = struct.unpack("!H", block[j:j + 2])[0]
            j += 2
        elif pid in four_byte:
            out[pid] = struct.unpack("!I", block[j:j + 4])[0]
            j += 4
        elif pid in strings:
            ln = struct.unpack("!H", block[j:j + 2])[0]
            out[pid] = block[j + 2:j + 2 + ln].decode()
            j += 2 + ln
        else:
            raise AssertionError(f"unexpected property {pid:#x}")
    return out, rest


def puback_of(t: int, body: bytes, version: int) -> tuple[int, int]:
    """(packet id, reason code) of a PUBACK."""
    assert t == 4, f"expected PUBACK, got type {t}"
    pid = struct.unpack("!H", body[:2])[0]
    return pid, (body[2] if version == V5 and len(body) > 2 else 0)


def disconnect_reason(c: MqttRaw) -> int:
    t, _, body = c.read()
    assert t == 14, f"expected DISCONNECT, got type {t}"
    return body[0] if body else 0


# --------------------------------------------------------------------------------------------
# paho helpers


def paho_client(port: int, client_id: str, protocol: str, **connect_kw):
    import paho.mqtt.client as mqtt
    proto = mqtt.MQTTv5 if protocol == "v5" else mqtt.MQTTv311
    c = mqtt.Client(client_id=client_id, protocol=proto)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(HOST, port, keepalive=30, **connect_kw)
    c.loop_start()
    assert connected.wait(5), "paho did not connect"
    return c


# --------------------------------------------------------------------------------------------
# forwarding


def test_mosquitto_pub_qos0_and_qos1_reach_the_backend_with_mqtt_headers(gateway_factory, backend):
    gw, port = start(gateway_factory, backend)
    for qos, device in [(0, "d-0"), (1, "d-1")]:
        out = subprocess.run(["mosquitto_pub", "-h", HOST, "-p", str(port), "-i", f"sensor-{qos}",
                              "-q", str(qos), "-t", f"devices/{device}/telemetry",
                              "-m", f'{{"t":{qos}}}'],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
    reqs = backend.wait_requests(2)
    for qos, req in enumerate(sorted(reqs, key=lambda r: r.header("x-mqtt-qos"))):
        assert req.method == "POST"
        assert req.path == f"/ingest/d-{qos}"
        assert req.body == f'{{"t":{qos}}}'.encode()
        assert req.header("x-mqtt-topic") == f"devices/d-{qos}/telemetry"
        assert req.header("x-mqtt-client-id") == f"sensor-{qos}"
        assert req.header("x-mqtt-qos") == str(qos)
        assert req.header("x-mqtt-retain") == "0"
        assert req.header("content-type") == "application/octet-stream"
        assert req.header("x-forwarded-for") == "127.0.0.1"
        assert req.header("x-request-id")
        assert req.header("traceparent")


@pytest.mark.parametrize("protocol", ["v311", "v5"])
def test_paho_publishes_qos0_and_qos1_and_gets_puback(gateway_factory, backend, protocol):
    gw, port = start(gateway_factory, backend)
    c = paho_client(port, f"paho-{protocol}", protocol)
    try:
        kwargs = {}
        if protocol == "v5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties
            p = Properties(PacketTypes.PUBLISH)
            p.ContentType = "application/json"
            p.ResponseTopic = "replies/paho"
            p.CorrelationData = b"\x01\x02"
            p.UserProperty = [("site", "berlin"), ("Rack_ID", "r7"), ("bad name", "x"), ("ctl", "a\nb")]
            kwargs["properties"] = p
        c.publish("devices/p0/telemetry", b'{"n":0}', qos=0, **kwargs)
        info = c.publish("devices/p1/telemetry", b'{"n":1}', qos=1, retain=True, **kwargs)
        info.wait_for_publish(5)
        assert info.is_published()
    finally:
        c.disconnect()
        c.loop_stop()
    reqs = backend.wait_requests(2)
    by_path = {r.path: r for r in reqs}
    assert set(by_path) == {"/ingest/p0", "/ingest/p1"}
    r1 = by_path["/ingest/p1"]
    assert r1.body == b'{"n":1}'
    assert r1.header("x-mqtt-qos") == "1"
    assert r1.header("x-mqtt-retain") == "1"
    assert r1.header("x-mqtt-client-id") == f"paho-{protocol}"
    assert r1.header("x-mqtt-packet-id")
    if protocol == "v5":
        assert r1.header("content-type") == "application/json"
        assert r1.header("x-mqtt-response-topic") == "replies/paho"
        assert r1.header("x-mqtt-correlation-data") == "AQI"  # base64url of 01 02
        # user properties: those that make a header name and value, and only those
        assert r1.header("x-mqtt-user-site") == "berlin" and r1.header("x-mqtt-user-rack_id") == "r7"
        assert [k for k, _ in r1.headers if k.lower().startswith("x-mqtt-user-")] == [
            "x-mqtt-user-site", "x-mqtt-user-rack_id"]
    else:
        assert r1.header("content-type") == "application/octet-stream"


def test_hash_wildcard_and_default_path(gateway_factory, backend):
    routes = [{"topic": "sensors/#", "upstream": "telemetry", "path": "/s/{1}", "method": "PUT"},
              {"topic": "plain/topic", "upstream": "telemetry"}]
    gw, port = start(gateway_factory, backend, routes)
    with MqttRaw(port) as c:
        c.connect()
        c.send(publish_packet("sensors/a/b c", b"1"))
        c.send(publish_packet("plain/topic", b"2", qos=1, packet_id=7))
        assert c.puback() == (7, 0)
    reqs = backend.wait_requests(2)
    assert [(r.method, r.target) for r in reqs] == [("PUT", "/s/a/b%20c"), ("POST", "/plain/topic")]


def test_puback_is_sent_only_after_the_upstream_answered(gateway_factory, backend):
    release = threading.Event()

    def slow(req):
        release.wait(10)
        return Reply(204)
    backend.handler = slow
    gw, port = start(gateway_factory, backend)
    with MqttRaw(port) as c:
        c.connect(version=V5)
        c.send(publish_packet("devices/x/telemetry", b"m", qos=1, packet_id=1, version=V5))
        backend.wait_requests(1)
        c.send(PINGREQ)  # still answered while the message is with the upstream
        assert c.read()[0] == 13
        assert c.silent(0.3), "PUBACK before the upstream answered"
        release.set()
        assert c.puback(V5) == (1, 0)


def test_pubacks_come_in_order(gateway_factory, backend):
    gw, port = start(gateway_factory, backend)
    with MqttRaw(port) as c:
        c.connect()
        c.send(b"".join(publish_packet(f"devices/n{i}/telemetry", str(i).encode(), qos=1,
                                       packet_id=i) for i in range(1, 9)))
        ids = [c.puback(V311)[0] for _ in range(8)]
    assert ids == list(range(1, 9))
    assert [r.body for r in backend.wait_requests(8)] == [str(i).encode() for i in range(1, 9)]


# --------------------------------------------------------------------------------------------
# upstream failures: no PUBACK, the client's resend lands


def test_backend_5xx_means_no_puback_and_paho_resend_lands(gateway_factory, backend):
    answers = [503]

    def flaky(req):
        return Reply(answers.pop(0) if answers else 200)
    backend.handler = flaky
    gw, port = start(gateway_factory, backend)
    c = paho_client(port, "paho-retry", "v311")
    c.reconnect_delay_set(1, 2)
    try:
        info = c.publish("devices/r/telemetry", b"once-more", qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        c.disconnect()
        c.loop_stop()
    first, second = backend.wait_requests(2)
    assert first.body == second.body == b"once-more"
    assert not first.has_header("x-mqtt-dup")
    assert second.header("x-mqtt-dup") == "1"


@pytest.mark.parametrize("version", [V311, V5])
def test_backend_down_then_back_raw_resend_lands(gateway_factory, backend_factory, version):
    port_b = free_port()
    cfg, port = mqtt_config([TELEMETRY], {"telemetry": [f"{HOST}:{port_b}"]})
    gw = gateway_factory(cfg, port)
    msg = publish_packet("devices/late/telemetry", b"hold", qos=1, packet_id=5, version=version)
    with MqttRaw(port) as c:
        c.connect(version=version)
        c.send(msg)
        if version == V5:
            assert disconnect_reason(c) == 0x89  # server busy
        assert c.closed(), "the session must end so that the client resends"
    late = backend_factory("late", port=port_b)
    with MqttRaw(port) as c:
        c.connect(version=version, clean=False)
        c.send(publish_packet("devices/late/telemetry", b"hold", qos=1, packet_id=5,
                              version=version, dup=True))
        assert c.puback(version) == (5, 0)
    (req,) = late.wait_requests(1)
    assert req.body == b"hold" and req.header("x-mqtt-dup") == "1"
    assert "upstream connection refused" in gw.wait_error_log("not acknowledged")["msg"]


def test_upstream_timeout_means_no_puback(gateway_factory, backend):
    backend.handler = lambda req: Reply(hang=True)
    cfg, port = mqtt_config([TELEMETRY], {"telemetry": {"targets": [backend.address],
                                                        "timeouts": {"request": "300ms"}}})
    gw = gateway_factory(cfg, port)
    with MqttRaw(port) as c:
        c.connect(version=V5)
        c.send(publish_packet("devices/slow/telemetry", b"x", qos=1, packet_id=1, version=V5))
        assert disconnect_reason(c) == 0x89
        assert c.closed()
    (line,) = [e for e in gw.wait_access_log(1) if e["protocol"] == "mqtt"]
    assert line["status"] == 504 and line["error"] == "upstream timeout"


def test_qos0_failure_is_dropped_and_the_session_goes_on(gateway_factory, backend):
    answers = [500]
    backend.handler = lambda req: Reply(answers.pop(0) if answers else 200)
    gw, port = start(gateway_factory, backend)
    with MqttRaw(port) as c:
        c.connect()
        c.send(publish_packet("devices/a/telemetry", b"lost"))
        c.send(publish_packet("devices/a/telemetry", b"kept", qos=1, packet_id=2))
        assert c.puback(V311) == (2, 0)
    assert [r.body for r in backend.wait_requests(2)] == [b"lost", b"kept"]


@pytest.mark.parametrize("version,reason", [(V311, 0), (V5, 0x83)])
def test_upstream_4xx_is_a_final_refusal(gateway_factory, backend, version, reason):
    backend.handler = lambda req: Reply(422)
    gw, port = start(gateway_factory, backend)
    with MqttRaw(port) as c:
        c.connect(version=version)
        c.send(publish_packet("devices/a/telemetry", b"bad", qos=1, packet_id=3, version=version))
        assert c.puback(version) == (3, reason)
    assert len(backend.wait_requests(1)) == 1


# --------------------------------------------------------------------------------------------
# CONNECT and credentials


def _crypt_hash(password: str) -> str:
    import ctypes
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return lib.crypt(password.encode(), lib.crypt_gensalt(b"$2b$", 4, None, 0)).decode()


@pytest.fixture
def auth_gateway(gateway_factory, backend):
    extra = {
        "consumers": [{"name": "dev1", "password": _crypt_hash("s3cret")},
                      {"name": "dev2", "api_keys": ["key:k-123"]}],
        "auth": {"devices": {"basic": {}}, "device-keys": {"api_key": {"header": "x-api-key"}}},
    }
    gw_basic, port_basic = start(gateway_factory, backend, mqtt_extra={"auth": "devices"}, **extra)
    gw_keys, port_keys = start(gateway_factory, backend, mqtt_extra={"auth": "device-keys"},
                               **extra)
    return gw_basic, port_basic, port_keys


@pytest.mark.parametrize("version", [V311, V5])
def test_connect_credentials_are_checked(auth_gateway, backend, version):
    gw, port, port_keys = auth_gateway
    # wrong password: 3.1.1 0x04, 5.0 0x86; none at all: 0x05 / 0x87
    for kw, v3, v5 in [({"username": "dev1", "password": "nope"}, 0x04, 0x86),
                       ({"username": "ghost", "password": "s3cret"}, 0x04, 0x86),
                       ({}, 0x05, 0x87)]:
        with MqttRaw(port) as c:
            c.send(connect_packet(version=version, **kw))
            assert c.connack(version)[0] == (v5 if version == V5 else v3), kw
            assert c.closed()
    for _ in range(2):  # the second CONNECT is answered from the verified-password cache
        with MqttRaw(port) as c:
            c.connect(version=version, client_id="box-1", username="dev1", password="s3cret")
            c.send(publish_packet("devices/b/telemetry", b"x", qos=1, packet_id=1,
                                  version=version))
            assert c.puback(version) == (1, 0)
    with MqttRaw(port_keys) as c:
        c.connect(version=version, client_id="box-2", username="anything", password="k-123")
        c.send(publish_packet("devices/k/telemetry", b"y", qos=1, packet_id=1, version=version))
        assert c.puback(version) == (1, 0)
    reqs = backend.wait_requests(3)
    assert [r.header("x-mqtt-consumer") for r in reqs] == ["dev1", "dev1", "dev2"]
    log = gw.wait_access_log(2)
    assert log[-1]["consumer"] == "dev1"


def test_mosquitto_pub_with_a_wrong_password_is_refused(auth_gateway, backend):
    gw, port, _ = auth_gateway
    out = subprocess.run(["mosquitto_pub", "-h", HOST, "-p", str(port), "-u", "dev1", "-P", "bad",
                          "-t", "devices/z/telemetry", "-m", "x"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode != 0
    assert "refused" in (out.stderr + out.stdout).lower() or "not authori" in out.stderr.lower()
    assert not backend.requests


def test_connect_must_come_first_and_in_time(gateway_factory, backend):
    gw, port = start(gateway_factory, backend, listener_extra={"limits": {"header_timeout": "300ms"}})
    with MqttRaw(port) as c:
        c.send(PINGREQ)
        assert c.closed()
    with MqttRaw(port) as c:
        started = time.monotonic()
        assert c.closed(5)
        assert time.monotonic() - started < 3


def test_mqtt_3_1_is_answered_unsupported_protocol(gateway_factory, backend):
    gw, port = start(gateway_factory, backend)
    with MqttRaw(port) as c:
        c.send(packet(0x10, s16("MQIsdp") + bytes([3, 0x02]) + struct.pack("!H", 30) + s16("old")))
        assert c.connack()[0] == 0x01
        assert c.closed()


def test_v5_connack_states_what_the_gateway_supports(gateway_factory, backend):
    gw, port = start(gateway_factory, backend, listener_extra={"limits": {"idle_timeout": "40s"}})
    with MqttRaw(port) as c:
        p = c.connect(version=V5, client_id="", keep_alive=0,
                      properties=b"\x11" + struct.pack("!I", 3600))
    assert p[0x21] == 16            # receive maximum
    assert p[0x24] == 1             # maximum QoS
    assert p[0x28] == 0 and p[0x29] == 0 and p[0x2A] == 0  # no wildcard/id/shared subscriptions
    assert p[0x13] == 40            # server keep alive = idle_timeout for keep alive 0
    assert p[0x11] == 0             # session expiry: no session outlives its connection
    assert p[0x12].startswith("sluice-")  # assigned client id
    assert p[0x27] > 1024 * 1024    # maximum packet size


# --------------------------------------------------------------------------------------------
# refusals and protocol errors


@pytest.mark.parametrize("version,code", [(V311, 0x80), (V5, 0x87)])
def test_subscribe_is_refused_and_pingreq_answered(gateway_factory, backend, version, code):
    gw, port = start(gateway_factory, backend)
    with MqttRaw(port) as c:
        c.connect(version=version)
        c.send(subscribe_packet(9, ["devices/#", "x"], version))
        t, _, body = c.read()
        assert t == 9 and struct.unpack("!H", body[:2])[0] == 9
        reasons = parse_props(body[2:])[1] if version == V5 else body[2:]
        assert list(reasons) == [code, code]
        c.send(PINGREQ)
        assert c.read()[:2] == (13, 0)
        # the session goes on: a PUBLISH after the refusal is forwarded
        c.send(publish_packet("devices/s/telemetry", b"after", qos=1, packet_id=2, version=version))
        assert c.puback(version) == (2, 0)


@pytest.mark.parametrize("version,reason", [(V311, 0), (V5, 0x10)])
def test_unrouted_topic_is_acknowledged_dropped_and_counted(gateway_factory, backend, version,
                                                            reason):
    admin = free_port()
    gw, port = start(gateway_factory, backend, admin={"listen": f"{HOST}:{admin}"})
    with MqttRaw(port) as c:
        c.connect(version=version)
        c.send(publish_packet("elsewhere/x", b"?", qos=1, packet_id=4, version=version))
        assert c.puback(version) == (4, reason)
        c.send(publish_packet("devices/ok/telemetry", b"!", qos=1, packet_id=5, version=version))
        assert c.puback(version) == (5, 0)
    assert [r.path for r in backend.wait_requests(1)] == ["/ingest/ok"]
    metrics = requests.get(f"http://{HOST}:{admin}/metrics", timeout=5).text
    assert 'sluice_mqtt_messages_total{listener="iot",result="unrouted"} 1' in metrics
    assert 'sluice_mqtt_messages_total{listener="iot",result="forwarded"} 1' in metrics
    gw.wait_error_log("matches no route")


def test_topic_that_would_climb_the_path_is_refused(gateway_factory, backend):
    gw, port = start(gateway_factory, backend)
    with MqttRaw(port) as c:
        c.connect(version=V5)
        c.send(publish_packet("devices/../telemetry", b"x", qos=1, packet_id=1, version=V5))
        assert c.puback(V5) == (1, 0x90)
        # payload format indicator 1 (UTF-8) with bytes that are not UTF-8
        c.send(publish_packet("devices/u/telemetry", b"\xff\xfe", qos=1, packet_id=2, version=V5,
                              properties=b"\x01\x01"))
        assert c.puback(V5) == (2, 0x99)
    assert not backend.requests


@pytest.mark.parametrize("version", [V311, V5])
def test_qos2_is_refused(gateway_factory, backend, version):
    gw, port = start(gateway_factory, backend)
    with MqttRaw(port) as c:
        c.connect(version=version)
        c.send(publish_packet("devices/q/telemetry", b"2", qos=2, packet_id=1, version=version))
        if version == V5:
            assert disconnect_reason(c) == 0x9B  # QoS not supported
        assert c.closed()
    assert not backend.requests


@pytest.mark.parametrize("version", [V311, V5])
def test_malformed_packet_closes_the_connection(gateway_factory, backend, version):
    gw, port = start(gateway_factory, backend)
    with MqttRaw(port) as c:
        c.connect(version=version)
        c.send(b"\xc0\x01\x00")  # PINGREQ with a byte it cannot have
        if version == V5:
            assert disconnect_reason(c) == 0x81  # malformed packet
        assert c.closed()
    with MqttRaw(port) as c:  # PUBLISH with QoS 3
        c.connect(version=version)
        c.send(b"\x36\x05\x00\x01a\x00\x01")
        if version == V5:
            assert disconnect_reason(c) >= 0x80
        assert c.closed()


def test_receive_maximum_is_enforced_for_v5(gateway_factory, backend):
    release = threading.Event()
    backend.handler = lambda req: (release.wait(10), Reply(200))[1]
    gw, port = start(gateway_factory, backend)
    try:
        with MqttRaw(port) as c:
            c.connect(version=V5)
            c.send(b"".join(publish_packet("devices/f/telemetry", b"x", qos=1, packet_id=i,
                                           version=V5) for i in range(1, 18)))
            backend.wait_requests(1)
            release.set()
            # the 17th unacknowledged QoS 1 message breaks the receive maximum of 16
            t, _, body = c.read()
            while t == 4:
                t, _, body = c.read()
            assert (t, body[0]) == (14, 0x93)
    finally:
        release.set()


# --------------------------------------------------------------------------------------------
# keep alive, DISCONNECT, will messages


WILL_ROUTES = [TELEMETRY, {"topic": "status/+", "upstream": "telemetry", "path": "/status/{1}"}]


@pytest.mark.parametrize("version", [V311, V5])
def test_keep_alive_expiry_closes_and_publishes_the_will(gateway_factory, backend, version):
    gw, port = start(gateway_factory, backend, WILL_ROUTES)
    with MqttRaw(port) as c:
        c.connect(version=version, keep_alive=1, client_id="sleepy",
                  will=("status/sleepy", b"offline"))
        started = time.monotonic()
        if version == V5:
            assert disconnect_reason(c) == 0x8D  # keep alive timeout
        assert c.closed(5)
        waited = time.monotonic() - started
    assert 1.4 <= waited < 3.5, waited  # 1.5 x keep alive
    (req,) = backend.wait_requests(1)
    assert (req.path, req.body) == ("/status/sleepy", b"offline")
    assert req.header("x-mqtt-will") == "1" and req.header("x-mqtt-client-id") == "sleepy"


def test_pingreq_keeps_the_session_alive(gateway_factory, backend):
    gw, port = start(gateway_factory, backend)
    with MqttRaw(port) as c:
        c.connect(keep_alive=1)
        for _ in range(4):  # 2 s in all: longer than 1.5 x keep alive
            time.sleep(0.5)
            c.send(PINGREQ)
            assert c.read()[0] == 13


@pytest.mark.parametrize("version", [V311, V5])
def test_will_on_lost_connection_not_on_clean_disconnect(gateway_factory, backend, version):
    gw, port = start(gateway_factory, backend, WILL_ROUTES)
    with MqttRaw(port) as c:
        c.connect(version=version, client_id="tidy", will=("status/tidy", b"gone"))
        c.send(DISCONNECT)
        # the gateway closes only after the session's messages (a will included) went upstream
        assert c.closed()
    assert not backend.requests
    with MqttRaw(port) as c:
        c.connect(version=version, client_id="crash", will=("status/crash", b"gone"))
    (req,) = backend.wait_requests(1)
    assert (req.path, req.body) == ("/status/crash", b"gone")


def test_v5_disconnect_with_will_publishes_it(gateway_factory, backend):
    gw, port = start(gateway_factory, backend, WILL_ROUTES)
    with MqttRaw(port) as c:
        c.connect(version=V5, client_id="asks", will=("status/asks", b"bye"))
        c.send(b"\xe0\x01\x04")  # DISCONNECT, reason 0x04: disconnect with will message
        assert c.closed()
    assert [r.path for r in backend.wait_requests(1)] == ["/status/asks"]


# --------------------------------------------------------------------------------------------
# TLS, draining, observability


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mqtt.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "mqtt.pem", tmp_path / "mqtt.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_mqtt_over_tls(gateway_factory, backend, tmp_path):
    cert, key = _self_signed(tmp_path)
    gw, port = start(gateway_factory, backend,
                     listener_extra={"tls": {"certificates": [{"cert": str(cert), "key": str(key)}]}})
    import paho.mqtt.client as mqtt
    c = mqtt.Client(client_id="tls-1", protocol=mqtt.MQTTv311)
    c.tls_set_context(ssl.create_default_context(cafile=str(cert)))
    c.connect(HOST, port, keepalive=30)
    c.loop_start()
    try:
        info = c.publish("devices/t/telemetry", b"secret", qos=1)
        info.wait_for_publish(5)
        assert info.is_published()
    finally:
        c.disconnect()
        c.loop_stop()
    (req,) = backend.wait_requests(1)
    assert req.body == b"secret" and req.header("x-forwarded-proto") == "mqtts"
    out = subprocess.run(["mosquitto_pub", "-h", HOST, "-p", str(port), "--cafile", str(cert),
                          "-q", "1", "-t", "devices/t2/telemetry", "-m", "m"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert backend.wait_requests(2)[-1].path == "/ingest/t2"


def test_upstream_over_tls(gateway_factory, backend, tmp_path):
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    backend.tls_context = ctx
    cfg, port = mqtt_config([TELEMETRY], {"telemetry": {"targets": [backend.address],
                                                        "tls": {"ca": str(cert)}}})
    gateway_factory(cfg, port)
    with MqttRaw(port) as c:
        c.connect()
        for i in (1, 2):  # the second message reuses the pooled TLS connection
            c.send(publish_packet("devices/s/telemetry", b"tls", qos=1, packet_id=i))
            assert c.puback() == (i, 0)
    reqs = backend.wait_requests(2)
    assert reqs[0].conn_id == reqs[1].conn_id and backend.connections == 1


def test_payload_size_limit(gateway_factory, backend):
    gw, port = start(gateway_factory, backend,
                     listener_extra={"limits": {"max_body": "64KiB", "max_header_bytes": "4KiB"}})
    big = bytes(range(256)) * 240  # 60 KiB
    with MqttRaw(port) as c:
        c.connect(version=V5)
        c.send(publish_packet("devices/big/telemetry", big, qos=1, packet_id=1, version=V5))
        assert c.puback(V5) == (1, 0)
        c.send(publish_packet("devices/big/telemetry", big * 2, qos=1, packet_id=2, version=V5))
        assert disconnect_reason(c) == 0x95  # packet too large
        assert c.closed()
    (req,) = backend.wait_requests(1)
    assert req.body == big


def test_reload_applies_to_the_next_message(gateway_factory, backend):
    cfg, port = mqtt_config([TELEMETRY], {"telemetry": [backend]})
    gw = gateway_factory(cfg, port)
    with MqttRaw(port) as c:
        c.connect()
        c.send(publish_packet("devices/r/telemetry", b"1", qos=1, packet_id=1))
        assert c.puback() == (1, 0)
        cfg["mqtt"]["routes"] = [dict(TELEMETRY, path="/v2/{1}")]
        assert "reloaded" in gw.reload(cfg)["msg"]
        c.send(publish_packet("devices/r/telemetry", b"2", qos=1, packet_id=2))
        assert c.puback() == (2, 0)
    assert [r.path for r in backend.wait_requests(2)] == ["/ingest/r", "/v2/r"]


def test_drain_sends_v5_disconnect_and_exits_cleanly(gateway_factory, backend):
    gw, port = start(gateway_factory, backend)
    with MqttRaw(port) as c:
        c.connect(version=V5)
        gw.signal(signal.SIGTERM)
        assert disconnect_reason(c) == 0x8B  # server shutting down
        assert c.closed()
    assert gw.wait_exit(10) == 0


def test_access_log_line_and_metrics_per_message(gateway_factory, backend):
    admin = free_port()
    answers = [200, 502]
    backend.handler = lambda req: Reply(answers.pop(0) if answers else 200)
    gw, port = start(gateway_factory, backend, admin={"listen": f"{HOST}:{admin}"})
    with MqttRaw(port) as c:
        c.connect(client_id="logged-1")
        c.send(publish_packet("devices/L/telemetry", b"12345", qos=1, packet_id=1))
        assert c.puback(V311) == (1, 0)
        c.send(publish_packet("devices/L/telemetry", b"6", qos=1, packet_id=2))
        assert c.closed()  # 502: not acknowledged, the 3.1.1 session ends
    lines = [e for e in gw.wait_access_log(2) if e.get("protocol") == "mqtt"]
    ok, failed = lines[:2]
    assert ok["method"] == "POST" and ok["path"] == "/ingest/L" and ok["status"] == 200
    assert ok["listener"] == "iot" and ok["route"] == "devices/+/telemetry"
    assert ok["upstream"] == "telemetry" and ok["target"] == backend.address
    assert ok["consumer"] == "logged-1" and ok["attempts"] == 1 and ok["error"] is None
    assert ok["request_id"] == backend.requests[0].header("x-request-id")
    assert ok["bytes_in"] == len(publish_packet("devices/L/telemetry", b"12345", 1, 1))
    assert ok["bytes_out"] == 4
    assert failed["status"] == 502 and "502" in failed["error"] and failed["bytes_out"] == 0
    m = requests.get(f"http://{HOST}:{admin}/metrics", timeout=5).text
    assert 'sluice_mqtt_messages_total{listener="iot",result="forwarded"} 1' in m
    assert 'sluice_mqtt_messages_total{listener="iot",result="failed"} 1' in m
    assert 'sluice_upstream_requests_total{upstream="telemetry"' in m


def test_example_config_validates():
    out = subprocess.run([SLUICE_BIN, "validate", "-c", str(REPO / "examples" / "iot-mqtt.yaml")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def test_validate_refuses_path_templates_that_cannot_be_sent(tmp_path):
    cfg, _ = mqtt_config([{"topic": "a/+", "upstream": "t", "path": "/x/../{1}"},
                          {"topic": "b/+", "upstream": "t", "path": "/x y/{1}"}],
                         {"t": [f"{HOST}:9"]})
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(cfg))
    out = subprocess.run([SLUICE_BIN, "validate", "-c", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    assert '"." or ".." segment' in out.stdout + out.stderr
    assert "holds a space" in out.stdout + out.stderr
