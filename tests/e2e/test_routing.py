"""Route matching (SPEC section 2 `routes`, section 3 404/405): which route a request reaches is
checked at the backend that route points to, and that no other backend saw it."""

import pytest

from conftest import base_config, free_port, proxy_config

# route name -> its match; each route forwards to its own backend of the same name.
ROUTES = [
    ("exact_host", {"host": "api.example.com", "path": "/"}),
    ("wild_host", {"host": ["*.example.org"], "path": "/"}),
    ("health", {"path_exact": "/health"}),
    ("regex", {"path_regex": "^/v[0-9]+/items$"}),
    ("template", {"path": "/users/{id}/orders"}),
    ("products_read", {"path": "/products", "methods": ["GET", "HEAD"]}),
    ("products_write", {"path": "/products", "methods": ["POST"]}),
    ("headers", {"path": "/hdr", "headers": {"x-version": "2", "x-beta": "present", "x-tenant": "~^acme-"}}),
    ("query", {"path": "/q", "query": {"preview": "1"}}),
    ("first", {"path": "/first"}),
    ("second", {"path": "/first/second"}),
]


@pytest.fixture
def routed(gateway_factory, backend_factory):
    backends = {name: backend_factory(name) for name, _ in ROUTES}
    routes = [{"name": name, "match": match, "upstream": name} for name, match in ROUTES]
    gw = gateway_factory(proxy_config({name: [b] for name, b in backends.items()}, routes))
    return gw, backends


def only_backend_hit(backends, name):
    hits = {n: len(b.requests) for n, b in backends.items() if b.requests}
    assert hits == {name: 1}, f"expected exactly one request at {name}, got {hits}"
    return backends[name].last


@pytest.mark.parametrize(
    "method, host, target, headers, route",
    [
        ("GET", "api.example.com", "/anything", {}, "exact_host"),
        ("GET", "API.example.com:8080", "/x", {}, "exact_host"),
        ("GET", "shop.example.org", "/x", {}, "wild_host"),
        ("GET", "a.b.example.org", "/x", {}, "wild_host"),
        ("GET", "other.test", "/health", {}, "health"),
        ("GET", "other.test", "/v2/items", {}, "regex"),
        ("GET", "other.test", "/users/42/orders", {}, "template"),
        ("GET", "other.test", "/products", {}, "products_read"),
        ("GET", "other.test", "/products/1", {}, "products_read"),
        ("HEAD", "other.test", "/products/1", {}, "products_read"),
        ("POST", "other.test", "/products", {}, "products_write"),
        ("GET", "other.test", "/hdr", {"x-version": "2", "x-beta": "", "x-tenant": "acme-eu"}, "headers"),
        ("GET", "other.test", "/q?preview=1&x=2", {}, "query"),
        ("GET", "other.test", "/first/second", {}, "first"),
    ],
)
def test_request_reaches_the_first_matching_route(routed, http, method, host, target, headers, route):
    gw, backends = routed
    r = http.request(method, gw.url(target), headers={"Host": host, **headers}, allow_redirects=False)
    assert r.status_code == 200, r.text
    seen = only_backend_hit(backends, route)
    assert seen.method == method
    assert seen.target == target
    if method != "HEAD":
        assert r.json()["backend"] == route


@pytest.mark.parametrize(
    "host, target, headers",
    [
        ("example.com", "/x", {}),                       # host is exact: no subdomain fallback
        ("example.org", "/x", {}),                       # *.example.org needs a subdomain
        ("other.test", "/healthz", {}),                  # path_exact is exact
        ("other.test", "/health/x", {}),
        ("other.test", "/v2/items/1", {}),               # regex anchored with $
        ("other.test", "/vx/items", {}),
        ("other.test", "/productsX", {}),                # prefix only on a segment boundary
        ("other.test", "/users/42", {}),                 # template needs every segment
        ("other.test", "/users//orders", {}),            # ... and a non-empty parameter
        ("other.test", "/hdr", {"x-version": "2", "x-tenant": "acme-eu"}),          # x-beta absent
        ("other.test", "/hdr", {"x-version": "3", "x-beta": "1", "x-tenant": "acme-eu"}),
        ("other.test", "/hdr", {"x-version": "2", "x-beta": "1", "x-tenant": "bigco"}),
        ("other.test", "/q?preview=0", {}),
        ("other.test", "/q", {}),
    ],
)
def test_request_matching_no_route_gets_404_json_and_reaches_no_backend(routed, http, host, target, headers):
    gw, backends = routed
    r = http.get(gw.url(target), headers={"Host": host, **headers})
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["status"] == 404
    assert isinstance(body["error"], str) and body["error"]
    assert body["request_id"] == r.headers["x-request-id"]
    assert all(not b.requests for b in backends.values())


