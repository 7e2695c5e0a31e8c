"""SIGHUP reload (SPEC section 1): a valid new config takes over, an invalid one is logged and
the old one keeps serving, and reloading under load drops no request."""

import threading

import requests

from conftest import base_config, free_port, proxy_config, wait_for


def respond_config(port, body):
    return base_config(port, routes=[{"match": {"path": "/"}, "respond": {"status": 200, "body": body}}])


def test_sighup_applies_a_new_respond_body(gateway_factory, http):
    port = free_port()
    gw = gateway_factory(respond_config(port, "one"))
    assert http.get(gw.url("/")).text == "one"
    outcome = gw.reload(respond_config(port, "two"))
    assert "reloaded" in outcome["msg"]
    wait_for(lambda: http.get(gw.url("/")).text == "two", 3, what="the new body")
    with requests.Session() as fresh:
        fresh.trust_env = False
        assert fresh.get(gw.url("/")).text == "two"


def test_sighup_moves_a_route_to_another_upstream(gateway_factory, backend_factory, http):
    a, b = backend_factory("a"), backend_factory("b")
    port = free_port()
    route = [{"match": {"path": "/"}, "upstream": "svc"}]
    gw = gateway_factory(base_config(port, **proxy_config({"svc": [a]}, route)))
    assert http.get(gw.url("/1")).json()["backend"] == "a"
    assert "reloaded" in gw.reload(base_config(port, **proxy_config({"svc": [b]}, route)))["msg"]
    wait_for(lambda: http.get(gw.url("/2")).json()["backend"] == "b", 3, what="traffic to move to b")
    assert http.get(gw.url("/3")).json()["backend"] == "b"
    assert a.requests[0].target == "/1"
    assert b.requests[-1].target == "/3"
    assert {r.target for r in a.requests[1:]} <= {"/2"}, "once moved, traffic must not go back to a"


def test_invalid_config_on_sighup_is_logged_and_the_old_config_keeps_serving(gateway_factory, http):
    port = free_port()
    gw = gateway_factory(respond_config(port, "old"))
    broken = f"listen: 127.0.0.1:{port}\nworkers: 1\nworkerz: 2\nroutes:\n  - {{ match: {{ path: / }}, upstream: nope }}\n"
    outcome = gw.reload(broken)
    assert "rejected" in outcome["msg"]
    assert outcome["level"] == "error"
    messages = [e["msg"] for e in gw.error_log()]
    assert any("workerz" in m and ":3:1:" in m for m in messages), messages
    assert any("nope" in m for m in messages), messages
    assert gw.proc.poll() is None
    assert http.get(gw.url("/")).text == "old"
    # and a later good config is still accepted
    assert "reloaded" in gw.reload(respond_config(port, "new"))["msg"]
    wait_for(lambda: http.get(gw.url("/")).text == "new", 3, what="the new body")


def test_twenty_reloads_under_concurrent_load_fail_no_request(gateway_factory, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port = free_port()
    configs = [base_config(port, workers=2, **proxy_config(
        {"svc": [backend]}, [{"match": {"path": "/"}, "upstream": "svc",
                              "headers": {"response": {"set": {"x-generation": str(i)}}}}]))
        for i, backend in enumerate((a, b))]
    gw = gateway_factory(configs[0])

    stop = threading.Event()
    failures, done = [], []

    def load(n):
        with requests.Session() as s:
            s.trust_env = False
            count = 0
            while not stop.is_set():
                try:
                    r = s.post(gw.url(f"/load/{n}/{count}"), data=b"payload", timeout=5)
                    if r.status_code != 200 or r.json()["target"] != f"/load/{n}/{count}":
                        failures.append((r.status_code, r.text))
                except Exception as e:  # noqa: BLE001 -- any failure counts
                    failures.append(repr(e))
                count += 1
            done.append(count)

    threads = [threading.Thread(target=load, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(a.requests) >= 10, 5, what="load to start")
        for i in range(20):
            outcome = gw.reload(configs[(i + 1) % 2])
            assert "reloaded" in outcome["msg"], outcome
            seen = len(a.requests) + len(b.requests)
            wait_for(lambda: len(a.requests) + len(b.requests) >= seen + 3, 5, what="traffic after a reload")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert failures == []
    assert sum(done) >= 60
    assert len(a.requests) > 0 and len(b.requests) > 0
    assert sum(done) == len(a.requests) + len(b.requests)
