"""Route `cache` (issue 5): a process-wide response cache with RFC 9111 rules, Vary, credentials,
HEAD from GET, x-cache/age, request coalescing and stale_if_error."""

from __future__ import annotations

import concurrent.futures
import hashlib
import time

import requests

from conftest import Reply, proxy_config


def cache_config(backend, route_cache=None, route_extra=None, **extra):
    """A caching route in front of `backend`; `extra` adds top-level keys (e.g. cache=max_size)."""
    route = {"match": {"path": "/"}, "upstream": "app",
             "cache": route_cache if route_cache is not None else {"ttl": "60s"}}
    route.update(route_extra or {})
    cfg = proxy_config({"app": [backend]}, [route], **extra)
    cfg["workers"] = 2
    return cfg


def reply(body=b"hello", headers=(), status=200, delay=0.0):
    return lambda req: Reply(status, [("Content-Type", "text/plain"), *headers], body, delay=delay)


def test_miss_then_hit_with_age_and_log(gateway_factory, backend, http):
    backend.handler = reply(b"cached body")
    gw = gateway_factory(cache_config(backend))
    r1 = http.get(gw.url("/a?x=1"))
    assert r1.status_code == 200 and r1.text == "cached body"
    assert r1.headers["x-cache"] == "MISS"
    r2 = http.get(gw.url("/a?x=1"))
    assert r2.text == "cached body" and r2.headers["x-cache"] == "HIT"
    assert int(r2.headers["age"]) >= 0
    assert r2.headers["content-type"] == "text/plain"
    assert len(backend.requests) == 1
    # the query is part of the key
    assert http.get(gw.url("/a?x=2")).headers["x-cache"] == "MISS"
    assert len(backend.requests) == 2
    assert [e["cache"] for e in gw.wait_access_log(3)] == ["miss", "hit", "miss"]


def test_head_is_answered_from_a_get_entry(gateway_factory, backend, http):
    backend.handler = reply(b"x" * 1000)
    gw = gateway_factory(cache_config(backend))
    http.get(gw.url("/h"))
    r = http.head(gw.url("/h"))
    assert r.status_code == 200 and r.headers["x-cache"] == "HIT"
    assert r.headers["content-length"] == "1000" and r.content == b""
    assert len(backend.requests) == 1


def test_ttl_expires(gateway_factory, backend, http):
    gw = gateway_factory(cache_config(backend, {"ttl": "1s"}))
    http.get(gw.url("/t"))
    assert http.get(gw.url("/t")).headers["x-cache"] == "HIT"
    time.sleep(1.2)
    assert http.get(gw.url("/t")).headers["x-cache"] == "MISS"
    assert len(backend.requests) == 2


