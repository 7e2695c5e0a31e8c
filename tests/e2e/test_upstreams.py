"""Upstream balancing and protection (SPEC section 2 `upstreams:` and route `split`, section 3):
least_conn and p2c prefer the target with fewer requests in flight, ring_hash and maglev keep a
key on one target, random spreads, a route `split` divides traffic by weight, the circuit breaker
(max_connections / max_pending) answers 503 fast instead of queueing, and a hostname target is
resolved. Every test checks what the clients got and what each backend received."""

import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import proxy_config


def route(upstream="app"):
    return [{"match": {"path": "/"}, "upstream": upstream}]


def fresh_get(url, headers=None, timeout=10):
    """A GET on a new connection (no session): with several workers it may land on any of them."""
    s = requests.Session()
    s.trust_env = False
    try:
        return s.get(url, headers=headers or {}, timeout=timeout)
    finally:
        s.close()


class Holding:
    """A backend handler that holds /hold* requests until released (an event, not a sleep) and
    tracks how many requests it has in progress at once."""

    def __init__(self, backend, hold_all=False):
        self.backend = backend
        self.hold_all = hold_all
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.current = 0
        self.most = 0
        backend.handler = self

    def __call__(self, req):
        with self.lock:
            self.current += 1
            self.most = max(self.most, self.current)
        try:
            if self.hold_all or req.path.startswith("/hold"):
                self.release.wait(8)
            return self.backend.default_reply(req)
        finally:
            with self.lock:
                self.current -= 1


# -------------------------------------------------------------------------------------------
# circuit breaker


def test_circuit_breaker_answers_503_at_once_beyond_max_connections(gateway_factory, backend):
    holding = Holding(backend, hold_all=True)
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [backend.address], "max_connections": 2, "max_pending": 0}}, route(),
        workers=2))    # the limit is the upstream's, whichever worker a request lands on
    results = {}

    def one(i):
        started = time.monotonic()
        r = fresh_get(gw.url(f"/c{i}"))
        results[i] = (r, time.monotonic() - started)

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(one, i) for i in range(10)]
        backend.wait_heads(2)
        # While the two admitted requests are held, the other eight must already have been refused.
        deadline = time.monotonic() + 5
        while sum(1 for r, _ in list(results.values()) if r.status_code == 503) < 8:
            assert time.monotonic() < deadline, f"only {len(results)} answers while 2 are held"
            time.sleep(0.01)
        holding.release.set()
        for f in futures:
            f.result()

    ok = [i for i, (r, _) in results.items() if r.status_code == 200]
    refused = [(r, t) for r, t in results.values() if r.status_code == 503]
    assert len(ok) == 2 and len(refused) == 8, {i: r.status_code for i, (r, _) in results.items()}
    for r, took in refused:
        assert r.json()["error"] == "upstream overloaded (circuit open)" and r.json()["status"] == 503
        assert took < 0.5, f"a refused request took {took:.2f}s"
    assert holding.most == 2, f"the backend had {holding.most} requests at once"
    assert sorted(q.target for q in backend.requests) == sorted(f"/c{i}" for i in ok)
    log = gw.wait_access_log(10)
    assert Counter(e["status"] for e in log) == {200: 2, 503: 8}


def test_max_pending_requests_wait_for_a_free_connection(gateway_factory, backend):
    holding = Holding(backend)
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [backend.address], "max_connections": 1, "max_pending": 1,
                 "timeouts": {"connect": "3s", "request": "10s"}}}, route()))
    with ThreadPoolExecutor(3) as pool:
        held = pool.submit(fresh_get, gw.url("/hold"))
        backend.wait_heads(1)
        waiting = pool.submit(fresh_get, gw.url("/waits"))
        time.sleep(0.2)      # let the second one take the only pending place (nothing to await)
        started = time.monotonic()
        refused = fresh_get(gw.url("/refused"))
        refused_after = time.monotonic() - started
        assert not waiting.done(), "the pending request should wait, not fail"
        holding.release.set()
        assert held.result().status_code == 200
        assert waiting.result().status_code == 200 and waiting.result().json()["target"] == "/waits"
    assert refused.status_code == 503 and refused.json()["error"] == "upstream overloaded (circuit open)"
    assert refused_after < 0.5
    assert [q.target for q in backend.requests] == ["/hold", "/waits"]
    assert holding.most == 1


