"""Route `websocket_bridge`: the gateway terminates the WebSocket; each message becomes one HTTP
request to the route's upstream (method from the config, body = the message, headers naming the
connection), and each response body comes back as one message, in message order, with a bounded
number of messages in flight per connection."""

import asyncio
import json
import os
import threading
import time

import pytest
import websockets

from conftest import HOST, Reply, base_config, free_port, proxy_config


def bridge_gateway(gateway_factory, upstreams, route_extra=None, **extra):
    port = free_port()
    route = {"match": {"path": "/ws"}, "upstream": "app", "websocket_bridge": {"method": "POST"}}
    route |= route_extra or {}
    return gateway_factory(base_config(port, **proxy_config(upstreams, [route])) | extra)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_each_message_is_one_request_and_replies_come_back_in_order(gateway_factory, backend):
    # The first message is answered last: the replies must still come back in message order.
    def handler(req):
        text = req.body.decode()
        return Reply(200, [("content-type", "text/plain")], text.upper().encode(),
                     delay=0.4 if text == "m0" else 0)
    backend.handler = handler
    gw = bridge_gateway(gateway_factory, {"app": [backend]})

    async def go():
        async with websockets.connect(f"ws://{HOST}:{gw.port}/ws/chat?room=1") as ws:
            for i in range(5):
                await ws.send(f"m{i}")
            return [await ws.recv() for _ in range(5)]
    assert run(go()) == ["M0", "M1", "M2", "M3", "M4"]
    reqs = sorted(backend.wait_requests(5), key=lambda r: int(r.header("x-websocket-message")))
    assert [r.body for r in reqs] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert all(r.method == "POST" and r.target == "/ws/chat?room=1" for r in reqs)
    assert len({r.header("x-websocket-connection-id") for r in reqs}) == 1
    assert all(r.header("content-type") == "text/plain; charset=utf-8" for r in reqs)
    assert all(r.header("x-forwarded-for") == "127.0.0.1" and r.header("upgrade") is None for r in reqs)
    entry = gw.wait_access_log(1)[0]
    assert entry["protocol"] == "websocket" and entry["status"] == 101 and entry["attempts"] == 5


def test_binary_messages_stay_binary_and_method_and_rewrite_apply(gateway_factory, backend):
    backend.handler = lambda req: Reply(200, [], bytes(reversed(req.body)))
    gw = bridge_gateway(gateway_factory, {"app": [backend]},
                        {"websocket_bridge": {"method": "PUT"}, "rewrite": {"strip_prefix": True}})

    async def go():
        async with websockets.connect(f"ws://{HOST}:{gw.port}/ws/devices") as ws:
            await ws.send(b"\x01\x02\x03")
            return await ws.recv()
    assert run(go()) == b"\x03\x02\x01"
    req = backend.wait_requests(1)[0]
    assert req.method == "PUT" and req.target == "/devices"
    assert req.header("content-type") == "application/octet-stream"


def test_upstream_down_answers_the_message_with_an_error_and_keeps_the_socket(gateway_factory):
    gw = bridge_gateway(gateway_factory, {"app": ["127.0.0.1:1"]})

    async def go():
        async with websockets.connect(f"ws://{HOST}:{gw.port}/ws") as ws:
            await ws.send("hello")
            first = await ws.recv()
            await ws.send("again")
            return first, await ws.recv()
    first, second = run(go())
    assert '"status":502' in first and "upstream connection refused" in first
    assert '"status":502' in second
    assert "2 of 2 messages got no upstream answer" in gw.wait_access_log(1)[0]["error"]


def test_messages_in_flight_per_connection_are_bounded(gateway_factory, backend):
    active, peak, lock = [0], [0], threading.Lock()

    def handler(req):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return Reply(200, [], req.body)
    backend.handler = handler
    gw = bridge_gateway(gateway_factory, {"app": [backend]},
                        {"websocket_bridge": {"method": "POST", "max_in_flight": 2}})

    async def go():
        async with websockets.connect(f"ws://{HOST}:{gw.port}/ws") as ws:
            for i in range(6):
                await ws.send(str(i))
            return [await ws.recv() for _ in range(6)]
    assert run(go()) == [str(i) for i in range(6)]
    assert peak[0] == 2


def test_the_routes_auth_guards_the_handshake(gateway_factory, backend):
    gw = bridge_gateway(gateway_factory, {"app": [backend]}, {"auth": "keys"},
                        consumers=[{"name": "alice", "api_keys": ["key:k-alice"]}],
                        auth={"keys": {"api_key": {"header": "x-api-key"}}})

    async def refused():
        with pytest.raises(websockets.InvalidStatusCode) as e:
            async with websockets.connect(f"ws://{HOST}:{gw.port}/ws"):
                pass
        return e.value.status_code
    assert run(refused()) == 401

    async def accepted():
        async with websockets.connect(f"ws://{HOST}:{gw.port}/ws", extra_headers={"x-api-key": "k-alice"}) as ws:
            await ws.send("hi")
            return await ws.recv()
    assert json.loads(run(accepted())) == {"backend": "backend", "method": "POST", "target": "/ws", "body_bytes": 2}
    req = backend.wait_requests(1)[0]
    assert req.header("x-consumer") == "alice"


def test_client_close_ends_the_bridge_and_is_logged(gateway_factory, backend):
    backend.handler = lambda req: Reply(200, [], b"ok")
    gw = bridge_gateway(gateway_factory, {"app": [backend]})

    async def go():
        ws = await websockets.connect(f"ws://{HOST}:{gw.port}/ws")
        await ws.send("x")
        assert await ws.recv() == "ok"
        await ws.close(1000)
        return ws.close_code
    assert run(go()) == 1000
    entry = gw.wait_access_log(1)[0]
    assert entry["status"] == 101 and entry["bytes_in"] > 0 and entry["bytes_out"] > 0


