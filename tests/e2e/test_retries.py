"""Retries (SPEC section 2 `upstreams: retries`): by default one extra try, on a different target,
on [connect_failure, reset, 502, 503, 504]; a connect failure is retried for every method (nothing
was sent), the other failures only for idempotent methods (or `methods: all`) whose body could be
replayed (at most 64 KiB); the gateway's own request timeout is never retried; `attempts: 0`
turns retries off. The access log's `attempts` counts the tries.

The failing target `bad` has weight 100 and the good one weight 1, so (weighted round robin) the
first try lands on `bad` almost always; each test checks what happened to every request that did
reach `bad`, by request id, on both backends. Passive ejection is off so that `bad` keeps being
tried."""

import hashlib
import time

import pytest

from conftest import Reply, free_port, proxy_config

BUSY = Reply(503, [("Content-Type", "text/plain")], b"bad is busy")


def gateway_with(gateway_factory, bad_address, good, **retries):
    upstream = {"targets": [{"address": bad_address, "weight": 100}, {"address": good.address, "weight": 1}],
                "outlier": "off", "timeouts": {"connect": "1s", "request": "2s"}}
    if retries:
        upstream["retries"] = retries
    return gateway_factory(proxy_config({"app": upstream}, [{"match": {"path": "/"}, "upstream": "app"}]))


def ids(backend):
    return [r.header("x-request-id") for r in backend.requests]


def assert_same_request(first, retry):
    """The retry carries the very request the first try carried: method, target, the client's
    headers and the body."""
    assert (retry.method, retry.target) == (first.method, first.target)
    for name in ("host", "user-agent", "content-type", "content-length", "x-request-id", "x-client"):
        assert retry.header_all(name) == first.header_all(name), f"{name} differs on the retry"
    assert retry.body_sha256 == first.body_sha256 and retry.body_bytes == first.body_bytes


def log_by_id(gw, n):
    return {e["request_id"]: e for e in gw.wait_access_log(n)}


def test_get_answered_503_is_retried_once_on_another_target(gateway_factory, backend_factory, http):
    bad, good = backend_factory("bad"), backend_factory("good")
    bad.handler = lambda req: BUSY
    gw = gateway_with(gateway_factory, bad.address, good)
    responses = [http.get(gw.url(f"/g{i}")) for i in range(3)]
    assert [(r.status_code, r.json()["backend"]) for r in responses] == [(200, "good")] * 3
    rids = [r.headers["x-request-id"] for r in responses]
    assert ids(good) == rids                      # every request answered by good...
    assert ids(bad) == rids, "the first try of each GET should have reached bad"   # ...after bad said 503
    assert [r.target for r in good.requests] == [f"/g{i}" for i in range(3)]
    log = log_by_id(gw, 3)
    for rid in rids:
        assert (log[rid]["status"], log[rid]["attempts"], log[rid]["target"]) == (200, 2, good.address)


def test_post_answered_503_is_not_retried_by_default(gateway_factory, backend_factory, http):
    bad, good = backend_factory("bad"), backend_factory("good")
    bad.handler = lambda req: BUSY
    gw = gateway_with(gateway_factory, bad.address, good)
    r = http.post(gw.url("/orders"), data=b"order-1")
    assert (r.status_code, r.content) == (503, b"bad is busy")   # the upstream's own answer
    assert [(q.method, q.target, q.body) for q in bad.requests] == [("POST", "/orders", b"order-1")]
    assert good.requests == [], "a POST was sent a second time"
    e = log_by_id(gw, 1)[r.headers["x-request-id"]]
    assert (e["status"], e["attempts"], e["target"]) == (503, 1, bad.address)


def test_post_answered_503_is_retried_with_methods_all(gateway_factory, backend_factory, http):
    bad, good = backend_factory("bad"), backend_factory("good")
    bad.handler = lambda req: BUSY
    gw = gateway_with(gateway_factory, bad.address, good, methods="all")
    r = http.post(gw.url("/orders"), data=b"order-2" * 100,
                  headers={"Content-Type": "text/plain", "X-Client": "c1"})
    assert r.status_code == 200 and r.json()["backend"] == "good"
    rid = r.headers["x-request-id"]
    assert ids(bad) == [rid] and ids(good) == [rid]
    assert (bad.last.method, bad.last.body, bad.last.header("x-client")) == ("POST", b"order-2" * 100, "c1")
    assert_same_request(bad.last, good.last)    # the head and the body were replayed as they came
    assert log_by_id(gw, 1)[rid]["attempts"] == 2


