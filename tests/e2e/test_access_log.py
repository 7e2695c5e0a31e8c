"""Access log (SPEC section 6): one JSON object per line per request, with the documented fields."""

import json
import re
import signal

from conftest import Reply, base_config, free_port, proxy_config, wait_for

FIELDS = {"time", "request_id", "trace_id", "client_ip", "listener", "method", "host", "path", "protocol",
          "status", "bytes_in", "bytes_out", "duration_ms", "route", "upstream", "target", "upstream_ms",
          "attempts", "consumer", "cache", "rate_limited", "user_agent", "error"}
RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|[+-]\d{2}:\d{2})$")


def routes(extra=()):
    return [*extra, {"name": "api", "match": {"path": "/api"}, "upstream": "app"}]


def test_proxied_request_is_logged_as_one_json_line_with_the_spec_fields(gateway_factory, backend, http):
    backend.handler = lambda req: Reply(201, [], b"x" * 300)
    gw = gateway_factory(proxy_config({"app": [backend]}, routes()))
    r = http.post(gw.url("/api/items?x=1"), data=b"p" * 1000, headers={"User-Agent": "e2e-agent/1.0",
                                                                         "Host": "shop.test"})
    assert r.status_code == 201
    entries = gw.wait_access_log(1)
    assert len(entries) == 1
    e = entries[0]
    assert FIELDS <= set(e), FIELDS - set(e)
    assert RFC3339_MS.match(e["time"]), e["time"]
    assert e["request_id"] == r.headers["x-request-id"] == backend.last.header("x-request-id")
    assert e["trace_id"] == backend.last.header("traceparent").split("-")[1]
    assert e["client_ip"] == "127.0.0.1"
    assert e["listener"] == "default"
    assert (e["method"], e["host"], e["protocol"]) == ("POST", "shop.test", "HTTP/1.1")
    assert e["path"] in ("/api/items", "/api/items?x=1")
    assert e["status"] == 201
    assert (e["route"], e["upstream"], e["target"]) == ("api", "app", backend.address)
    assert e["attempts"] == 1
    assert e["bytes_out"] >= 300
    assert e["bytes_in"] >= 1000, "the 1000-byte request body is not counted in bytes_in"
    assert isinstance(e["duration_ms"], (int, float)) and e["duration_ms"] >= 0
    assert isinstance(e["upstream_ms"], (int, float)) and 0 <= e["upstream_ms"] <= e["duration_ms"]
    assert e["user_agent"] == "e2e-agent/1.0"
    assert e["cache"] == "-" and e["rate_limited"] is False
    assert e["error"] in (None, "", "-")


def test_every_request_gets_exactly_one_line(gateway_factory, backend, http):
    gw = gateway_factory(proxy_config({"app": [backend]}, routes()))
    ids = [http.get(gw.url(f"/api/{i}")).headers["x-request-id"] for i in range(10)]
    ids.append(http.get(gw.url("/nowhere")).headers["x-request-id"])
    entries = gw.wait_access_log(11)
    assert [e["request_id"] for e in entries] == ids
    assert len(backend.requests) == 10


def test_gateway_made_answer_is_logged_with_its_error(gateway_factory, backend, http):
    gw = gateway_factory(proxy_config({"app": [backend]}, routes()))
    r = http.get(gw.url("/nowhere"))
    assert r.status_code == 404
    e = gw.wait_access_log(1)[-1]
    assert e["status"] == 404
    assert e["request_id"] == r.headers["x-request-id"]
    assert isinstance(e["error"], str) and e["error"] not in ("", "-")
    assert e["bytes_out"] > 0
    assert not backend.requests


def test_access_log_to_a_file_and_sigusr1_reopens_it(gateway_factory, backend, http):
    port = free_port()
    gw = gateway_factory(base_config(port, **proxy_config({"app": [backend]}, routes())) |
                         {"log": {"access": "access.log", "error": "stderr"}})
    log = gw.dir / "access.log"        # relative paths are relative to the config file
    http.get(gw.url("/api/one"))
    wait_for(lambda: log.exists() and "/api/one" in log.read_text(), 5, what="the access log file")
    assert gw.access_log() == [], "with a file access log nothing goes to stdout"

    rotated = gw.dir / "access.log.1"
    log.rename(rotated)
    gw.signal(signal.SIGUSR1)
    wait_for(lambda: log.exists(), 5, what="the access log to be reopened")
    http.get(gw.url("/api/two"))
    wait_for(lambda: "/api/two" in log.read_text(), 5, what="a line in the new file")
    assert "/api/two" not in rotated.read_text()
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    assert [e["path"] for e in lines] == ["/api/two"]


def test_access_log_off_writes_nothing(gateway_factory, backend, http):
    port = free_port()
    gw = gateway_factory(base_config(port, **proxy_config({"app": [backend]}, routes())) |
                         {"log": {"access": "off", "error": "stderr"}})
    assert http.get(gw.url("/api/x")).status_code == 200
    assert backend.wait_requests(1)
    gw.stop()
    assert gw.access_log() == []


