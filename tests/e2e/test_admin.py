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
    assert "refused: wrong token" in "\n".join(gw.error_messages())


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