def test_bridge_messages_are_counted_per_route(gateway_factory, backend, http):
    from prometheus_client.parser import text_string_to_metric_families
    backend.handler = lambda req: Reply(200, [], b"ok")
    admin = free_port()
    gw = bridge_gateway(gateway_factory, {"app": [backend]}, {"name": "rpc"},
                        admin={"listen": f"{HOST}:{admin}"})

    async def go():
        async with websockets.connect(f"ws://{HOST}:{gw.port}/ws") as ws:
            for i in range(7):
                await ws.send(str(i))
            return [await ws.recv() for _ in range(7)]
    assert run(go()) == ["ok"] * 7
    text = http.get(f"http://{HOST}:{admin}/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("sluice_websocket_messages_total", (("route", "rpc"),))] == 7


# ---- over TLS listeners (wss://) ---------------------------------------------------------------

from test_tls import client_context, pki, tls_gateway  # noqa: E402,F401  (pki is a fixture)


def test_bridge_over_a_tls_listener(gateway_factory, backend, pki):
    backend.handler = lambda req: Reply(200, [], req.body[::-1])
    gw = tls_gateway(gateway_factory, backend, pki,
                     routes=[{"match": {"path": "/ws"}, "upstream": "app", "websocket_bridge": {"method": "POST"}}])

    async def go():
        async with websockets.connect(f"wss://a.test:{gw.port}/ws", ssl=client_context(pki, alpn=None),
                                      host="127.0.0.1", port=gw.port, server_hostname="a.test") as ws:
            out = []
            for i in range(20):
                await ws.send(f"abc{i}")
            for _ in range(20):
                out.append(await ws.recv())
            big = os.urandom(300_000)
            await ws.send(big)
            assert await ws.recv() == big[::-1]
            return out
    assert run(go()) == [f"abc{i}"[::-1] for i in range(20)]
    reqs = backend.wait_requests(21)
    assert all(r.header("x-forwarded-proto") == "https" for r in reqs)


def test_passthrough_over_a_tls_listener(gateway_factory, pki):
    from test_websocket import WsServer
    server = WsServer()
    try:
        port = free_port()
        cfg = proxy_config({"ws": [server.address]},
                           [{"match": {"path": "/"}, "upstream": "ws", "websocket": True}],
                           listeners=[{"name": "https", "listen": f"{HOST}:{port}",
                                       "tls": {"certificates": [{"cert": str(pki.a.cert), "key": str(pki.a.key)}]}}],
                           workers=1, log={"access": "stdout", "error": "stderr"})
        gw = gateway_factory(cfg, port=port)

        async def go():
            async with websockets.connect(f"wss://a.test:{port}/echo", ssl=client_context(pki, alpn=None),
                                          host="127.0.0.1", port=port, server_hostname="a.test",
                                          max_size=None) as ws:
                blobs = [os.urandom(200_000) for _ in range(5)]
                for b in blobs:
                    await ws.send(b)
                for b in blobs:
                    assert await ws.recv() == b
                for i in range(50):
                    await ws.send(str(i))
                    assert await ws.recv() == str(i)
        run(go())
        assert gw.wait_access_log(1)[0]["protocol"] == "websocket"
    finally:
        server.stop()


def test_a_text_message_gets_a_binary_reply_when_the_answer_is_not_utf8(gateway_factory, backend):
    answers = {"utf8": "grüße ✓".encode(), "bytes": b"\xff\xfe\x00\x80"}
    backend.handler = lambda req: Reply(200, [], answers[req.body.decode()])
    gw = bridge_gateway(gateway_factory, {"app": [backend]})

    async def go():
        async with websockets.connect(f"ws://{HOST}:{gw.port}/ws") as ws:
            await ws.send("utf8")
            first = await ws.recv()
            await ws.send("bytes")
            return first, await ws.recv()
    first, second = run(go())
    assert first == "grüße ✓"                 # text stays text
    assert second == b"\xff\xfe\x00\x80"      # not UTF-8: sent as a binary message


def test_client_cannot_assert_what_the_gateway_asserts(gateway_factory, backend):
    """Identity, forwarding and the bridge's own headers come from the gateway, never from the
    client's upgrade request; an API key given in the query is not passed on."""
    backend.handler = lambda req: Reply(200, [], b"ok")
    gw = bridge_gateway(gateway_factory, {"app": [backend]}, {"auth": "keys"},
                        consumers=[{"name": "bob", "api_keys": ["key:k-bob"]}],
                        auth={"keys": {"api_key": {"query": "api_key"}}})
    spoofed = {"x-consumer": "admin", "x-forwarded-proto": "https", "x-forwarded-host": "evil",
               "forwarded": "for=1.2.3.4", "x-websocket-message": "99", "x-websocket-connection-id": "x",
               "via": "1.1 evil", "x-keep": "yes"}

    async def go():
        async with websockets.connect(f"ws://{HOST}:{gw.port}/ws?api_key=k-bob&room=1",
                                      extra_headers=spoofed) as ws:
            await ws.send("hi")
            return await ws.recv()
    assert run(go()) == "ok"
    req = backend.wait_requests(1)[0]
    assert req.header_all("x-consumer") == ["bob"]
    assert req.header_all("x-forwarded-proto") == ["http"]
    assert req.header_all("x-websocket-message") == ["0"]
    assert req.header_all("x-websocket-connection-id") != ["x"]
    for name in ("x-forwarded-host", "forwarded", "via"):
        assert req.header(name) is None, name
    assert req.header("x-keep") == "yes"  # other client headers do pass
    assert req.target == "/ws?room=1"     # the key is not passed on
