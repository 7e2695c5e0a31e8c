"""Headers the gateway adds or removes on the way to the backend and back (SPEC section 3:
request id, traceparent, proxy headers, hop-by-hop headers in both directions)."""

import re

import pytest

from conftest import RawClient, Reply, raw_request

TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"


def test_forwarding_headers_describe_the_client_and_append_to_existing_ones(proxy):
    gw, backend = proxy
    r = raw_request(gw.port, (
        b"GET /p HTTP/1.1\r\nHost: shop.example.com\r\n"
        b"X-Forwarded-For: 203.0.113.7\r\n"
        b"Forwarded: for=203.0.113.7;proto=https\r\n"
        b"Via: 1.1 edge\r\n\r\n"))
    assert r.status == 200
    seen = backend.last
    assert seen.header_all("x-forwarded-for") == ["203.0.113.7, 127.0.0.1"]
    assert seen.header_all("x-forwarded-proto") == ["http"]
    assert seen.header_all("x-forwarded-host") == ["shop.example.com"]
    forwarded = ", ".join(seen.header_all("forwarded"))
    elements = [e.strip() for e in forwarded.split(",")]
    assert elements[0] == "for=203.0.113.7;proto=https", forwarded
    last = dict(p.split("=", 1) for p in elements[-1].split(";"))
    assert last["for"] in ("127.0.0.1", '"127.0.0.1"')
    assert last["proto"] == "http"
    assert last["host"].strip('"') == "shop.example.com"
    via = ", ".join(seen.header_all("via"))
    hops = [h.strip() for h in via.split(",")]
    assert hops[0] == "1.1 edge" and len(hops) == 2 and hops[1].startswith("1.1 "), via
    assert seen.header_all("host") == ["shop.example.com"]


def test_forwarding_headers_are_added_when_the_client_sent_none(proxy, http):
    gw, backend = proxy
    assert http.get(gw.url("/")).status_code == 200
    seen = backend.last
    assert seen.header_all("x-forwarded-for") == ["127.0.0.1"]
    assert seen.header("forwarded").startswith("for=")
    assert seen.header("via").startswith("1.1 ")


def test_request_id_is_generated_and_the_same_at_backend_and_client(proxy, http):
    gw, backend = proxy
    r = http.get(gw.url("/"))
    rid = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9A-Za-z._-]{8,200}", rid)
    assert backend.last.header_all("x-request-id") == [rid]
    r2 = http.get(gw.url("/"))
    assert r2.headers["x-request-id"] != rid


def test_valid_client_request_id_is_kept(proxy, http):
    gw, backend = proxy
    r = http.get(gw.url("/"), headers={"X-Request-Id": "client-abc-123"})
    assert r.headers["x-request-id"] == "client-abc-123"
    assert backend.last.header_all("x-request-id") == ["client-abc-123"]


@pytest.mark.parametrize("bad", ["has space", "x" * 1024, "quote\"s", "semi;colon"])
def test_invalid_client_request_id_is_replaced(proxy, bad):
    gw, backend = proxy
    r = raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: " + bad.encode() + b"\r\n\r\n")
    assert r.status == 200
    rid = r.header("x-request-id")
    assert rid and rid != bad
    assert backend.last.header_all("x-request-id") == [rid]


def test_traceparent_is_continued_with_the_same_trace_id_and_a_new_parent_id(proxy, http):
    gw, backend = proxy
    sent = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"
    assert http.get(gw.url("/"), headers={"traceparent": sent}).status_code == 200
    got = backend.last.header_all("traceparent")
    assert len(got) == 1, got
    m = TRACEPARENT_RE.match(got[0])
    assert m, got[0]
    assert m.group(1) == CLIENT_TRACE
    assert m.group(2) != CLIENT_PARENT and m.group(2) != "0" * 16
    assert m.group(3) == "01"


def test_traceparent_is_started_when_absent_or_invalid(proxy, http):
    gw, backend = proxy
    for headers in ({}, {"traceparent": "00-" + "0" * 32 + "-" + CLIENT_PARENT + "-01"}, {"traceparent": "garbage"}):
        assert http.get(gw.url("/"), headers=headers).status_code == 200
        got = backend.last.header_all("traceparent")
        assert len(got) == 1
        m = TRACEPARENT_RE.match(got[0])
        assert m, got[0]
        assert m.group(1) != "0" * 32 and m.group(2) != "0" * 16


def test_access_log_trace_id_is_the_forwarded_trace_id(proxy, http):
    gw, backend = proxy
    http.get(gw.url("/"), headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"})
    entry = gw.wait_access_log(1)[-1]
    assert entry["trace_id"] == CLIENT_TRACE
    assert entry["request_id"] == backend.last.header("x-request-id")


def test_hop_by_hop_request_headers_are_not_forwarded(proxy):
    gw, backend = proxy
    r = raw_request(gw.port, (
        b"GET /h HTTP/1.1\r\nHost: a\r\n"
        b"Connection: keep-alive, X-Hop-One, x-hop-two\r\n"
        b"X-Hop-One: 1\r\nX-Hop-Two: 2\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: foo/1\r\n"
        b"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\n"
        b"X-End-To-End: kept\r\n\r\n"))
    assert r.status == 200
    seen = backend.last
    for name in ("x-hop-one", "x-hop-two", "keep-alive", "te", "upgrade", "proxy-connection"):
        assert not seen.has_header(name), f"{name} reached the backend: {seen.headers}"
    for value in seen.header_all("connection"):
        assert "x-hop" not in value.lower()
    assert seen.header("x-end-to-end") == "kept"


def test_hop_by_hop_response_headers_are_not_returned_to_the_client(proxy):
    gw, backend = proxy
    backend.handler = lambda req: Reply(200, [
        ("Connection", "X-Backend-Hop"), ("X-Backend-Hop", "1"), ("Keep-Alive", "timeout=99"),
        ("Proxy-Connection", "keep-alive"), ("X-End-To-End", "kept")], b"body")
    with RawClient(gw.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        r = c.read_response()
    assert r.status == 200 and r.body == b"body"
    names = {k.lower() for k, _ in r.headers}
    assert "x-backend-hop" not in names
    assert "proxy-connection" not in names
    assert r.header("keep-alive") != "timeout=99"
    assert "x-backend-hop" not in (r.header("connection") or "").lower()
    assert r.header("x-end-to-end") == "kept"


def test_repeated_headers_are_forwarded_as_they_came_in_both_directions(proxy):
    gw, backend = proxy
    backend.handler = lambda req: Reply(200, [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/"),
                                              ("Cache-Control", "no-cache")], b"ok")
    r = raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Multi: one\r\nX-Multi: two\r\n"
                             b"Accept: text/html\r\nAccept: application/json\r\n\r\n")
    assert r.header_all("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert r.header("cache-control") == "no-cache"
    seen = backend.last
    assert ", ".join(seen.header_all("x-multi")) == "one, two"
    assert ", ".join(seen.header_all("accept")) == "text/html, application/json"
