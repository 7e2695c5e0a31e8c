"""HTTP/1.1 message framing through the gateway (SPEC section 3: bodies stream, RFC 9112):
Content-Length and chunked bodies both ways, HTTP/1.0 clients, pipelining, Expect: 100-continue."""

import json
import os

from conftest import RawClient, Reply, proxy_config, raw_request


def test_chunked_request_body_arrives_intact_at_the_backend(proxy):
    gw, backend = proxy
    parts = [b"hello ", os.urandom(70000), b"", b"world"]
    wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts if p)
    r = raw_request(gw.port, b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + wire + b"0\r\nX-Trailer: t\r\n\r\n")
    assert r.status == 200
    seen = backend.last
    assert seen.method == "POST" and seen.target == "/upload"
    assert seen.body == b"".join(parts)
    assert not (seen.has_header("content-length") and seen.chunked), "both framings at once"
    if not seen.chunked:
        assert seen.header("content-length") == str(len(seen.body))
    assert json.loads(r.body)["body_bytes"] == len(seen.body)


def test_chunked_response_arrives_intact_at_the_client(proxy):
    gw, backend = proxy
    chunks = [b"first,", os.urandom(100000), b"last"]
    backend.handler = lambda req: Reply(200, [("Content-Type", "application/octet-stream")], chunks=chunks)
    r = raw_request(gw.port, b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
    assert r.status == 200
    assert r.body == b"".join(chunks)
    assert r.chunked or r.header("content-length") == str(len(r.body))
    assert backend.last.target == "/stream"


def test_content_length_bodies_both_ways_are_byte_exact(proxy):
    gw, backend = proxy
    upload = os.urandom(300_000)
    download = os.urandom(500_000)
    backend.handler = lambda req: Reply(201, [("Content-Type", "application/octet-stream")], download)
    with RawClient(gw.port) as c:
        c.send(b"PUT /blob HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(upload) + upload)
        r = c.read_response()
    assert r.status == 201
    assert r.header("content-length") == str(len(download))
    assert r.body == download
    seen = backend.last
    assert seen.body == upload
    assert seen.header_all("content-length") == [str(len(upload))]
    assert not seen.chunked


def test_http10_client_gets_a_length_or_close_delimited_response_and_no_chunking(proxy):
    gw, backend = proxy
    backend.handler = lambda req: Reply(200, [], chunks=[b"abc", b"def"])
    with RawClient(gw.port) as c:
        c.send(b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n")
        r = c.read_response()
        assert r.body == b"abcdef"
        assert not r.chunked and "chunked" not in (r.header("transfer-encoding") or "")
        if r.header("content-length") is None:
            assert c.closed_by_peer()   # close-delimited: the end of the body is the close
        else:
            assert c.closed_by_peer(), "HTTP/1.0 without keep-alive: the gateway must close"
    assert r.status == 200
    assert backend.last.target == "/old"


def test_http10_client_with_content_length_backend_response(proxy):
    gw, backend = proxy
    backend.handler = lambda req: Reply(200, [], b"0123456789")
    with RawClient(gw.port) as c:
        c.send(b"GET /old HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert c.closed_by_peer()
    assert (r.status, r.body) == (200, b"0123456789")
    assert backend.last.method == "GET"


def test_pipelined_requests_get_responses_in_order(proxy):
    gw, backend = proxy
    # the backend answers the first request slowest, so out-of-order answers would show
    delays = {"/one": 0.3, "/two": 0.1, "/three": 0.0}
    backend.handler = lambda req: Reply(200, [], req.target.encode(), delay=delays.get(req.target, 0))
    with RawClient(gw.port) as c:
        c.send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
               b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
               b"GET /three HTTP/1.1\r\nHost: a\r\n\r\n")
        bodies = [c.read_response().body for _ in range(3)]
    assert bodies == [b"/one", b"/two", b"/three"]
    assert [r.target for r in backend.requests] == ["/one", "/two", "/three"]
    assert backend.requests[1].body == b"abc"


def test_expect_100_continue_gets_an_interim_100_then_the_response(proxy):
    gw, backend = proxy
    with RawClient(gw.port) as c:
        c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = c.read_one()
        assert interim.status == 100
        c.send(b"hello")
        r = c.read_response()
    assert r.status == 200
    assert backend.last.body == b"hello"
    assert json.loads(r.body)["body_bytes"] == 5


def test_keep_alive_client_connection_serves_many_requests(proxy):
    gw, backend = proxy
    with RawClient(gw.port) as c:
        for i in range(20):
            c.send(b"GET /k%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            r = c.read_response()
            assert r.status == 200
    assert [r.target for r in backend.requests] == [f"/k{i}" for i in range(20)]


def test_head_response_has_no_body(proxy):
    gw, backend = proxy
    plain = backend.handler
    backend.handler = lambda req: Reply(200, [("Content-Length", "1234")]) if req.method == "HEAD" else plain(req)
    with RawClient(gw.port) as c:
        c.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
        r = c.read_response(head_request=True)
        assert r.status == 200
        c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        r2 = c.read_response()
    assert r2.status == 200 and json.loads(r2.body)["target"] == "/after"
    assert [r.method for r in backend.requests] == ["HEAD", "GET"]


def test_close_delimited_backend_response_reaches_the_client_complete(proxy):
    gw, backend = proxy
    payload = os.urandom(200_000)
    backend.handler = lambda req: Reply(200, [], payload, length=False)
    with RawClient(gw.port) as c:
        c.send(b"GET /cd HTTP/1.1\r\nHost: a\r\n\r\n")
        r = c.read_response()
    assert r.status == 200 and r.body == payload
    assert backend.last.target == "/cd"


def test_no_content_and_not_modified_responses_keep_the_connection_usable(proxy):
    gw, backend = proxy
    plain = backend.handler
    backend.handler = lambda req: {"/204": Reply(204), "/304": Reply(304, [("ETag", '"v1"')])}.get(
        req.target) or plain(req)
    with RawClient(gw.port) as c:
        c.send(b"GET /204 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.read_response().status == 204
        c.send(b"GET /304 HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"v1\"\r\n\r\n")
        r = c.read_response()
        assert r.status == 304 and r.header("etag") == '"v1"'
        c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        assert json.loads(c.read_response().body)["target"] == "/after"
    assert [q.target for q in backend.requests] == ["/204", "/304", "/after"]


def test_interim_103_from_the_backend_does_not_replace_the_final_response(proxy):
    gw, backend = proxy
    backend.handler = lambda req: Reply(raw=b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                                            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
    with RawClient(gw.port) as c:
        c.send(b"GET /hints HTTP/1.1\r\nHost: a\r\n\r\n")
        r = c.read_response()
    assert (r.status, r.body) == (200, b"final")
    assert all(i.status == 103 for i in r.interim)


def test_absolute_form_request_target_is_forwarded_in_origin_form(proxy):
    gw, backend = proxy
    r = raw_request(gw.port, b"GET http://shop.test/abs/path?q=1 HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert r.status == 200
    assert backend.last.target == "/abs/path?q=1"
    assert backend.last.header("host") == "shop.test"


def test_request_body_arriving_too_slowly_is_cut_off(gateway_factory, backend):
    gw = gateway_factory(proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app"}],
                                      limits={"request_body_timeout": "300ms"}))
    with RawClient(gw.port, timeout=5) as c:
        c.send(b"POST /slowbody HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        try:
            r = c.read_response()
            assert r.status == 408, r.body
        except ConnectionError:
            pass
        assert c.closed_by_peer(3)
    assert backend.requests == [], "the backend must not get a complete request"


def test_idle_keep_alive_client_connection_is_closed_after_idle_timeout(gateway_factory, backend):
    gw = gateway_factory(proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app"}],
                                      limits={"idle_timeout": "300ms"}))
    with RawClient(gw.port, timeout=5) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.read_response().status == 200
        assert c.closed_by_peer(3)
