"""`sluice demo` (SPEC section 1): the gateway and three built-in backends in one process."""

import json

import pytest

from conftest import free_port, raw_request


@pytest.fixture
def demo(gateway_factory):
    port, mqtt_port = free_port(), free_port()
    gw = gateway_factory(None, port=port, args=["demo", "--port", str(port), "--mqtt-port", str(mqtt_port)])
    gw.mqtt_port = mqtt_port
    return gw


def test_demo_balances_four_requests_over_its_three_named_backends(demo, http):
    names = []
    for _ in range(4):
        r = http.get(demo.url("/"))
        assert r.status_code == 200
        body = r.json()
        assert body["path"] == "/" and body["method"] == "GET"
        assert body["x_request_id"] == r.headers["x-request-id"]
        names.append(body["backend"])
    assert set(names) == {"demo-1", "demo-2", "demo-3"}
    assert sorted(names).count("demo-3") == 2   # weights 1, 1, 2 as printed


def test_demo_prints_what_to_curl(demo):
    out = demo.stdout() + demo.stderr()
    assert f"http://127.0.0.1:{demo.port}" in out
    assert "curl" in out


def test_demo_answers_its_advertised_examples(demo, http):
    r = http.get(demo.url("/hello"))
    assert r.status_code == 200 and "backend" not in r.text
    r = http.get(demo.url("/docs"), allow_redirects=False)
    assert 300 <= r.status_code < 400 and r.headers["location"]
    # the banner's "curl --path-as-is .../a/../../x": a path climbing above the root
    r = raw_request(demo.port, b"GET /a/../../x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert r.status == 400
    body = json.loads(r.body)
    assert body["status"] == 400 and body["request_id"] == r.header("x-request-id")


def test_demo_shows_protocol_translation(demo, http):
    """The banner's translation examples: JSON as XML, a WebSocket bridge, MQTT -> HTTP."""
    import asyncio
    import subprocess
    import websockets
    r = http.get(demo.url("/xml/orders"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    assert "<path>/orders</path>" in r.text and "<backend>demo-" in r.text

    async def ws():
        async with websockets.connect(f"ws://127.0.0.1:{demo.port}/ws") as c:
            await c.send("hello")
            return json.loads(await c.recv())
    reply = asyncio.run(asyncio.wait_for(ws(), 10))
    assert reply["method"] == "POST" and reply["path"] == "/ws" and reply["body_bytes"] == 5

    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(demo.mqtt_port), "-q", "1",
                    "-t", "devices/d1/telemetry", "-m", "21.5"], check=True, timeout=10)
    entry = demo.wait_access_log(3)[-1]
    assert entry["protocol"] == "mqtt" and entry["path"] == "/ingest/d1" and entry["status"] == 200
    out = demo.stdout() + demo.stderr()
    assert "mosquitto_pub" in out and "/xml/" in out
