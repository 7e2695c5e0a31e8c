"""Path normalisation before routing (SPEC section 3): dot-segments removed, percent-encoding
checked, and a path that climbs above the root refused."""

import json

import pytest

from conftest import RawClient, proxy_config, raw_request


def get(port, target: bytes):
    return raw_request(port, b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")


@pytest.mark.parametrize("sent, seen", [
    (b"/a/./b/../c", "/a/c"),
    (b"/a/b/..", "/a/"),
    (b"/./x", "/x"),
    (b"/a/./b/../c?q=/../x", "/a/c?q=/../x"),   # the query is not a path
])
def test_dot_segments_are_removed_before_forwarding(proxy, sent, seen):
    gw, backend = proxy
    r = get(gw.port, sent)
    assert r.status == 200
    assert backend.last.target == seen


@pytest.mark.parametrize("target", [b"/..", b"/../etc/passwd", b"/a/../../b", b"/a/./../.."])
def test_path_climbing_above_the_root_is_rejected_with_400(proxy, target):
    gw, backend = proxy
    r = get(gw.port, target)
    assert r.status == 400
    body = json.loads(r.body)
    assert body["status"] == 400 and body["request_id"] == r.header("x-request-id")
    assert backend.heads_seen == 0


@pytest.mark.parametrize("target", [b"/a%zz", b"/a%2", b"/%"])
def test_malformed_percent_encoding_is_rejected_with_400(proxy, target):
    gw, backend = proxy
    assert get(gw.port, target).status == 400
    assert backend.heads_seen == 0


def test_routing_uses_the_normalised_path(gateway_factory, backend_factory):
    admin, public = backend_factory("admin"), backend_factory("public")
    gw = gateway_factory(proxy_config({"admin": [admin], "public": [public]},
                                      [{"match": {"path": "/admin"}, "upstream": "admin"},
                                       {"match": {"path": "/"}, "upstream": "public"}]))
    with RawClient(gw.port) as c:
        c.send(b"GET /public/../admin/x HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.read_response().status == 200
        c.send(b"GET /admin/../public/y HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.read_response().status == 200
    assert [r.target for r in admin.requests] == ["/admin/x"]
    assert [r.target for r in public.requests] == ["/public/y"]


def test_percent_encoded_bytes_and_the_query_reach_the_backend_unchanged(proxy):
    gw, backend = proxy
    target = b"/files/a%2Fb%20c/%E2%82%AC?q=a%26b&empty=&x=%2F..%2F"
    assert get(gw.port, target).status == 200
    assert backend.last.target == target.decode()
