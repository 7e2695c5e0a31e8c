"""The admin API (SPEC section 4) on its own listener: token, health, config view without secrets,
reload, upstream state, drain/undrain under load, cache purge."""

from __future__ import annotations

import json
import time

import requests

from conftest import HOST, free_port, proxy_config, wait_for

TOKEN = "admin-token-for-tests"


def with_admin(cfg: dict, token: str | None = TOKEN) -> tuple[dict, int]:
    port = free_port()
    cfg["admin"] = {"listen": f"{HOST}:{port}"}
    if token:
        cfg["admin"]["token"] = token
    return cfg, port


def admin_get(port, path, token=TOKEN, method="GET"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with requests.Session() as s:
        s.trust_env = False
        return s.request(method, f"http://{HOST}:{port}{path}", headers=headers, timeout=10)


def test_health_ready_and_token(gateway_factory, backend, http):
    cfg, port = with_admin(proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app"}]))
    gw = gateway_factory(cfg)
    assert admin_get(port, "/healthz").text == "ok\n"
    assert admin_get(port, "/ready").json()["ready"] is True
    for token in (None, "wrong"):
        r = admin_get(port, "/api/upstreams", token=token)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert admin_get(port, "/api/upstreams").status_code == 200
    assert admin_get(port, "/nope").status_code == 404
    r = admin_get(port, "/api/reload", method="GET")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    # the admin API is not on the public listener: there it is just a path of the routes
    r = http.get(gw.url("/api/upstreams"), headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.json().get("backend") == "backend"  # proxied to the app like any path
    gw.wait_error_log("refused: wrong token")


def test_config_view_has_no_secrets(gateway_factory, backend):
    cfg, port = with_admin(proxy_config(
        {"app": [backend]}, [{"name": "main", "match": {"path": "/"}, "upstream": "app", "auth": "jwt"}],
        auth={"jwt": {"jwt": {"secret": "a-very-secret-hmac-key-of-32-bytes!!", "algorithms": ["HS256"]}}},
        consumers=[{"name": "alice", "api_keys": ["key:plain-api-key"]}]))
    gateway_factory(cfg)
    r = admin_get(port, "/api/config")
    assert r.status_code == 200
    view = r.json()
    assert view["routes"] == ["main"] and view["upstreams"][0]["name"] == "app"
    assert len(view["checksum"]) == 16
    for secret in (TOKEN, "a-very-secret-hmac-key", "plain-api-key"):
        assert secret not in r.text


def test_reload_through_the_api(gateway_factory, backend, http):
    cfg, port = with_admin(proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app"}]))
    gw = gateway_factory(cfg)
    before = admin_get(port, "/api/config").json()["checksum"]
    cfg = json.loads(gw.config_path.read_text())  # (with the listener the factory added)
    cfg["routes"].insert(0, {"match": {"path_exact": "/hello"}, "respond": {"status": 200, "body": "hi"}})
    gw.write_config(cfg)
    r = admin_get(port, "/api/reload", method="POST")
    assert r.status_code == 200 and r.json()["ok"] is True
    assert r.json()["checksum"] != before
    assert http.get(gw.url("/hello")).text == "hi"
    # a broken file: 400 with every error, and the running config keeps serving
    gw.config_path.write_text(gw.config_path.read_text().replace('"upstream": "app"', '"upstream": "nope"'))
    r = admin_get(port, "/api/reload", method="POST")
    assert r.status_code == 400 and r.json()["ok"] is False
    assert any("unknown upstream 'nope'" in e and f"{gw.config_path}:" in e for e in r.json()["errors"])
    assert http.get(gw.url("/hello")).text == "hi"
    assert http.get(gw.url("/x")).status_code == 200


def test_drain_moves_traffic_away_without_failures(gateway_factory, backend_factory, client_load):
    a, b = backend_factory("a"), backend_factory("b")
    cfg, port = with_admin(proxy_config({"app": [a, b]}, [{"match": {"path": "/"}, "upstream": "app"}]))
    gw = gateway_factory(cfg)
    load = client_load(gw, threads=4)
    load.wait_answered_by("b", 5)
    r = admin_get(port, f"/api/upstreams/app/targets/{b.address}/drain", method="POST")
    assert r.status_code == 200 and r.json()["drained"] is True
    state = {t["address"]: t for t in admin_get(port, "/api/upstreams").json()["upstreams"][0]["targets"]}
    assert state[b.address]["drained"] is True and state[b.address]["available"] is False
    time.sleep(0.2)  # requests already sent to b finish there
    drained_at = time.monotonic()
    load.run_for(1.0)
    assert load.answered_by("b", since=drained_at) == 0
    r = admin_get(port, f"/api/upstreams/app/targets/{b.address}/undrain", method="POST")
    assert r.json()["drained"] is False
    undrained_at = time.monotonic()
    load.wait_answered_by("b", 3, since=undrained_at)
    outcomes = load.stop()
    failed = [o for o in outcomes if not o.ok]
    assert not failed, failed[:3]
    assert admin_get(port, "/api/upstreams/app/targets/127.0.0.1:1/drain", method="POST").status_code == 404


def test_cache_purge_by_prefix(gateway_factory, backend):
    cfg, port = with_admin(proxy_config({"app": [backend]},
                                        [{"match": {"path": "/"}, "upstream": "app", "cache": {"ttl": "60s"}}]))
    gw = gateway_factory(cfg)
    with requests.Session() as s:
        s.trust_env = False
        for path in ("/products/1", "/products/2", "/users/1"):
            s.get(gw.url(path))
        assert s.get(gw.url("/products/1")).headers["x-cache"] == "HIT"
        r = admin_get(port, "/api/cache?prefix=/products", method="DELETE")
        assert r.status_code == 200 and r.json()["purged"] == 2
        assert s.get(gw.url("/products/1")).headers["x-cache"] == "MISS"
        assert s.get(gw.url("/users/1")).headers["x-cache"] == "HIT"
    assert admin_get(port, "/api/cache", method="DELETE").status_code == 400


def test_admin_listener_follows_reloads(gateway_factory, backend):
    cfg, port = with_admin(proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app"}]),
                           token=None)
    gw = gateway_factory(cfg)
    assert admin_get(port, "/healthz", token=None).status_code == 200
    new_port = free_port()
    cfg = json.loads(gw.config_path.read_text())
    cfg["admin"] = {"listen": f"{HOST}:{new_port}", "token": TOKEN}
    gw.reload(cfg)
    wait_for(lambda: admin_get(new_port, "/healthz").status_code == 200, 5, what="the moved admin listener")
    assert admin_get(new_port, "/api/upstreams", token=None).status_code == 401
    try:
        admin_get(port, "/healthz", token=None)
        raise AssertionError("the old admin port still answers")
    except requests.ConnectionError:
        pass


def test_explain_answers_a_table_of_requests(gateway_factory, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    cfg, port = with_admin(proxy_config(
        {"app": {"targets": [a.address, b.address], "balance": "maglev", "hash_on": "header:x-user"}},
        [{"name": "health", "match": {"path_exact": "/healthz"}, "respond": {"status": 200}},
         {"name": "admin-only", "match": {"path": "/admin", "methods": ["POST"]}, "upstream": "app",
          "auth": "keys", "allow": {"groups": ["staff"]}},
         {"name": "blocked", "match": {"path": "/blocked"}, "respond": {"status": 200},
          "deny": {"ips": ["10.0.0.0/8"]}},
         {"name": "api", "match": {"path": "/api", "host": ["api.test"]}, "upstream": "app",
          "rate_limit": [{"key": "ip", "rate": "10/min"}], "cache": {"ttl": "10s"}}],
        consumers=[{"name": "alice", "groups": ["staff"], "api_keys": ["key:alice-key"]},
                   {"name": "bob", "api_keys": ["key:bob-key"]}],
        auth={"keys": {"api_key": {"header": "x-api-key"}}}))
    gateway_factory(cfg)

    def explain(**req):
        r = admin_get_json(port, "/api/explain", req)
        assert r.status_code == 200, r.text
        return r.json()

    table = [
        ({"method": "GET", "url": "/healthz"},
         {"outcome": "matched", "route": "health", "status": 200}),
        ({"method": "GET", "url": "/nothing"},
         {"outcome": "not_found", "status": 404}),
        ({"method": "GET", "url": "/admin/x"},
         {"outcome": "method_not_allowed", "status": 405, "allow": "POST"}),
        ({"method": "POST", "url": "/admin/x", "headers": {"x-api-key": "alice-key", "x-user": "u1"}},
         {"outcome": "matched", "route": "admin-only", "consumer": "alice", "upstream": "app"}),
        ({"method": "POST", "url": "/admin/x", "headers": {"x-api-key": "bob-key"}},
         {"outcome": "matched", "route": "admin-only", "consumer": "bob"}),
        ({"method": "POST", "url": "/admin/x"},
         {"outcome": "matched", "route": "admin-only", "consumer": None}),
        ({"method": "GET", "url": "/blocked", "client_ip": "10.1.1.1"},
         {"outcome": "matched", "route": "blocked"}),
        ({"method": "GET", "url": "http://api.test/api/items?x=1", "headers": {"x-user": "u1"}},
         {"outcome": "matched", "route": "api", "upstream": "app", "hash_key": "u1"}),
    ]
    for request, expected in table:
        got = explain(**request)
        for key, value in expected.items():
            assert got.get(key) == value, (request, key, got)
    # why the earlier routes did not match
    got = explain(method="GET", url="http://api.test/api/items")
    assert [(r["route"], r["matches"], r.get("failed")) for r in got["routes"]] == [
        ("health", False, "path"), ("admin-only", False, "path"), ("blocked", False, "path"), ("api", True, None)]
    # policy verdicts: bob is authenticated but not in staff -> allow refuses; no key -> 401
    bob = explain(method="POST", url="/admin/x", headers={"x-api-key": "bob-key"})
    assert [(p["policy"], p["verdict"]) for p in bob["policies"]] == [("auth", "pass"), ("allow", 403)]
    anon = explain(method="POST", url="/admin/x")
    assert anon["policies"][0]["policy"] == "auth" and anon["policies"][0]["verdict"] == 401
    blocked = explain(method="GET", url="/blocked", client_ip="10.1.1.1")
    assert blocked["policies"][0]["verdict"] == 403
    api = explain(method="GET", url="http://api.test/api/items", headers={"x-user": "u1"})
    limit = api["policies"][0]["limits"][0]
    assert limit["allowed"] is True and limit["remaining"] == 9 and limit["bucket"] == "127.0.0.1"
    assert api["cache"]["entry"] == "none"
    # the hash balancer's answer is stable and is one of the targets; explain sends nothing
    assert api["target"] in (a.address, b.address)
    assert explain(method="GET", url="http://api.test/api/items", headers={"x-user": "u1"})["target"] == api["target"]
    assert a.requests == [] and b.requests == []
    # a drained target is reported unavailable and never picked
    admin_get(port, f"/api/upstreams/app/targets/{api['target']}/drain", method="POST")
    again = explain(method="GET", url="http://api.test/api/items", headers={"x-user": "u1"})
    assert again["target"] != api["target"]
    assert again["unavailable"] == [{"target": api["target"], "why": "drained"}]
    assert admin_get_json(port, "/api/explain", "not json", raw=True).status_code == 400


def admin_get_json(port, path, body, token=TOKEN, raw=False):
    with requests.Session() as s:
        s.trust_env = False
        return s.post(f"http://{HOST}:{port}{path}", data=body if raw else json.dumps(body),
                      headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_sluice_trace_for_admin_token_holders_only(gateway_factory, backend, http):
    cfg, port = with_admin(proxy_config(
        {"app": [backend]},
        [{"name": "local", "match": {"path": "/local"}, "respond": {"status": 200, "body": "x"}},
         {"name": "keyed", "match": {"path": "/keyed"}, "upstream": "app", "auth": "keys"},
         {"name": "main", "match": {"path": "/"}, "upstream": "app"}],
        consumers=[{"name": "alice", "api_keys": ["key:alice-key"]}],
        auth={"keys": {"api_key": {"header": "x-api-key"}}}))
    gw = gateway_factory(cfg)
    r = http.get(gw.url("/p"), headers={"x-sluice-trace": TOKEN})
    trace = r.headers["sluice-trace"]
    assert trace.startswith("route=main") and f"target={backend.address}" in trace
    assert "attempts=1" in trace and "total_ms=" in trace
    # never forwarded upstream (it carries the admin token)
    assert backend.last.header("x-sluice-trace") is None
    # a refusal shows the policy that refused
    r = http.get(gw.url("/keyed"), headers={"x-sluice-trace": TOKEN})
    assert r.status_code == 401 and "auth=401" in r.headers["sluice-trace"]
    r = http.get(gw.url("/keyed"), headers={"x-sluice-trace": TOKEN, "x-api-key": "alice-key"})
    assert "auth=pass" in r.headers["sluice-trace"]
    assert "route=local" in http.get(gw.url("/local"), headers={"x-sluice-trace": TOKEN}).headers["sluice-trace"]
    # anyone else's value is ignored
    for value in ("guess", TOKEN + "x", ""):
        r = http.get(gw.url("/p"), headers={"x-sluice-trace": value})
        assert "sluice-trace" not in r.headers
    assert backend.last.header("x-sluice-trace") is None


def test_explain_names_websocket_and_transform_handling(gateway_factory, backend):
    cfg, port = with_admin(proxy_config(
        {"app": [backend]},
        [{"name": "live", "match": {"path": "/live"}, "upstream": "app", "websocket": True},
         {"name": "rpc", "match": {"path": "/rpc"}, "upstream": "app",
          "websocket_bridge": {"method": "PUT", "max_in_flight": 4}},
         {"name": "legacy", "match": {"path": "/legacy"}, "upstream": "app",
          "transform": {"response": "json_to_xml"}}]))
    gateway_factory(cfg)
    upgrade = {"upgrade": "websocket", "connection": "Upgrade"}
    live = admin_get_json(port, "/api/explain", {"method": "GET", "url": "/live", "headers": upgrade}).json()
    assert live["websocket"] == {"mode": "passthrough", "upgrade_requested": True}
    rpc = admin_get_json(port, "/api/explain", {"method": "GET", "url": "/rpc"}).json()
    assert rpc["websocket"] == {"mode": "bridge", "upgrade_requested": False, "method": "PUT", "max_in_flight": 4}
    legacy = admin_get_json(port, "/api/explain", {"method": "GET", "url": "/legacy"}).json()
    assert legacy["transform"] == {"request": None, "response": "json_to_xml"} and "websocket" not in legacy