def test_pending_request_gives_up_after_the_connect_timeout(gateway_factory, backend):
    holding = Holding(backend)
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [backend.address], "max_connections": 1, "max_pending": 5,
                 "timeouts": {"connect": "300ms", "request": "10s"}}}, route()))
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(fresh_get, gw.url("/hold"))
        backend.wait_heads(1)
        started = time.monotonic()
        r = fresh_get(gw.url("/late"))
        waited = time.monotonic() - started
        holding.release.set()
        assert held.result().status_code == 200
    assert r.status_code == 503 and r.json()["error"] == "upstream overloaded (circuit open)"
    assert 0.25 <= waited < 1.5, waited
    assert [q.target for q in backend.requests] == ["/hold"]


# -------------------------------------------------------------------------------------------
# split


def test_split_90_10_sends_10_percent_to_the_canary_within_2_5_points(gateway_factory, backend_factory):
    stable, canary = backend_factory("stable"), backend_factory("canary")
    gw = gateway_factory(proxy_config(
        {"stable": [stable], "canary": [canary]},
        [{"name": "split", "match": {"path": "/"},
          "split": [{"upstream": "stable", "weight": 90}, {"upstream": "canary", "weight": 10}]}]))
    total, threads = 2000, 4

    def run(t):
        s = requests.Session()
        s.trust_env = False
        names = [s.get(gw.url(f"/s/{t}/{i}")).json()["backend"] for i in range(total // threads)]
        s.close()
        return names

    with ThreadPoolExecutor(threads) as pool:
        answered = Counter(n for names in pool.map(run, range(threads)) for n in names)
    assert sum(answered.values()) == total
    share = answered["canary"] / total
    assert abs(share - 0.10) <= 0.025, f"canary got {share:.1%} of {total}"
    assert (len(stable.requests), len(canary.requests)) == (answered["stable"], answered["canary"])
    log = Counter(e["upstream"] for e in gw.wait_access_log(total))
    assert log == {"stable": answered["stable"], "canary": answered["canary"]}


# -------------------------------------------------------------------------------------------
# load-aware balancing


def test_least_conn_sends_new_requests_to_the_idle_target(gateway_factory, backend_factory):
    backends = [backend_factory(n) for n in ("a", "b", "c")]
    holders = [Holding(b) for b in backends]
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [b.address for b in backends], "balance": "least_conn"}}, route()))
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(fresh_get, gw.url("/hold1"))]
        wait_heads_total(backends, 1)
        held.append(pool.submit(fresh_get, gw.url("/hold2")))
        wait_heads_total(backends, 2)
        busy = {b.name for b in backends if b.heads_seen}
        assert len(busy) == 2, "the second held request went to the already busy target"
        idle = ({"a", "b", "c"} - busy).pop()
        answered = [fresh_get(gw.url(f"/q{i}")).json()["backend"] for i in range(10)]
        for h in holders:
            h.release.set()
        assert all(f.result().status_code == 200 for f in held)
    assert answered == [idle] * 10
    idle_backend = next(b for b in backends if b.name == idle)
    assert [q.target for q in idle_backend.requests] == [f"/q{i}" for i in range(10)]


def test_p2c_sends_new_requests_to_the_idle_target_across_workers(gateway_factory, backend_factory):
    backends = [backend_factory(n) for n in ("a", "b")]
    holders = [Holding(b) for b in backends]
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [b.address for b in backends], "balance": "p2c"}}, route(), workers=2))
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(fresh_get, gw.url("/hold"))
        wait_heads_total(backends, 1)
        busy = next(b for b in backends if b.heads_seen).name
        # Each on a new connection, so on either worker: the in-flight count is the upstream's.
        answered = [fresh_get(gw.url(f"/q{i}")).json()["backend"] for i in range(10)]
        for h in holders:
            h.release.set()
        assert held.result().status_code == 200
    idle = next(b for b in backends if b.name != busy)
    assert answered == [idle.name] * 10
    assert [q.target for q in idle.requests] == [f"/q{i}" for i in range(10)]


