"""Route `allow: {ips}` / `deny: {ips}` (SPEC section 2): CIDR rules on the client address,
IPv4 and IPv6; deny wins; a refused client gets 403 with the JSON error body and the backend
never sees the request."""

import socket

import pytest

from conftest import base_config, free_port, proxy_config


def route(**policy):
    return [{"match": {"path": "/"}, "upstream": "app", **policy}]


def assert_forbidden(r):
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["status"] == 403 and body["error"] == "forbidden"
    assert body["request_id"] == r.headers["x-request-id"]


def test_client_inside_the_allow_list_is_proxied(gateway_factory, backend, http):
    gw = gateway_factory(proxy_config({"app": [backend]}, route(allow={"ips": ["127.0.0.0/8", "10.0.0.0/8"]})))
    r = http.get(gw.url("/in"))
    assert r.status_code == 200
    assert backend.last.target == "/in"


def test_client_outside_the_allow_list_gets_403_and_never_reaches_the_backend(gateway_factory, backend, http):
    gw = gateway_factory(proxy_config({"app": [backend]}, route(allow={"ips": ["10.0.0.0/8", "2001:db8::/32"]})))
    assert_forbidden(http.get(gw.url("/out")))
    entry = gw.wait_access_log(1)[-1]
    assert entry["status"] == 403 and entry["error"] == "forbidden" and entry["route"]
    assert backend.requests == []


def test_denied_client_gets_403_even_when_also_allowed(gateway_factory, backend, http):
    gw = gateway_factory(proxy_config(
        {"app": [backend]}, route(allow={"ips": ["127.0.0.0/8"]}, deny={"ips": ["127.0.0.1"]})))
    assert_forbidden(http.get(gw.url("/x")))
    assert backend.requests == []


def test_deny_of_another_network_lets_the_client_through(gateway_factory, backend, http):
    gw = gateway_factory(proxy_config({"app": [backend]}, route(deny={"ips": ["203.0.113.0/24"]})))
    assert http.get(gw.url("/ok")).status_code == 200
    assert backend.last.target == "/ok"


def test_rules_apply_per_route(gateway_factory, backend, http):
    routes = [{"match": {"path": "/admin"}, "upstream": "app", "allow": {"ips": ["10.0.0.0/8"]}},
              {"match": {"path": "/"}, "upstream": "app"}]
    gw = gateway_factory(proxy_config({"app": [backend]}, routes))
    assert_forbidden(http.get(gw.url("/admin/x")))
    assert http.get(gw.url("/public")).status_code == 200
    assert [q.target for q in backend.requests] == ["/public"]


def _ipv6_loopback_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback on this host")
def test_ipv6_client_is_matched_against_ipv6_ranges(gateway_factory, backend, http):
    v4, v6 = free_port(), free_port()
    cfg = base_config(v4, **proxy_config({"app": [backend]}, [
        {"match": {"path": "/v6only"}, "upstream": "app", "allow": {"ips": ["::1"]}},
        {"match": {"path": "/no6"}, "upstream": "app", "deny": {"ips": ["::1/128"]}},
    ]))
    del cfg["listen"]
    cfg["listeners"] = [{"name": "v4", "listen": f"127.0.0.1:{v4}"}, {"name": "v6", "listen": f"[::1]:{v6}"}]
    gateway_factory(cfg, port=v4)
    assert http.get(f"http://[::1]:{v6}/v6only").status_code == 200        # ::1 is allowed
    assert_forbidden(http.get(f"http://127.0.0.1:{v4}/v6only"))             # 127.0.0.1 is not ::1
    assert_forbidden(http.get(f"http://[::1]:{v6}/no6"))
    assert http.get(f"http://127.0.0.1:{v4}/no6").status_code == 200
    assert sorted(q.target for q in backend.requests) == ["/no6", "/v6only"]