def test_error_log_names_the_cause_of_every_gateway_made_error(gateway_factory, backend, http):
    from conftest import Reply, raw_request
    backend.handler = lambda req: Reply(200, [], b"ok", delay=2.0 if req.path == "/slow" else 0)
    gw = gateway_factory(proxy_config(
        {"app": [backend], "dead": ["127.0.0.1:1"],
         "slow": {"targets": [backend.address], "timeouts": {"request": "300ms"}, "retries": {"attempts": 0}}},
        [{"match": {"path": "/keyed"}, "upstream": "app", "auth": "keys"},
         {"match": {"path": "/limited"}, "respond": {"status": 200}, "rate_limit": [{"key": "ip", "rate": "1/min"}]},
         {"match": {"path": "/denied"}, "respond": {"status": 200}, "deny": {"ips": ["127.0.0.0/8"]}},
         {"match": {"path": "/down"}, "upstream": "dead"},
         {"match": {"path": "/slow"}, "upstream": "slow"},
         {"match": {"path": "/"}, "upstream": "app"}],
        consumers=[{"name": "alice", "api_keys": ["key:alice-key"]}],
        auth={"keys": {"api_key": {"header": "x-api-key"}}}))
    assert http.get(gw.url("/keyed"), headers={"x-api-key": "wrong"}).status_code == 401
    http.get(gw.url("/limited"))
    assert http.get(gw.url("/limited")).status_code == 429
    assert http.get(gw.url("/denied")).status_code == 403
    assert http.get(gw.url("/down")).status_code == 502
    assert http.get(gw.url("/slow")).status_code == 504
    assert raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").status == 400
    wanted = {
        "401": "by auth: auth failed",
        "429": "by rate_limit: rate limited",
        "403": "by ip_access",
        "502": "upstream connection refused upstream dead",
        "504": "upstream timeout upstream slow",
        "400": "400",
    }
    for status, text in wanted.items():
        gw.wait_error_log(text)
    joined = "\n".join(gw.error_messages())
    assert "wrong" not in joined  # never a credential


def test_log_that_cannot_keep_up_drops_and_counts_lines_instead_of_blocking_requests(gateway_factory, http, tmp_path):
    """The access log is a FIFO nobody reads: the writer thread blocks in write(2) as on a stalled
    disk. Requests keep being answered; lines beyond `log.buffer` are dropped, counted in
    sluice_log_dropped_lines_total and reported in the error log; once the reader catches up,
    every request is either in the log or counted as dropped, exactly."""
    import os
    import time
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open, so the gateway's open succeeds; unread
    try:
        port, admin = free_port(), free_port()
        gw = gateway_factory(base_config(port, routes=[{"match": {"path": "/"}, "respond": {"status": 200, "body": "ok"}}]) |
                             {"log": {"access": str(fifo), "error": "stderr", "buffer": "64KiB"},
                              "admin": {"listen": f"127.0.0.1:{admin}"}})
        n = 1500  # ~330 KB of lines: the 64 KiB pipe and the 64 KiB ring hold a fraction of them
        for i in range(n):
            assert http.get(gw.url(f"/r{i}")).status_code == 200

        def dropped():
            text = http.get(f"http://127.0.0.1:{admin}/metrics").text
            m = re.search(r"^sluice_log_dropped_lines_total (\d+)$", text, re.M)
            return int(m.group(1)) if m else 0
        assert dropped() > 0
        gw.wait_error_log("dropped")

        data = b""
        def drained():
            nonlocal data
            try:
                while chunk := os.read(reader, 1 << 16):
                    data += chunk
            except BlockingIOError:
                pass
            return data.endswith(b"\n") and data.count(b"\n") + dropped() >= n
        wait_for(drained, 10, interval=0.05, what="the access log to drain")
        time.sleep(0.1)
        drained()
        lines = [json.loads(l) for l in data.splitlines()]
        assert lines and all(e["status"] == 200 for e in lines)
        assert len(lines) + dropped() == n
        paths = [e["path"] for e in lines]
        assert paths == sorted(paths, key=lambda p: int(p[2:])), "what is kept stays in order"
    finally:
        os.close(reader)


def test_combined_format_for_http_and_mqtt(gateway_factory, backend, http):
    """`access_format: combined`: NGINX/Apache lines, also for MQTT messages (protocol "mqtt",
    the client id as the remote user)."""
    import subprocess
    port, mqtt_port = free_port(), free_port()
    cfg = proxy_config({"app": [backend]}, routes(),
                       listeners=[{"name": "web", "listen": f"127.0.0.1:{port}"},
                                  {"name": "iot", "listen": f"127.0.0.1:{mqtt_port}", "protocol": "mqtt"}],
                       mqtt={"routes": [{"topic": "t/+", "upstream": "app", "path": "/api/mqtt/{1}"}]},
                       workers=1, log={"access": "stdout", "access_format": "combined", "error": "stderr"})
    gw = gateway_factory(cfg, port=port)
    assert http.get(gw.url("/api/x?q=1"), headers={"user-agent": "ua/1", "referer": "http://r/"}).status_code == 200
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt_port), "-i", "dev-9", "-q", "1",
                    "-t", "t/abc", "-m", "hi"], check=True, timeout=10)
    backend.wait_requests(2)

    def lines():
        return [l for l in gw.stdout().splitlines() if l.strip()]
    from conftest import wait_for
    wait_for(lambda: len(lines()) >= 2, 5, what="two combined lines")
    http_line, mqtt_line = lines()[:2]
    clf = r'\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000\]'
    assert re.fullmatch(r'127\.0\.0\.1 - - ' + clf + r' "GET /api/x\?q=1 HTTP/1\.1" 200 \d+ "http://r/" "ua/1"', http_line), http_line
    assert re.fullmatch(r'127\.0\.0\.1 - dev-9 ' + clf + r' "POST /api/mqtt/abc mqtt" 200 \d+ "-" "-"', mqtt_line), mqtt_line