def test_upstream_cache_control_is_honoured(gateway_factory, backend, http):
    rules = {
        "/no-store": [("Cache-Control", "no-store")],
        "/private": [("Cache-Control", "private, max-age=60")],
        "/no-cache": [("Cache-Control", "no-cache")],
        "/max-age-0": [("Cache-Control", "max-age=0")],
        "/set-cookie": [("Set-Cookie", "a=b")],
        "/vary-star": [("Vary", "*")],
        "/short": [("Cache-Control", "max-age=1")],
        "/s-maxage": [("Cache-Control", "max-age=1, s-maxage=60")],
    }
    backend.handler = lambda req: Reply(200, rules.get(req.path, []), b"body")
    gw = gateway_factory(cache_config(backend, {"ttl": "60s"}))
    for path in ("/no-store", "/private", "/no-cache", "/max-age-0", "/set-cookie", "/vary-star"):
        assert [http.get(gw.url(path)).headers["x-cache"] for _ in range(2)] == ["MISS", "MISS"], path
    assert [http.get(gw.url("/s-maxage")).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert [http.get(gw.url("/short")).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    time.sleep(1.2)
    assert http.get(gw.url("/short")).headers["x-cache"] == "MISS"  # max-age=1 beat the route's 60s
    assert http.get(gw.url("/s-maxage")).headers["x-cache"] == "HIT"  # s-maxage=60 beat max-age=1


def test_errors_and_partial_statuses_are_not_cached(gateway_factory, backend, http):
    statuses = {"/500": 500, "/302": 302, "/404": 404}
    backend.handler = lambda req: Reply(statuses[req.path], [("Location", "/x")] if req.path == "/302" else [], b"s")
    gw = gateway_factory(cache_config(backend))
    for path in ("/500", "/302"):
        assert [http.get(gw.url(path), allow_redirects=False).headers["x-cache"] for _ in range(2)] == ["MISS", "MISS"]
    assert [http.get(gw.url("/404")).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]


def test_client_cache_control(gateway_factory, backend, http):
    gw = gateway_factory(cache_config(backend))
    http.get(gw.url("/c"))
    assert http.get(gw.url("/c")).headers["x-cache"] == "HIT"
    # no-cache: goes upstream, and refreshes the entry
    r = http.get(gw.url("/c"), headers={"Cache-Control": "no-cache"})
    assert r.headers["x-cache"] == "MISS" and len(backend.requests) == 2
    r = http.get(gw.url("/c"), headers={"Pragma": "no-cache"})
    assert r.headers["x-cache"] == "MISS" and len(backend.requests) == 3
    # no-store: bypasses the cache entirely
    assert http.get(gw.url("/fresh"), headers={"Cache-Control": "no-store"}).headers["x-cache"] == "MISS"
    assert http.get(gw.url("/fresh")).headers["x-cache"] == "MISS"  # nothing was stored
    time.sleep(1.1)
    # max-age=0: an entry older than 0 s will not do
    assert http.get(gw.url("/c"), headers={"Cache-Control": "max-age=0"}).headers["x-cache"] == "MISS"
    assert http.get(gw.url("/c")).headers["x-cache"] == "HIT"


def test_vary_keeps_variants_apart(gateway_factory, backend, http):
    backend.handler = lambda req: Reply(200, [("Vary", "X-Lang")],
                                        f"{req.header('accept')}|{req.header('x-lang')}".encode())
    gw = gateway_factory(cache_config(backend, {"ttl": "60s", "vary": ["accept"]}))
    combos = [("application/json", "en"), ("application/xml", "en"), ("application/json", "fr")]
    for accept, lang in combos:
        r = http.get(gw.url("/v"), headers={"Accept": accept, "X-Lang": lang})
        assert r.headers["x-cache"] == "MISS" and r.text == f"{accept}|{lang}"
    for accept, lang in combos:
        r = http.get(gw.url("/v"), headers={"Accept": accept, "X-Lang": lang})
        assert r.headers["x-cache"] == "HIT" and r.text == f"{accept}|{lang}"
    assert len(backend.requests) == 3


def test_credentials_are_not_cached_unless_per_consumer(gateway_factory, backend, http):
    keys = {"alice": "alice-key", "bob": "bob-key"}
    consumers = [{"name": n, "api_keys": ["sha256:" + hashlib.sha256(k.encode()).hexdigest()]}
                 for n, k in keys.items()]
    auth = {"keys": {"api_key": {"header": "x-api-key"}}}
    backend.handler = lambda req: Reply(200, [], req.header("x-forwarded-for").encode())
    gw = gateway_factory(cache_config(backend, {"ttl": "60s"}, route_extra={"auth": "keys"},
                                      consumers=consumers, auth=auth))
    for _ in range(2):
        assert http.get(gw.url("/me"), headers={"x-api-key": keys["alice"]}).headers["x-cache"] == "MISS"
    assert http.get(gw.url("/me"), headers={"Authorization": "Bearer x", "x-api-key": keys["bob"]}).headers["x-cache"] == "MISS"
    per = gateway_factory(cache_config(backend, {"ttl": "60s", "per_consumer": True},
                                       route_extra={"auth": "keys"}, consumers=consumers, auth=auth))
    seen = [http.get(per.url("/me"), headers={"x-api-key": keys[n]}).headers["x-cache"]
            for n in ("alice", "alice", "bob", "bob")]
    assert seen == ["MISS", "HIT", "MISS", "HIT"]


def test_concurrent_misses_make_one_upstream_request(gateway_factory, backend):
    backend.handler = reply(b"slow body", delay=0.5)
    gw = gateway_factory(cache_config(backend))

    def get(_):
        with requests.Session() as s:
            s.trust_env = False
            r = s.get(gw.url("/coalesce"), timeout=10)
            return r.status_code, r.text, r.headers["x-cache"]

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(get, range(50)))
    assert all(status == 200 and body == "slow body" for status, body, _ in results), results
    assert len(backend.requests) == 1
    assert sorted(x for _, _, x in results).count("MISS") == 1


def test_stale_if_error_survives_a_backend_outage(gateway_factory, backend_factory, http):
    b = backend_factory("origin")
    b.handler = reply(b"last good")
    gw = gateway_factory(cache_config(b, {"ttl": "1s", "stale_if_error": "30s"}))
    assert http.get(gw.url("/s")).headers["x-cache"] == "MISS"
    time.sleep(1.2)
    # the upstream answers 503: the stale entry is served instead
    b.handler = reply(b"oops", status=503)
    r = http.get(gw.url("/s"))
    assert r.status_code == 200 and r.text == "last good" and r.headers["x-cache"] == "STALE"
    # the upstream is gone: still the stale entry
    b.stop()
    r = http.get(gw.url("/s"))
    assert r.status_code == 200 and r.text == "last good" and r.headers["x-cache"] == "STALE"
    assert gw.wait_access_log(3)[-1]["cache"] == "stale"
    # a path never cached gets the error
    assert http.get(gw.url("/never")).status_code == 502


def test_without_stale_if_error_an_outage_is_an_error(gateway_factory, backend_factory, http):
    b = backend_factory("origin")
    gw = gateway_factory(cache_config(b, {"ttl": "1s"}))
    http.get(gw.url("/s"))
    time.sleep(1.2)
    b.stop()
    assert http.get(gw.url("/s")).status_code == 502


def test_large_bodies_stream_without_being_cached(gateway_factory, backend, http):
    backend.handler = lambda req: Reply(200, [], b"z" * (3 * 1024 * 1024))
    gw = gateway_factory(cache_config(backend, {"ttl": "60s"}, cache={"max_size": "8MiB"}))
    for _ in range(2):
        r = http.get(gw.url("/big"))
        assert r.status_code == 200 and len(r.content) == 3 * 1024 * 1024
        assert r.headers["x-cache"] == "MISS"
    assert len(backend.requests) == 2


def test_reload_keeps_the_cache(gateway_factory, backend, http):
    gw = gateway_factory(cache_config(backend))
    http.get(gw.url("/r"))
    gw.reload()
    assert http.get(gw.url("/r")).headers["x-cache"] == "HIT"