def wait_heads_total(backends, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while sum(b.heads_seen for b in backends) < n:
        assert time.monotonic() < deadline, f"fewer than {n} requests reached the backends"
        time.sleep(0.005)


# -------------------------------------------------------------------------------------------
# hashing


@pytest.mark.parametrize("balance", ["ring_hash", "maglev"])
def test_hash_on_header_keeps_each_user_on_one_target_and_spreads_users(gateway_factory, backend_factory,
                                                                        http, balance):
    backends = [backend_factory(n) for n in ("a", "b", "c")]
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [b.address for b in backends], "balance": balance, "hash_on": "header:x-user"}},
        route()))
    users = [f"user-{i}" for i in range(60)]
    placed = defaultdict(set)
    for rnd in range(3):
        for u in users:
            r = http.get(gw.url(f"/u/{u}/{rnd}"), headers={"X-User": u})
            assert r.status_code == 200
            placed[u].add(r.json()["backend"])
    moved = {u: names for u, names in placed.items() if len(names) != 1}
    assert not moved, f"users answered by more than one target: {moved}"
    per_target = Counter(next(iter(names)) for names in placed.values())
    assert set(per_target) == {"a", "b", "c"} and min(per_target.values()) >= 6, per_target
    for b in backends:   # the backends agree: each saw all three requests of exactly its users
        seen = Counter(q.header("x-user") for q in b.requests)
        assert seen == {u: 3 for u, names in placed.items() if names == {b.name}}


@pytest.mark.parametrize("hash_on, vary", [
    ("path", lambda k: ({}, f"/p/{k}")),
    ("cookie:uid", lambda k: ({"Cookie": f"uid={k}"}, "/c")),
], ids=["path", "cookie"])
def test_ring_hash_on_path_and_cookie_keeps_a_key_on_one_target(gateway_factory, backend_factory, http,
                                                                 hash_on, vary):
    backends = [backend_factory(n) for n in ("a", "b", "c")]
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [b.address for b in backends], "balance": "ring_hash", "hash_on": hash_on}},
        route()))
    placed = defaultdict(set)
    for rnd in range(2):
        for k in range(40):
            headers, path = vary(f"key{k}")
            placed[k].add(http.get(gw.url(path), headers=headers).json()["backend"])
            http.cookies.clear()
    assert all(len(names) == 1 for names in placed.values()), placed
    assert len({next(iter(n)) for n in placed.values()}) == 3, "40 keys all on fewer than 3 targets"
    assert sum(len(b.requests) for b in backends) == 80


def test_hash_on_ip_keeps_one_client_address_on_one_target(gateway_factory, backend_factory, http):
    backends = [backend_factory(n) for n in ("a", "b", "c")]
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [b.address for b in backends], "balance": "maglev", "hash_on": "ip"}}, route()))
    names = {http.get(gw.url(f"/i{i}")).json()["backend"] for i in range(20)}
    assert len(names) == 1
    assert sorted(len(b.requests) for b in backends) == [0, 0, 20]


def test_random_balance_reaches_every_target(gateway_factory, backend_factory, http):
    backends = [backend_factory(n) for n in ("a", "b", "c")]
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [b.address for b in backends], "balance": "random"}}, route()))
    answered = Counter(http.get(gw.url(f"/r{i}")).json()["backend"] for i in range(300))
    assert set(answered) == {"a", "b", "c"} and all(60 <= n <= 140 for n in answered.values()), answered
    assert {b.name: len(b.requests) for b in backends} == dict(answered)


# -------------------------------------------------------------------------------------------
# DNS targets


def test_hostname_target_is_resolved_and_used(gateway_factory, backend, http):
    address = f"localhost:{backend.port}"
    gw = gateway_factory(proxy_config({"app": {"targets": [address], "dns_ttl": "1s"}}, route()))
    for i in range(3):
        r = http.get(gw.url(f"/h{i}"))
        assert r.status_code == 200 and r.json()["backend"] == "backend"
    assert [q.target for q in backend.requests] == ["/h0", "/h1", "/h2"]
    log = gw.wait_access_log(3)
    assert all(e["target"] == address and e["upstream"] == "app" for e in log)
