"""WebSocket passthrough (route `websocket: true`): the upgrade goes to a WebSocket upstream (the
`websockets` library's server), frames are relayed both ways with backpressure, closes travel in
both directions, an idle tunnel is closed, and one access-log line describes the whole tunnel."""

import asyncio
import json
import threading

import pytest
import websockets

from conftest import HOST, free_port, proxy_config, wait_for


class WsServer:
    """An asyncio WebSocket server in its own thread. Paths:
    /echo     echoes every message
    /hello    sends a JSON message describing the handshake it saw, then echoes
    /close    closes at once with code 4001, reason "bye"
    /slow     echoes, reading one message every 50 ms (a slow consumer)
    """

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.closes: list[tuple[int, str]] = []  # (code, reason) of each closed connection
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self):
        self.server = await websockets.serve(self._handler, HOST, 0, max_size=None)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handler(self, ws, path=None):
        path = ws.path
        try:
            if path == "/close":
                await ws.close(4001, "bye")
                return
            if path == "/hello":
                await ws.send(json.dumps({"path": path, "headers": {k.lower(): v for k, v in ws.request_headers.raw_items()}}))
            async for message in ws:
                if path == "/slow":
                    await asyncio.sleep(0.05)
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closes.append((ws.close_code, ws.close_reason))

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def stop(self):
        async def shutdown():
            self.server.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def ws_server():
    s = WsServer()
    yield s
    s.stop()


def ws_gateway(gateway_factory, ws_server, **route):
    port = free_port()
    r = {"match": {"path": "/"}, "upstream": "ws", "websocket": True} | route
    cfg = {"listen": f"{HOST}:{port}", "workers": 1, "shutdown_timeout": "2s",
           "log": {"access": "stdout", "error": "stderr"}} | proxy_config({"ws": [ws_server.address]}, [r])
    return gateway_factory(cfg)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_text_and_binary_messages_are_echoed_through_the_proxy_in_order(gateway_factory, ws_server):
    gw = ws_gateway(gateway_factory, ws_server)

    async def go():
        async with websockets.connect(f"ws://{HOST}:{gw.port}/echo") as ws:
            for i in range(200):
                await ws.send(f"message {i}")
            assert [await ws.recv() for _ in range(200)] == [f"message {i}" for i in range(200)]
            await ws.send(b"\x00\x01\xff" * 100)
            assert await ws.recv() == b"\x00\x01\xff" * 100
    run(go())


def test_the_upstream_sees_the_handshake_with_forwarding_headers(gateway_factory, ws_server):
    gw = ws_gateway(gateway_factory, ws_server)

    async def go():
        async with websockets.connect(f"ws://{HOST}:{gw.port}/hello", subprotocols=["chat"],
                                      extra_headers={"x-client": "yes"}) as ws:
            hello = json.loads(await ws.recv())
            # the upstream (no subprotocols of its own) chose none; its 101 is what the client got
            assert ws.subprotocol is None
            return hello
    hello = run(go())
    h = hello["headers"]
    assert hello["path"] == "/hello"
    assert h["upgrade"].lower() == "websocket" and "upgrade" in h["connection"].lower()
    assert "sec-websocket-key" in h and h["x-client"] == "yes"
    assert h["sec-websocket-protocol"] == "chat"  # the client's offer reached the upstream
    assert h["x-forwarded-for"] == "127.0.0.1" and "x-request-id" in h and "traceparent" in h


def test_large_messages_both_ways_with_a_slow_upstream_consumer(gateway_factory, ws_server):
    """8 x 1 MiB through a consumer that reads one message per 50 ms: backpressure, no loss."""
    gw = ws_gateway(gateway_factory, ws_server)

    async def go():
        async with websockets.connect(f"ws://{HOST}:{gw.port}/slow", max_size=None) as ws:
            blobs = [bytes([i]) * (1 << 20) for i in range(8)]
            for b in blobs:
                await ws.send(b)
            for b in blobs:
                assert await ws.recv() == b
    run(go())


