"""Target health (SPEC section 2 `upstreams:` health_check and outlier, section 3 503): active
checks mark a target down after `unhealthy` failed checks and up again after `healthy` passed
ones; passive outlier detection ejects a target after consecutive real-traffic failures; with no
target left the gateway answers 503 {"error": "no healthy upstream"}. Under steady load, retries
cover the gap, so no idempotent client request fails while a backend dies.

Every test checks both sides: what the clients got (ClientLoad outcomes) and what each backend
received (its recorded requests, health checks told apart by their User-Agent), plus the
gateway's own account (error log, access log)."""

import time
from datetime import datetime

from conftest import Reply, free_port, proxy_config, wait_for

INTERVAL = 0.2   # seconds between health checks (each jittered by +-10%)
UNHEALTHY = 2
HEALTHY = 2
CHECK_TIMEOUT = 0.15
# Checks run every interval (+10% jitter); `n` failures in a row take at most n+1 intervals from
# the moment the backend stopped. The slack covers a loaded ASan build and log polling.
SLACK = 0.7


def route():
    return [{"match": {"path": "/"}, "upstream": "app"}]


def connect_failures(gw, address: str) -> int:
    """Error-log lines for a failed attempt to reach `address` ("upstream app target A: ...")."""
    return len(gw.error_messages(f"upstream app target {address}:"))


def assert_no_client_failures(outcomes):
    failed = [o for o in outcomes if not o.ok]
    assert not failed, f"{len(failed)} of {len(outcomes)} client requests failed, e.g. {failed[:3]}"


def assert_answers_match_backends(outcomes, backends):
    """Every answer the client got from backend X was received by X with the same request id."""
    for b in backends:
        seen = {r.header("x-request-id") for r in b.proxied()}
        answered = {o.request_id for o in outcomes if o.backend == b.name}
        assert answered <= seen, f"{b.name} answered requests it never received: {answered - seen}"


def log_time(entry) -> float:
    return datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()


def test_stopped_backend_is_marked_down_by_health_checks_and_back_after_restart_without_failed_requests(
        gateway_factory, backend_factory, client_load):
    a, b, c = backend_factory("a"), backend_factory("b"), backend_factory("c")
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [a.address, b.address, c.address],
                 "health_check": {"path": "/healthz", "interval": f"{int(INTERVAL * 1000)}ms",
                                  "timeout": f"{int(CHECK_TIMEOUT * 1000)}ms",
                                  "healthy": HEALTHY, "unhealthy": UNHEALTHY},
                 "outlier": "off"}},       # only the active checks may take the target out
        route()))
    load = client_load(gw, threads=4)
    for x in (a, b, c):
        load.wait_answered_by(x.name, 5, timeout=5)

    stopped_at = time.monotonic()
    c.stop()
    gw.wait_error_log(f"target {c.address} is down", timeout=INTERVAL * (UNHEALTHY + 1) + 3)
    took = time.monotonic() - stopped_at
    assert took <= INTERVAL * (UNHEALTHY + 1) + SLACK, f"marked down {took:.2f}s after it stopped"

    # Down means no traffic is even tried there: no more failed attempts, one try per request.
    load.run_for(0.1)    # requests that picked the target just before it was marked down
    failures_when_down = connect_failures(gw, c.address)
    logged_when_down = len(gw.access_log())
    load.run_for(0.8)
    assert connect_failures(gw, c.address) == failures_when_down, "a down target was still tried"
    window = gw.access_log()[logged_when_down:]
    assert len(window) >= 20, f"only {len(window)} requests in 0.8s of load"
    assert all(e["attempts"] == 1 and e["target"] != c.address for e in window), \
        [e for e in window if e["attempts"] != 1 or e["target"] == c.address][:3]

    # Started again on the same port: up after `healthy` passed checks, then it gets traffic.
    restarted_at = time.monotonic()
    c2 = backend_factory("c2", port=c.port)
    gw.wait_error_log(f"target {c.address} is healthy again", timeout=INTERVAL * (HEALTHY + 1) + 3)
    took = time.monotonic() - restarted_at
    assert took <= INTERVAL * (HEALTHY + 1) + SLACK, f"healthy again {took:.2f}s after the restart"
    load.wait_answered_by("c2", 5, timeout=3)
    outcomes = load.stop()

    assert_no_client_failures(outcomes)
    assert len(c2.health_checks()) >= HEALTHY
    assert all(h.method == "GET" and h.path == "/healthz" for h in c2.health_checks())
    assert_answers_match_backends(outcomes, [a, b, c, c2])
    # a and b answered exactly what they received; every request is in the access log once.
    for x in (a, b):
        assert len(x.proxied()) == sum(o.backend == x.name for o in outcomes)
    entries = gw.wait_access_log(len(outcomes))
    assert sorted(e["request_id"] for e in entries) == sorted(o.request_id for o in outcomes)


def test_stopped_backend_is_ejected_by_passive_outlier_detection_without_failed_gets(
        gateway_factory, backend_factory, client_load):
    a, b, c = backend_factory("a"), backend_factory("b"), backend_factory("c")
    gw = gateway_factory(proxy_config({"app": [a, b, c]}, route()))   # outlier on by default: 5 in a row
    load = client_load(gw, threads=4)
    for x in (a, b, c):
        load.wait_answered_by(x.name, 5, timeout=5)

    c.stop()
    wait_for(lambda: connect_failures(gw, c.address) >= 5, 5, what="5 failed attempts on the stopped target")
    load.run_for(0.2)    # attempts already under way when the fifth failure ejected it
    failures_at_ejection = connect_failures(gw, c.address)
    logged_at_ejection = len(gw.access_log())
    load.run_for(1.0)
    outcomes = load.stop()

    assert connect_failures(gw, c.address) == failures_at_ejection, \
        "the ejected target was still tried (ejection_time is 30s)"
    assert failures_at_ejection <= 5 + 4, f"{failures_at_ejection} failed attempts before ejection"
    window = gw.access_log()[logged_at_ejection:]
    assert len(window) >= 20
    assert all(e["attempts"] == 1 and e["target"] != c.address for e in window)
    assert_no_client_failures(outcomes)
    assert_answers_match_backends(outcomes, [a, b, c])
    for x in (a, b):
        assert len(x.proxied()) == sum(o.backend == x.name for o in outcomes)
    assert sum(o.backend == "c" for o in outcomes) <= len(c.proxied())


