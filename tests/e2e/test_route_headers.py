"""Route `headers` (SPEC section 2): request set/remove as seen by the backend, response
set/remove as seen by the client."""

from conftest import Reply, proxy_config


def test_route_header_operations_apply_to_request_and_response(gateway_factory, backend, http):
    backend.handler = lambda req: Reply(200, [("Server", "backend/1.0"), ("X-Internal", "secret"),
                                              ("X-Frame-Options", "SAMEORIGIN"), ("X-Kept", "yes")], b"ok")
    gw = gateway_factory(proxy_config({"app": [backend]}, [{
        "match": {"path": "/"}, "upstream": "app",
        "headers": {
            "request": {"set": {"x-gateway": "sluice", "x-env": "test"}, "remove": ["cookie", "x-debug"]},
            "response": {"set": {"x-frame-options": "DENY"}, "remove": ["server", "x-internal"]},
        }}]))
    r = http.get(gw.url("/p"), headers={"Cookie": "session=1", "X-Debug": "1", "X-Gateway": "spoofed",
                                        "X-Other": "stays"})
    assert r.status_code == 200 and r.text == "ok"

    seen = backend.last
    assert seen.header_all("x-gateway") == ["sluice"]
    assert seen.header_all("x-env") == ["test"]
    assert not seen.has_header("cookie")
    assert not seen.has_header("x-debug")
    assert seen.header("x-other") == "stays"

    assert r.headers.get("x-frame-options") == "DENY"
    assert "server" not in r.headers
    assert "x-internal" not in r.headers
    assert r.headers.get("x-kept") == "yes"
    assert r.raw.headers.getlist("x-frame-options") == ["DENY"]