def test_client_close_reaches_the_upstream_with_its_code(gateway_factory, ws_server):
    gw = ws_gateway(gateway_factory, ws_server)

    async def go():
        ws = await websockets.connect(f"ws://{HOST}:{gw.port}/echo")
        await ws.send("x")
        assert await ws.recv() == "x"
        await ws.close(4002, "client done")
        return ws.close_code
    assert run(go()) == 4002  # the upstream's close frame answered ours through the proxy
    wait_for(lambda: (4002, "client done") in ws_server.closes, 5, what="the upstream to see the close")


def test_upstream_close_reaches_the_client_with_its_code(gateway_factory, ws_server):
    gw = ws_gateway(gateway_factory, ws_server)

    async def go():
        async with websockets.connect(f"ws://{HOST}:{gw.port}/close") as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason
    assert run(go()) == (4001, "bye")


def test_idle_tunnel_is_closed_after_the_route_timeout(gateway_factory, ws_server):
    gw = ws_gateway(gateway_factory, ws_server, timeout="700ms")

    async def go():
        async with websockets.connect(f"ws://{HOST}:{gw.port}/echo", ping_interval=None) as ws:
            await ws.send("still here")
            assert await ws.recv() == "still here"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
    run(go())


def test_without_websocket_on_the_route_the_upgrade_is_not_passed_on(gateway_factory, ws_server):
    gw = ws_gateway(gateway_factory, ws_server, websocket=False)

    async def go():
        with pytest.raises(websockets.InvalidStatusCode) as e:
            async with websockets.connect(f"ws://{HOST}:{gw.port}/echo"):
                pass
        return e.value.status_code
    # The upstream saw a plain GET without Upgrade and answered it with an error.
    assert run(go()) in (400, 426)


def test_upstream_refusing_the_upgrade_is_passed_to_the_client(gateway_factory, backend):
    """A plain HTTP upstream answers the upgrade with 403: the client gets that answer."""
    from conftest import Reply
    backend.handler = lambda req: Reply(403, [("content-type", "text/plain")], b"no websockets here")
    port = free_port()
    gw = gateway_factory({"listen": f"{HOST}:{port}", "workers": 1, "log": {"access": "stdout", "error": "stderr"}}
                         | proxy_config({"ws": [backend]}, [{"match": {"path": "/"}, "upstream": "ws", "websocket": True}]))

    async def go():
        with pytest.raises(websockets.InvalidStatusCode) as e:
            async with websockets.connect(f"ws://{HOST}:{gw.port}/echo"):
                pass
        return e.value.status_code
    assert run(go()) == 403
    req = backend.wait_requests(1)[0]
    assert req.header("upgrade") == "websocket" and "upgrade" in req.header("connection").lower()


def test_one_access_log_line_describes_the_tunnel(gateway_factory, ws_server):
    gw = ws_gateway(gateway_factory, ws_server)

    async def go():
        async with websockets.connect(f"ws://{HOST}:{gw.port}/echo", compression=None) as ws:
            await ws.send("a" * 1000)
            assert await ws.recv() == "a" * 1000
    run(go())
    entry = gw.wait_access_log(1)[0]
    assert entry["status"] == 101 and entry["protocol"] == "websocket" and entry["path"] == "/echo"
    assert entry["bytes_in"] > 1000 and entry["bytes_out"] > 1000, entry
    assert entry["upstream"] == "ws" and entry["target"] == ws_server.address


def test_plain_requests_on_a_websocket_route_are_proxied_normally(gateway_factory, backend, http):
    port = free_port()
    gw = gateway_factory({"listen": f"{HOST}:{port}", "workers": 1, "log": {"access": "stdout", "error": "stderr"}}
                         | proxy_config({"ws": [backend]}, [{"match": {"path": "/"}, "upstream": "ws", "websocket": True}]))
    for _ in range(3):
        assert http.get(gw.url("/plain")).status_code == 200
    reqs = backend.wait_requests(3)
    assert all(r.header("upgrade") is None for r in reqs)