def test_ejected_target_gets_traffic_again_after_its_ejection_time(gateway_factory, backend_factory,
                                                                   client_load):
    a, b, c = backend_factory("a"), backend_factory("b"), backend_factory("c")
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [a.address, b.address, c.address],
                 "outlier": {"consecutive_failures": 3, "ejection_time": "1s"}}}, route()))
    load = client_load(gw, threads=3)
    load.wait_answered_by("c", 3, timeout=5)
    c.stop()
    wait_for(lambda: connect_failures(gw, c.address) >= 3, 5, what="3 failed attempts on the stopped target")
    # the third failed attempt ejected it; its error-log entry carries the wall-clock time
    failed = [e for e in gw.error_log() if f"upstream app target {c.address}:" in e.get("msg", "")]
    ejected_at = log_time(failed[2])

    c2 = backend_factory("c2", port=c.port)
    first_seen = []
    original = c2.handler
    c2.handler = lambda req: (first_seen.append(time.time()), original(req))[1]
    load.wait_answered_by("c2", 3, timeout=4)
    outcomes = load.stop()

    back_after = first_seen[0] - ejected_at
    assert 1.0 - 0.05 <= back_after <= 1.0 + 1.5, f"c got traffic {back_after:.2f}s after its ejection"
    assert_no_client_failures(outcomes)
    assert_answers_match_backends(outcomes, [a, b, c, c2])


def test_health_check_uses_path_and_expect_and_no_target_left_gives_503_json(gateway_factory, backend, http):
    state = {"health": 500}
    backend.handler = lambda req: (Reply(state["health"], [], b"hc") if req.path == "/status"
                                   else backend.default_reply(req))
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [backend.address],
                 "health_check": {"path": "/status", "interval": "200ms", "timeout": "150ms",
                                  "healthy": HEALTHY, "unhealthy": UNHEALTHY, "expect": ["200-299"]}}},
        route()))
    gw.wait_error_log(f"target {backend.address} is down", timeout=INTERVAL * (UNHEALTHY + 1) + 3)

    r = http.get(gw.url("/api/x"))
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == "no healthy upstream" and body["status"] == 503
    assert body["request_id"] == r.headers["x-request-id"]
    assert backend.proxied() == [], "a request reached a target that is down"
    checks = backend.health_checks()
    assert len(checks) >= UNHEALTHY
    assert all((h.method, h.target) == ("GET", "/status") for h in checks)
    entry = gw.wait_access_log(1)[-1]
    assert entry["status"] == 503 and entry["error"]

    state["health"] = 204          # in expect: the target comes back after `healthy` passed checks
    gw.wait_error_log(f"target {backend.address} is healthy again", timeout=INTERVAL * (HEALTHY + 1) + 3)
    r = http.get(gw.url("/api/y"))
    assert r.status_code == 200 and r.json()["backend"] == "backend"
    assert [q.target for q in backend.proxied()] == ["/api/y"]


def test_tcp_health_check_marks_only_the_target_that_refuses_connections_down(gateway_factory, backend, http):
    dead = f"127.0.0.1:{free_port()}"
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [backend.address, dead],
                 "health_check": {"type": "tcp", "interval": "200ms", "timeout": "150ms",
                                  "healthy": 1, "unhealthy": UNHEALTHY}}},
        route()))
    gw.wait_error_log(f"target {dead} is down", timeout=INTERVAL * (UNHEALTHY + 1) + 3)
    for i in range(6):
        r = http.get(gw.url(f"/t{i}"))
        assert r.status_code == 200 and r.json()["backend"] == "backend"
    assert [q.target for q in backend.proxied()] == [f"/t{i}" for i in range(6)]
    assert backend.health_checks() == [], "a tcp check only connects: no HTTP request"
    assert gw.error_messages(f"target {backend.address} is down") == []
    assert all(e["attempts"] == 1 and e["target"] == backend.address for e in gw.wait_access_log(6))


def test_single_dead_target_is_ejected_and_then_answered_with_503_no_healthy_upstream(gateway_factory, http):
    dead = f"127.0.0.1:{free_port()}"
    gw = gateway_factory(proxy_config({"app": [dead]}, route()))   # at least one target may be ejected
    statuses = []
    for i in range(12):
        r = http.get(gw.url(f"/d{i}"))
        statuses.append(r.status_code)
        if r.status_code == 503:
            assert r.json()["error"] == "no healthy upstream"
            break
    assert statuses[-1] == 503, statuses
    assert set(statuses[:-1]) == {502} and len(statuses) - 1 <= 5, statuses
    # once ejected, the dead address is not even tried (the error log is written every 20 ms:
    # wait until every failure so far is in it before taking the count)
    wait_for(lambda: connect_failures(gw, dead) >= len(statuses) - 1, 5, what="the failures logged")
    time.sleep(0.1)
    failures = connect_failures(gw, dead)
    for i in range(3):
        assert http.get(gw.url(f"/e{i}")).status_code == 503
    time.sleep(0.1)  # a failed attempt would be in the error log by now
    assert connect_failures(gw, dead) == failures