@pytest.mark.parametrize("size, retried", [(60 * 1024, True), (100 * 1024, False)], ids=["60KiB", "100KiB"])
def test_only_bodies_up_to_64KiB_are_replayed(gateway_factory, backend_factory, http, size, retried):
    bad, good = backend_factory("bad"), backend_factory("good")
    bad.handler = lambda req: BUSY
    gw = gateway_with(gateway_factory, bad.address, good, methods="all")
    body = bytes(range(256)) * (size // 256)
    r = http.put(gw.url("/blob"), data=body, headers={"X-Client": "c2"})
    assert bad.last.body_sha256 == hashlib.sha256(body).hexdigest()
    if retried:
        assert r.status_code == 200 and r.json()["backend"] == "good"
        assert good.last.body_sha256 == hashlib.sha256(body).hexdigest()
        assert good.last.body_bytes == size
        assert_same_request(bad.last, good.last)
    else:
        assert (r.status_code, r.content) == (503, b"bad is busy")
        assert good.requests == [], "a body over 64 KiB cannot be replayed"
    assert log_by_id(gw, 1)[r.headers["x-request-id"]]["attempts"] == (2 if retried else 1)


def test_attempts_0_turns_retries_off(gateway_factory, backend_factory, http):
    bad, good = backend_factory("bad"), backend_factory("good")
    bad.handler = lambda req: BUSY
    gw = gateway_with(gateway_factory, bad.address, good, attempts=0)
    r = http.get(gw.url("/g"))
    assert (r.status_code, r.content) == (503, b"bad is busy")
    assert ids(bad) == [r.headers["x-request-id"]] and good.requests == []
    assert log_by_id(gw, 1)[r.headers["x-request-id"]]["attempts"] == 1


def test_attempts_0_does_not_retry_a_connect_failure_either(gateway_factory, backend_factory, http):
    good = backend_factory("good")
    dead = f"127.0.0.1:{free_port()}"
    gw = gateway_with(gateway_factory, dead, good, attempts=0)
    r = http.get(gw.url("/g"))
    assert r.status_code == 502 and r.json()["status"] == 502
    assert good.requests == []
    e = log_by_id(gw, 1)[r.headers["x-request-id"]]
    assert (e["attempts"], e["target"]) == (1, dead)


def test_connect_failure_is_retried_even_for_post(gateway_factory, backend_factory, http):
    good = backend_factory("good")
    dead = f"127.0.0.1:{free_port()}"
    gw = gateway_with(gateway_factory, dead, good)
    r = http.post(gw.url("/orders"), data=b"order-3")
    assert r.status_code == 200 and r.json()["backend"] == "good"
    assert [(q.method, q.target, q.body) for q in good.requests] == [("POST", "/orders", b"order-3")]
    e = log_by_id(gw, 1)[r.headers["x-request-id"]]
    assert (e["status"], e["attempts"], e["target"]) == (200, 2, good.address)


def test_reset_is_retried_for_get_but_not_for_post(gateway_factory, backend_factory, http):
    bad, good = backend_factory("bad"), backend_factory("good")
    bad.handler = lambda req: Reply(drop=True)   # reads the request, closes without answering
    gw = gateway_with(gateway_factory, bad.address, good)
    g = http.get(gw.url("/g"), headers={"X-Client": "c3"})
    assert g.status_code == 200 and g.json()["backend"] == "good"
    assert_same_request(bad.requests[0], good.requests[0])
    p = http.post(gw.url("/p"), data=b"x")
    assert p.status_code == 502 and p.json()["status"] == 502
    assert ids(bad) == [g.headers["x-request-id"], p.headers["x-request-id"]]
    assert ids(good) == [g.headers["x-request-id"]], "the POST was sent twice"
    log = log_by_id(gw, 2)
    assert log[g.headers["x-request-id"]]["attempts"] == 2
    assert log[p.headers["x-request-id"]]["attempts"] == 1


def test_status_not_listed_in_on_is_not_retried(gateway_factory, backend_factory, http):
    bad, good = backend_factory("bad"), backend_factory("good")
    bad.handler = lambda req: BUSY
    gw = gateway_with(gateway_factory, bad.address, good, on=["connect_failure", "502"])
    r = http.get(gw.url("/g"))
    assert (r.status_code, r.content) == (503, b"bad is busy")
    assert len(bad.requests) == 1 and good.requests == []


def test_gateway_request_timeout_is_not_retried(gateway_factory, backend_factory, http):
    bad, good = backend_factory("bad"), backend_factory("good")
    bad.handler = lambda req: Reply(hang=True)
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [{"address": bad.address, "weight": 100}, {"address": good.address, "weight": 1}],
                 "outlier": "off", "timeouts": {"connect": "1s", "request": "300ms"}}},
        [{"match": {"path": "/"}, "upstream": "app"}]))
    started = time.monotonic()
    r = http.get(gw.url("/slow"), timeout=10)
    elapsed = time.monotonic() - started
    assert r.status_code == 504 and r.json()["status"] == 504
    assert elapsed < 1.0, f"{elapsed:.2f}s: the timeout is the whole budget, not per try"
    assert ids(bad) == [r.headers["x-request-id"]] and good.requests == []
    assert log_by_id(gw, 1)[r.headers["x-request-id"]]["attempts"] == 1


def test_each_retry_goes_to_a_target_not_tried_yet(gateway_factory, backend_factory, http):
    bad1, bad2, good = backend_factory("bad1"), backend_factory("bad2"), backend_factory("good")
    bad1.handler = bad2.handler = lambda req: Reply(502, [], b"bad gateway behind")
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [bad1.address, bad2.address, good.address], "outlier": "off",
                 "retries": {"attempts": 2}}},
        [{"match": {"path": "/"}, "upstream": "app"}]))
    for i in range(6):
        r = http.get(gw.url(f"/g{i}"))
        assert r.status_code == 200 and r.json()["backend"] == "good", (i, r.status_code, r.text)
        rid = r.headers["x-request-id"]
        tries = [b.name for b in (bad1, bad2, good) for q in b.requests if q.header("x-request-id") == rid]
        assert sorted(tries) == sorted(set(tries)), f"request {i} tried one target twice: {tries}"
        assert log_by_id(gw, i + 1)[rid]["attempts"] == len(tries)
    assert len(good.requests) == 6
    assert bad1.requests and bad2.requests