def test_method_not_matching_any_route_gets_405_with_allow_listing_the_methods_that_would_match(routed, http):
    gw, backends = routed
    r = http.put(gw.url("/products/9"), headers={"Host": "other.test"}, data=b"x")
    assert r.status_code == 405, r.text
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD", "POST"}
    body = r.json()
    assert body["status"] == 405 and body["error"] and body["request_id"] == r.headers["x-request-id"]
    assert all(not b.requests for b in backends.values())


def test_405_is_not_given_when_a_later_route_without_methods_matches(gateway_factory, backend_factory, http):
    only_get, fallback = backend_factory("only_get"), backend_factory("fallback")
    gw = gateway_factory(proxy_config(
        {"only_get": [only_get], "fallback": [fallback]},
        [{"match": {"path": "/api", "methods": ["GET"]}, "upstream": "only_get"},
         {"match": {"path": "/"}, "upstream": "fallback"}]))
    r = http.delete(gw.url("/api/x"))
    assert r.status_code == 200
    assert fallback.last.method == "DELETE" and fallback.last.target == "/api/x"
    assert not only_get.requests


def test_respond_and_redirect_routes_answer_without_an_upstream(gateway_factory, backend, http):
    gw = gateway_factory(proxy_config(
        {"app": [backend]},
        [{"match": {"path_exact": "/hello"},
          "respond": {"status": 201, "body": "hi there", "headers": {"content-type": "text/plain"}}},
         {"match": {"path": "/old"}, "redirect": {"to": "https://example.com/new", "status": 301}},
         {"match": {"path": "/"}, "upstream": "app"}]))
    r = http.get(gw.url("/hello"))
    assert (r.status_code, r.text, r.headers["content-type"]) == (201, "hi there", "text/plain")
    r = http.get(gw.url("/old/page"), allow_redirects=False)
    assert r.status_code == 301
    assert r.headers["location"] == "https://example.com/new"
    assert not backend.requests


def test_split_sends_traffic_to_each_upstream_by_weight(gateway_factory, backend_factory, http):
    v1, v2 = backend_factory("v1"), backend_factory("v2")
    gw = gateway_factory(proxy_config(
        {"v1": [v1], "v2": [v2]},
        [{"match": {"path": "/"}, "split": [{"upstream": "v1", "weight": 1}, {"upstream": "v2", "weight": 3}]}]))
    n = 400
    for i in range(n):
        assert http.get(gw.url(f"/s{i}")).status_code == 200
    # expected 100 / 300; the bounds are > 6 standard deviations wide
    assert 50 <= len(v1.requests) <= 150, len(v1.requests)
    assert len(v1.requests) + len(v2.requests) == n


def test_each_listener_serves_the_shared_route_table_and_is_named_in_the_log(gateway_factory, backend, http):
    p1, p2 = free_port(), free_port()
    cfg = base_config(p1, **proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app"}]))
    del cfg["listen"]
    cfg["listeners"] = [{"name": "public", "listen": f"127.0.0.1:{p1}"},
                        {"name": "internal", "listen": f"127.0.0.1:{p2}", "protocol": "http"}]
    gw = gateway_factory(cfg, port=p1)
    assert http.get(f"http://127.0.0.1:{p1}/one").status_code == 200
    assert http.get(f"http://127.0.0.1:{p2}/two").status_code == 200
    assert [r.target for r in backend.requests] == ["/one", "/two"]
    entries = gw.wait_access_log(2)
    assert [(e["listener"], e["path"]) for e in entries] == [("public", "/one"), ("internal", "/two")]
