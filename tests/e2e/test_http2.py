"""HTTP/2 (SPEC section 2: listener `http2: true`, upstream `protocol: http1 | http2 | h2c`).

Downstream: h2 over TLS chosen by ALPN, h2c by prior knowledge on a cleartext listener (where
HTTP/1.1 keeps working), HTTP/1.1 only without `http2: true`. Upstream: HTTP/1.1 (the recording
Backend of conftest), h2c and h2 over TLS (H2Backend of h2kit, written on python3-h2). Every mix is
checked on content: bodies (up to 5 MiB, both ways, within flow-control windows), trailers,
stream ids, status codes and JSON error bodies, what the backend received. The h2 limits
(100 concurrent streams, header list size, rapid reset, PING/SETTINGS floods) are driven with a raw
python3-h2 client; after each the gateway must still serve a fresh connection.
Clients: curl --http2 / --http2-prior-knowledge, nghttp (nghttp2-client), the raw H2Client.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import struct
import subprocess
import threading
from collections import Counter

import h2.errors
import h2.exceptions
import h2.settings
import pytest

from conftest import HOST, RawClient, Reply, free_port, proxy_config, wait_for
from h2kit import (H2Backend, H2Client, H2Reply, client_tls_context, curl, h2_get, make_pki,
                   negotiated_alpn, nghttp, pattern_bytes, sha256)

MiB = 1024 * 1024
REFUSED_STREAM = int(h2.errors.ErrorCodes.REFUSED_STREAM)


# --------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("h2pki"))


@pytest.fixture
def h2_backend_factory():
    started: list[H2Backend] = []

    def make(name: str = "h2-backend", **kw) -> H2Backend:
        b = H2Backend(name, **kw)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def h2_backend(h2_backend_factory) -> H2Backend:
    return h2_backend_factory("h2-backend")


def h2c(b: H2Backend, **extra) -> dict:
    return {"targets": [b.address], "protocol": "h2c", **extra}


def catch_all(upstream: str = "app", **extra) -> list[dict]:
    return [{"name": "main", "match": {"path": "/"}, "upstream": upstream, **extra}]


def start_gateway(gateway_factory, upstreams: dict, routes: list, *, http2=True, pki=None,
                  listener_extra: dict | None = None, **extra):
    """A gateway with one listener named "web" (cleartext, or TLS with the test certificate when
    `pki` is given); `http2=None` leaves the key out."""
    port = free_port()
    listener = {"name": "web", "listen": f"{HOST}:{port}"}
    if http2 is not None:
        listener["http2"] = http2
    if pki is not None:
        listener["tls"] = {"certificates": [{"cert": str(pki.server.cert), "key": str(pki.server.key)}]}
    listener.update(listener_extra or {})
    cfg = proxy_config(upstreams, routes, listeners=[listener], workers=1, shutdown_timeout="5s",
                       log={"access": "stdout", "error": "stderr", "level": "info"})
    cfg.update(extra)
    return gateway_factory(cfg, port=port)


def tls_ctx(pki):
    return client_tls_context(pki)


def json_error(res, status: int) -> dict:
    """A gateway-made error: the status, a JSON body naming it, the request id in both places."""
    assert res.status == status, (res.status, res.reset, res.body[:300])
    assert (res.header("content-type") or "").startswith("application/json"), res.headers
    body = res.json()
    assert body["status"] == status and isinstance(body["error"], str) and body["error"], body
    assert body["request_id"] and body["request_id"] == res.header("x-request-id"), (body, res.headers)
    return body


def assert_serves_fresh_connections(gw, path="/ok"):
    """The gateway is still up and answers a new h2 connection and a new HTTP/1.1 connection."""
    assert gw.proc.poll() is None, "the gateway exited:\n" + gw.stderr()[-3000:]
    res = h2_get(gw.port, path)
    assert res.status == 200, (res.status, res.reset, res.body[:200])
    with RawClient(gw.port) as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: h1.test\r\n\r\n".encode())
        assert c.read_response().status == 200


# --------------------------------------------------------------------------------------------
# downstream protocols


def test_h2_over_tls_alpn_to_http1_backend(gateway_factory, backend, pki, tmp_path):
    gw = start_gateway(gateway_factory, {"app": [backend]}, catch_all(), pki=pki)
    assert negotiated_alpn(gw.port, tls_ctx(pki)) == "h2"
    assert negotiated_alpn(gw.port, client_tls_context(pki, alpn=["http/1.1"])) == "http/1.1"
    # curl, verifying the chain, negotiates h2 and gets the backend's answer
    r = curl(f"https://a.test:{gw.port}/curl/path?q=1", "--http2", "--cacert", str(pki.ca),
             "--resolve", f"a.test:{gw.port}:{HOST}", "-H", "x-client: curl", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (r.http_version, r.status) == ("2", 200)
    assert r.json() == {"backend": "backend", "method": "GET", "target": "/curl/path?q=1", "body_bytes": 0}
    req = backend.last
    assert req.version == "HTTP/1.1" and req.header("host") == f"a.test:{gw.port}"
    assert req.header("x-client") == "curl"
    assert req.header("x-forwarded-proto") == "https"
    assert r.header("x-request-id") == req.header("x-request-id")
    # the raw client over TLS: a POST body and the backend's headers back in lower case
    backend.handler = lambda q: Reply(201, [("Content-Type", "text/plain"), ("X-Upper-Case", "Yes")], b"made")
    with H2Client(gw.port, tls=tls_ctx(pki)) as c:
        assert c.alpn == "h2"
        res = c.request("POST", "/items", headers=[("content-type", "text/plain")], body=b"payload-1")
    assert res.status == 201 and res.body == b"made"
    assert res.header("x-upper-case") == "Yes" and res.header("content-type") == "text/plain"
    assert backend.last.method == "POST" and backend.last.body == b"payload-1"


def test_h2c_prior_knowledge_and_http1_on_the_same_listener(gateway_factory, backend, tmp_path):
    gw = start_gateway(gateway_factory, {"app": [backend]}, catch_all())
    r = curl(gw.url("/h2c"), "--http2-prior-knowledge", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (r.http_version, r.status) == ("2", 200) and r.json()["target"] == "/h2c"
    assert backend.last.header("x-forwarded-proto") == "http"
    r = curl(gw.url("/h1"), "--http1.1", tmp=tmp_path)
    assert (r.http_version, r.status) == ("1.1", 200) and r.json()["target"] == "/h1"
    # a keep-alive HTTP/1.1 connection with two requests, then h2 again
    with RawClient(gw.port) as c:
        for i in range(2):
            c.send(f"GET /raw{i} HTTP/1.1\r\nHost: h1.test\r\n\r\n".encode())
            resp = c.read_response()
            assert resp.version == "HTTP/1.1" and resp.status == 200 and resp.json()["target"] == f"/raw{i}"
    res = h2_get(gw.port, "/again")
    assert res.status == 200 and res.json()["target"] == "/again"
    assert [q.target for q in backend.requests] == ["/h2c", "/h1", "/raw0", "/raw1", "/again"]


def test_nghttp_fetches_several_paths_on_one_connection(gateway_factory, backend):
    gw = start_gateway(gateway_factory, {"app": [backend]}, catch_all())
    urls = [gw.url(f"/ng/{i}") for i in range(4)]
    out = nghttp("-v", *urls)
    assert out.returncode == 0, out.stderr + out.stdout[-2000:]
    assert out.stdout.count(":status: 200") == 4, out.stdout[-3000:]
    assert "recv SETTINGS frame" in out.stdout
    assert "HTTP Upgrade" not in out.stdout  # prior knowledge, no h2c upgrade dance
    assert sorted(q.target for q in backend.requests) == [f"/ng/{i}" for i in range(4)]


def test_nghttp_over_tls_negotiates_h2(gateway_factory, backend, pki):
    gw = start_gateway(gateway_factory, {"app": [backend]}, catch_all(), pki=pki)
    out = nghttp("-v", f"https://{HOST}:{gw.port}/ng-tls")
    assert out.returncode == 0, out.stderr + out.stdout[-2000:]
    assert "negotiated protocol: h2" in out.stdout, out.stdout[:2000]
    assert ":status: 200" in out.stdout
    assert backend.last.target == "/ng-tls"


def test_without_http2_the_listener_speaks_http1_only(gateway_factory, backend, pki, tmp_path):
    gw = start_gateway(gateway_factory, {"app": [backend]}, catch_all(), http2=None, pki=pki)
    assert negotiated_alpn(gw.port, tls_ctx(pki)) == "http/1.1"
    r = curl(f"https://a.test:{gw.port}/fallback", "--http2", "--cacert", str(pki.ca),
             "--resolve", f"a.test:{gw.port}:{HOST}", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (r.http_version, r.status) == ("1.1", 200) and r.json()["target"] == "/fallback"
    # http2: false on a cleartext listener: the h2 preface is not a request (no 200, nothing proxied)
    gw2 = start_gateway(gateway_factory, {"app": [backend]}, catch_all(), http2=False)
    r = curl(gw2.url("/prior"), "--http2-prior-knowledge", tmp=tmp_path)
    assert not (r.returncode == 0 and r.http_version == "2" and r.status == 200), r
    assert [q.target for q in backend.requests] == ["/fallback"]
    assert curl(gw2.url("/plain"), "--http1.1", tmp=tmp_path).status == 200


# --------------------------------------------------------------------------------------------
# upstream protocols


def test_http1_client_to_h2c_upstream(gateway_factory, h2_backend, http):
    gw = start_gateway(gateway_factory, {"h2": h2c(h2_backend)}, catch_all("h2"))
    r = http.get(gw.url("/one?x=1"), headers={"Host": "shop.test", "X-Custom": "v1"}, timeout=10)
    assert r.status_code == 200 and r.headers["x-backend"] == "h2-backend"
    echo = r.json()
    assert (echo["method"], echo["path"], echo["authority"], echo["scheme"]) == ("GET", "/one?x=1", "shop.test", "http")
    hdrs = dict(echo["headers"])
    assert hdrs["x-custom"] == "v1"
    for name in ("connection", "keep-alive", "transfer-encoding", "upgrade"):
        assert name not in hdrs, hdrs
    assert hdrs.get("host", "shop.test") == "shop.test"
    assert hdrs["x-request-id"] == r.headers["x-request-id"]
    body = pattern_bytes(300_000, 1)
    r = http.post(gw.url("/two"), data=body, timeout=10)
    assert r.status_code == 200
    assert (r.json()["method"], r.json()["body_bytes"], r.json()["body_sha256"]) == ("POST", len(body), sha256(body))
    for i in range(3):
        assert http.get(gw.url(f"/seq{i}"), timeout=10).json()["path"] == f"/seq{i}"
    assert [q.path for q in h2_backend.requests] == ["/one?x=1", "/two", "/seq0", "/seq1", "/seq2"]
    # sequential requests share one upstream h2 connection
    assert h2_backend.connections == 1
    assert h2_backend.errors == []


def test_h2_client_to_h2c_upstream(gateway_factory, h2_backend):
    gw = start_gateway(gateway_factory, {"h2": h2c(h2_backend)}, catch_all("h2"))
    with H2Client(gw.port, authority="api.test") as c:
        res = c.request("PUT", "/res/7?v=2", headers=[("x-a", "1"), ("content-type", "application/json")],
                        body=b'{"k": 1}')
        assert res.status == 200 and res.header("x-backend") == "h2-backend"
        echo = res.json()
        assert (echo["method"], echo["path"], echo["authority"]) == ("PUT", "/res/7?v=2", "api.test")
        hdrs = dict(echo["headers"])
        assert hdrs["x-a"] == "1" and hdrs["content-type"] == "application/json"
        assert hdrs["x-forwarded-for"].endswith("127.0.0.1") and hdrs["x-forwarded-proto"] == "http"
        assert "via" in hdrs and "forwarded" in hdrs
        assert res.header("x-request-id") == hdrs["x-request-id"]
        assert h2_backend.last.body == b'{"k": 1}'
        # a 404 from the backend is the backend's (not a gateway error)
        h2_backend.handler = lambda q: H2Reply(404, [("content-type", "text/plain")], b"no such thing")
        res = c.request("GET", "/missing")
        assert res.status == 404 and res.body == b"no such thing"
    assert h2_backend.errors == []


def test_h2_client_to_tls_http2_upstream(gateway_factory, h2_backend_factory, pki):
    b = h2_backend_factory("tls-h2", tls=pki.backend)
    up = {"targets": [b.address], "protocol": "http2", "tls": {"ca": str(pki.ca), "sni": "backend.test"}}
    gw = start_gateway(gateway_factory, {"secure": up}, catch_all("secure"), pki=pki)
    with H2Client(gw.port, tls=tls_ctx(pki)) as c:
        for i in range(3):
            res = c.request("POST", f"/secure/{i}", body=f"body-{i}".encode())
            assert res.status == 200, (res.status, res.body[:300])
            echo = res.json()
            assert (echo["path"], echo["scheme"], echo["body_bytes"]) == (f"/secure/{i}", "https", len(f"body-{i}"))
    assert b.alpn and set(b.alpn) == {"h2"}, b.alpn
    assert [q.body for q in b.requests] == [b"body-0", b"body-1", b"body-2"]
    assert b.errors == []
    # without the CA the upstream handshake fails: 502 with a JSON body, over h2
    up_bad = {"targets": [b.address], "protocol": "http2", "tls": {"sni": "backend.test"}}
    gw2 = start_gateway(gateway_factory, {"secure": up_bad}, catch_all("secure"))
    json_error(h2_get(gw2.port, "/unverified"), 502)
    assert len(b.requests) == 3


def test_h1_backend_connection_headers_are_not_forwarded_to_h2_clients(gateway_factory, backend):
    """HTTP/2 forbids connection-specific headers; python3-h2 rejects them (a protocol error)."""
    backend.handler = lambda q: Reply(200, [("Content-Type", "text/plain"), ("Connection", "keep-alive"),
                                            ("Keep-Alive", "timeout=5"), ("X-Kept", "1")],
                                      chunks=[b"part1-", b"part2"])
    gw = start_gateway(gateway_factory, {"app": [backend]}, catch_all())
    with H2Client(gw.port) as c:
        res = c.request("GET", "/chunked")
        assert res.status == 200 and res.body == b"part1-part2"
        assert res.header("x-kept") == "1"
        for name in ("connection", "keep-alive", "transfer-encoding"):
            assert res.header(name) is None, res.headers
        # HEAD: headers only
        backend.handler = lambda q: Reply(200, [("Content-Type", "text/plain"), ("Content-Length", "10")], b"")
        res = c.request("HEAD", "/head")
        assert res.status == 200 and res.body == b"" and res.header("content-length") == "10"
    assert backend.requests[-1].method == "HEAD"


def test_large_response_headers_reach_h2_clients_intact(gateway_factory, backend, h2_backend):
    """A 20 KB response header (more than one 16 KiB frame: HEADERS + CONTINUATION) from an
    HTTP/1.1 and from an h2c upstream."""
    big = "".join(chr(ord("a") + i % 26) for i in range(20000))
    backend.handler = lambda q: Reply(200, [("Content-Type", "text/plain"), ("X-Big", big)], b"h1")
    h2_backend.handler = lambda q: H2Reply(200, [("content-type", "text/plain"), ("x-big", big)], b"h2")
    gw = start_gateway(gateway_factory, {"app": [backend], "h2": h2c(h2_backend)},
                       [{"match": {"path": "/h2"}, "upstream": "h2"}, {"match": {"path": "/"}, "upstream": "app"}])
    with H2Client(gw.port) as c:
        for path, body in (("/h1", b"h1"), ("/h2", b"h2")):
            res = c.request("GET", path)
            assert res.status == 200 and res.body == body, (path, res.status, res.reset)
            assert res.header("x-big") == big, path


def test_cookie_crumbs_are_joined_for_http1_upstreams(gateway_factory, backend):
    """h2 clients may send each cookie as its own field (RFC 9113 8.2.3); an HTTP/1.1 upstream
    gets them as one Cookie header joined with "; "."""
    gw = start_gateway(gateway_factory, {"app": [backend]}, catch_all())
    with H2Client(gw.port) as c:
        res = c.request("GET", "/cookies", headers=[("cookie", "a=1"), ("x-other", "o"), ("cookie", "b=2"),
                                                    ("cookie", "c=3")])
    assert res.status == 200
    assert backend.last.header_all("cookie") == ["a=1; b=2; c=3"], backend.last.headers


def test_http1_connection_headers_are_not_sent_to_h2_upstreams(gateway_factory, h2_backend, backend):
    """Connection-specific fields are malformed in HTTP/2 (python3-h2 on the backend rejects
    them): an HTTP/1.1 request's hop-by-hop headers must not reach an h2c upstream."""
    gw = start_gateway(gateway_factory, {"h2": h2c(h2_backend)}, catch_all("h2"))
    with RawClient(gw.port) as c:
        c.send(b"POST /hop HTTP/1.1\r\nHost: hop.test\r\nConnection: keep-alive, X-Private\r\n"
               b"Keep-Alive: timeout=5\r\nX-Private: secret\r\nTE: trailers\r\nUpgrade: foo/2\r\n"
               b"Proxy-Connection: keep-alive\r\nTransfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r.body
    echo = r.json()
    hdrs = dict(echo["headers"])
    for name in ("connection", "keep-alive", "x-private", "upgrade", "proxy-connection", "transfer-encoding"):
        assert name not in hdrs, hdrs
    assert hdrs.get("te", "trailers") == "trailers" and hdrs["x-kept"] == "yes"
    assert echo["body_bytes"] == 5 and echo["authority"] == "hop.test"
    assert h2_backend.errors == []


MALFORMED = {
    # name: (extra request headers, DATA, what must never reach the HTTP/1.1 backend)
    "content-length-shorter-than-body": ([("content-length", "5")],
                                         b"AAAAAGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "/smuggled"),
    "content-length-longer-than-body": ([("content-length", "100")], b"only-ten!!", None),
    "transfer-encoding-chunked": ([("transfer-encoding", "chunked")],
                                  b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "/smuggled"),
    "crlf-in-header-value": ([("x-inject", "a\r\nx-smuggled: 1")], b"", "x-smuggled"),
    "upper-case-header-name": ([("X-Upper", "1")], b"", None),
    "connection-header": ([("connection", "close")], b"", None),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_h2_requests_are_not_downgraded_to_http1(gateway_factory, backend, case):
    """H2 -> HTTP/1.1 desync attempts: a malformed request is refused (400 or a stream reset),
    never forwarded in a way that lets a second request appear upstream; the connection and the
    upstream connection keep working."""
    extra, data, marker = MALFORMED[case]
    gw = start_gateway(gateway_factory, {"app": [backend]}, catch_all())
    with H2Client(gw.port, validate=False) as c:
        sid = c.start("POST", "/bad", headers=extra, end_stream=not data)
        if data:
            c.conn.send_data(sid, data, end_stream=True)
            c.flush()
        c.wait(lambda: c.streams[sid].done or c.goaway is not None or c.closed, 10, "an answer to the malformed request")
        res = c.streams[sid]
        assert res.status in (None, 400) and (res.status == 400 or res.reset is not None or c.goaway is not None), res
        if c.goaway is None and not c.closed:
            good = c.request("POST", "/after", body=b"fine")
            assert good.status == 200 and good.json()["target"] == "/after"
    assert_serves_fresh_connections(gw, "/fresh")
    targets = [q.target for q in backend.requests]
    assert "/bad" not in targets and "/smuggled" not in targets, targets
    if marker and not marker.startswith("/"):
        assert not any(q.has_header(marker) for q in backend.requests)
    for q in backend.requests:
        assert q.target in ("/after", "/fresh"), q
        assert q.body in (b"fine", b""), q.body[:100]


# --------------------------------------------------------------------------------------------
# multiplexing, bodies, flow control, streaming, trailers


@pytest.mark.parametrize("kind", ["http1", "h2c"])
def test_many_concurrent_streams_on_one_connection(gateway_factory, backend, h2_backend, kind):
    up = {"app": [backend]} if kind == "http1" else {"app": h2c(h2_backend)}
    gw = start_gateway(gateway_factory, up, catch_all())
    n = 60
    with H2Client(gw.port) as c:
        sids = {}
        for i in range(n):
            body = f"request-{i}-".encode() * (i + 1)
            sid = c.start("POST", f"/multi/{i}", headers=[("content-length", str(len(body)))], end_stream=False)
            sids[sid] = (i, body)
        assert len(sids) == n
        for sid, (i, body) in sids.items():  # bodies sent after all heads: all streams open at once
            c.send_body(sid, body)
        for sid, (i, body) in sids.items():
            res = c.response(sid)
            assert res.status == 200, (sid, res.status, res.reset)
            echo = res.json()
            if kind == "http1":
                assert (echo["target"], echo["body_bytes"]) == (f"/multi/{i}", len(body)), (sid, echo)
            else:
                assert (echo["path"], echo["body_sha256"]) == (f"/multi/{i}", sha256(body)), (sid, echo)
    got = backend.requests if kind == "http1" else h2_backend.requests
    assert sorted(q.body for q in got) == sorted(b for _, b in sids.values())
    assert h2_backend.errors == []


@pytest.mark.parametrize("kind", ["http1", "h2c"])
def test_5mib_bodies_both_ways(gateway_factory, backend, h2_backend, kind):
    up_body = pattern_bytes(5 * MiB, 11)
    down_body = pattern_bytes(5 * MiB + 123, 22)
    if kind == "http1":
        backend.handler = lambda q: Reply(200, [("Content-Type", "application/octet-stream"),
                                                ("X-Got-Sha", sha256(q.body))], down_body)
        up = {"app": [backend]}
    else:
        h2_backend.handler = lambda q: H2Reply(200, [("content-type", "application/octet-stream"),
                                                     ("x-got-sha", sha256(q.body))], down_body)
        up = {"app": h2c(h2_backend)}
    gw = start_gateway(gateway_factory, up, catch_all())
    with H2Client(gw.port, timeout=30) as c:
        res = c.request("POST", "/upload", headers=[("content-type", "application/octet-stream")],
                        body=up_body, timeout=60)
        assert res.status == 200, (res.status, res.reset)
        assert res.header("x-got-sha") == sha256(up_body), "the request body arrived changed"
        assert len(res.body) == len(down_body) and res.body == down_body
        # and without a content-length on either side (streamed request body)
        res = c.request("POST", "/upload2", body=up_body[:1_000_001], timeout=60)
        assert res.status == 200 and res.header("x-got-sha") == sha256(up_body[:1_000_001])
    assert h2_backend.errors == []


def test_small_client_window_is_respected_for_a_large_response(gateway_factory, h2_backend):
    """The client advertises a 4 KiB stream window and a 16 KiB frame size: the gateway must
    send within them (python3-h2 raises a FlowControlError otherwise) and still deliver it all."""
    h2_backend.handler = lambda q: H2Reply(200, [("content-type", "application/octet-stream")],
                                           stream_bytes=2 * MiB + 7)
    gw = start_gateway(gateway_factory, {"app": h2c(h2_backend)}, catch_all())
    small = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4096}
    with H2Client(gw.port, settings=small, timeout=30) as c:
        res = c.request("GET", "/big", timeout=60)
        assert res.status == 200 and len(res.body) == 2 * MiB + 7
        assert res.body[:256] == bytes(range(256))
        assert res.data_frames >= (2 * MiB) // 4096
        res = c.request("GET", "/big-again", timeout=60)
        assert len(res.body) == 2 * MiB + 7


def test_small_upstream_window_is_respected_for_a_large_request(gateway_factory, h2_backend_factory):
    """The h2c backend advertises an 8 KiB stream window: the gateway must wait for its
    WINDOW_UPDATEs while the client keeps sending (python3-h2 raises on any overrun)."""
    b = h2_backend_factory("small-window", initial_window=8192)
    gw = start_gateway(gateway_factory, {"app": h2c(b)}, catch_all())
    body = pattern_bytes(3 * MiB, 5)
    with H2Client(gw.port, timeout=30) as c:
        res = c.request("POST", "/up", body=body, timeout=60)
    assert res.status == 200, (res.status, res.reset, res.body[:300])
    assert (res.json()["body_bytes"], res.json()["body_sha256"]) == (len(body), sha256(body))
    assert b.errors == []


def test_request_body_over_max_body_is_413(gateway_factory, backend):
    gw = start_gateway(gateway_factory, {"app": [backend]}, catch_all(), limits={"max_body": "64KiB"})
    with H2Client(gw.port) as c:
        big = b"b" * 200_000
        # announced with content-length: refused without reading it
        sid = c.start("POST", "/declared", headers=[("content-length", str(len(big)))], end_stream=False)
        c.send_body(sid, big, stop_early=True)
        json_error(c.response(sid), 413)
        # no content-length: refused once more than max_body arrived
        sid = c.start("POST", "/streamed", end_stream=False)
        c.send_body(sid, big, stop_early=True)
        json_error(c.response(sid), 413)
        # the connection still serves a body under the limit
        res = c.request("POST", "/small", body=b"s" * 1000)
        assert res.status == 200 and res.json()["body_bytes"] == 1000
    assert [q.target for q in backend.requests if q.body_bytes > 65536] == []
    assert backend.last.target == "/small"


def test_streaming_response_reaches_h2_client_before_it_ends(gateway_factory, h2_backend):
    gate = threading.Event()
    h2_backend.handler = lambda q: H2Reply(200, [("content-type", "text/plain")],
                                           chunks=[b"first;", b"second;", b"last"], gates={2: gate})
    gw = start_gateway(gateway_factory, {"app": h2c(h2_backend)}, catch_all())
    try:
        with H2Client(gw.port) as c:
            sid = c.start("GET", "/stream")
            # the first two chunks arrive while the backend still holds the last one
            c.wait(lambda: bytes(c.streams[sid].data) == b"first;second;", what="the first chunks")
            assert not c.streams[sid].ended
            gate.set()
            res = c.response(sid)
            assert res.status == 200 and res.body == b"first;second;last"
    finally:
        gate.set()


def test_streaming_from_h2c_upstream_to_http1_client(gateway_factory, h2_backend):
    gate = threading.Event()
    h2_backend.handler = lambda q: H2Reply(200, [("content-type", "text/plain")],
                                           chunks=[b"alpha;", b"omega"], gates={1: gate})
    gw = start_gateway(gateway_factory, {"app": h2c(h2_backend)}, catch_all())
    try:
        with RawClient(gw.port, timeout=10) as c:
            c.send(b"GET /s HTTP/1.1\r\nHost: h1.test\r\n\r\n")
            wait_for(lambda: c.fill() and b"alpha;" in c.buf, 10, 0, "the first chunk over HTTP/1.1")
            assert b"omega" not in c.buf
            gate.set()
            wait_for(lambda: b"omega" in c.buf or not c.fill(), 10, 0, "the last chunk")
            head, _, rest = bytes(c.buf).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert b"alpha;" in rest and b"omega" in rest
    finally:
        gate.set()


def test_response_streams_while_the_request_body_is_still_open(gateway_factory, h2_backend):
    """Full duplex, as gRPC bidirectional streaming needs: the backend answers as soon as the
    head arrives; the client sees the answer's first part before it ends its own body."""
    gate = threading.Event()
    h2_backend.respond_early = True
    h2_backend.handler = lambda q: H2Reply(200, [("content-type", "text/plain")],
                                           chunks=[b"early;", b"late"], gates={1: gate})
    gw = start_gateway(gateway_factory, {"app": h2c(h2_backend)}, catch_all())
    try:
        with H2Client(gw.port) as c:
            sid = c.start("POST", "/duplex", end_stream=False)
            c.send_body(sid, b"first-half;", end=False)
            c.wait(lambda: c.streams[sid].status == 200 and bytes(c.streams[sid].data) == b"early;", 10,
                   "the response head and first part while the request is open")
            with h2_backend.cond:
                assert h2_backend.cond.wait_for(lambda: sum(h2_backend.data_seen.values()) == len(b"first-half;"), 10), \
                    "the first part of the request body did not reach the backend while the stream was open"
            c.send_body(sid, b"second-half", end=True)
            gate.set()
            res = c.response(sid)
            assert res.body == b"early;late" and res.ended
        assert h2_backend.wait_requests(1)[0].body == b"first-half;second-half"
    finally:
        gate.set()


def test_response_trailers_from_h2_upstream_reach_h2_client(gateway_factory, h2_backend):
    h2_backend.handler = lambda q: H2Reply(200, [("content-type", "application/octet-stream")],
                                           chunks=[b"data-1", b"data-2"],
                                           trailers=[("x-checksum", "abc123"), ("x-count", "2")])
    gw = start_gateway(gateway_factory, {"app": h2c(h2_backend)}, catch_all())
    with H2Client(gw.port) as c:
        res = c.request("POST", "/with-trailers", body=b"x", headers=[("te", "trailers")])
        assert res.status == 200 and res.body == b"data-1data-2"
        assert res.trailer("x-checksum") == "abc123" and res.trailer("x-count") == "2", res.trailers
        assert res.header("x-checksum") is None  # trailers stay trailers
        # trailers only (no DATA), as a gRPC error answer looks
        h2_backend.handler = lambda q: H2Reply(200, [("content-type", "application/grpc")],
                                               trailers=[("grpc-status", "5"), ("grpc-message", "not found")])
        res = c.request("POST", "/svc/Method", body=b"\x00\x00\x00\x00\x00", headers=[("te", "trailers"),
                                                                                    ("content-type", "application/grpc")])
        assert res.status == 200 and res.body == b""
        assert (res.trailer("grpc-status"), res.trailer("grpc-message")) == ("5", "not found"), (res.headers, res.trailers)
    assert h2_backend.errors == []


def test_request_trailers_reach_h2_upstream(gateway_factory, h2_backend):
    gw = start_gateway(gateway_factory, {"app": h2c(h2_backend)}, catch_all())
    with H2Client(gw.port) as c:
        res = c.request("POST", "/req-trailers", headers=[("te", "trailers")], body=b"body",
                        trailers=[("x-req-trailer", "t1")])
    assert res.status == 200
    assert res.json()["trailers"] == [["x-req-trailer", "t1"]]
    assert h2_backend.last.body == b"body"


# --------------------------------------------------------------------------------------------
# gateway answers, errors, policies


def test_no_route_is_404_json_over_h2(gateway_factory, backend):
    gw = start_gateway(gateway_factory, {"app": [backend]},
                       [{"name": "only", "match": {"path": "/only"}, "upstream": "app"}])
    with H2Client(gw.port) as c:
        body = json_error(c.request("GET", "/elsewhere"), 404)
        assert "route" in body["error"].lower()
        assert c.request("GET", "/only/x").status == 200
    assert [q.target for q in backend.requests] == ["/only/x"]


def test_gateway_answers_to_requests_with_bodies_reach_h2_clients(gateway_factory, backend, tmp_path):
    """A request that carries a body and is answered by the gateway itself (no route, a
    `respond` route): the whole answer arrives, whether or not the gateway read the body."""
    gw = start_gateway(gateway_factory, {"app": [backend]},
                       [{"name": "fixed", "match": {"path": "/fixed"},
                         "respond": {"status": 201, "body": "made here", "headers": {"content-type": "text/plain"}}},
                        {"name": "only", "match": {"path": "/only"}, "upstream": "app"}])
    with H2Client(gw.port) as c:
        json_error(c.request("POST", "/elsewhere", body=b"x" * 10), 404)
        res = c.request("POST", "/fixed", body=b"y" * 100_000)
        assert (res.status, res.body) == (201, b"made here"), (res.status, res.reset, res.body[:100])
        res = c.request("PUT", "/fixed", headers=[("content-length", "5")], body=b"12345")
        assert (res.status, res.body) == (201, b"made here"), (res.status, res.reset, res.body[:100])
        assert c.request("POST", "/only", body=b"z").json()["body_bytes"] == 1
    r = curl(gw.url("/elsewhere"), "--http2-prior-knowledge", "-d", "curl-body", tmp=tmp_path)
    assert (r.returncode, r.http_version, r.status) == (0, "2", 404), r.stderr
    assert r.json()["status"] == 404
    assert [q.target for q in backend.requests] == ["/only"]


def test_sigterm_sends_goaway_and_lets_the_in_flight_stream_finish(gateway_factory, h2_backend):
    gate = threading.Event()
    h2_backend.handler = lambda q: (H2Reply(200, [("content-type", "text/plain")], chunks=[b"part1;", b"part2"],
                                            gates={1: gate}) if q.path == "/slow" else h2_backend.echo(q))
    gw = start_gateway(gateway_factory, {"app": h2c(h2_backend)}, catch_all(), shutdown_timeout="20s")
    try:
        with H2Client(gw.port) as idle, H2Client(gw.port) as busy:
            assert idle.request("GET", "/idle").status == 200
            sid = busy.start("GET", "/slow")
            busy.wait(lambda: bytes(busy.streams[sid].data) == b"part1;", what="the first part")
            gw.signal(signal.SIGTERM)
            idle.wait(lambda: idle.goaway is not None, 10, "a GOAWAY on the idle connection")
            assert idle.goaway.error_code == 0, idle.goaway
            busy.wait(lambda: busy.goaway is not None, 10, "a GOAWAY on the busy connection")
            assert busy.goaway.last_stream_id >= sid, busy.goaway
            gate.set()
            res = busy.response(sid)
            assert res.status == 200 and res.body == b"part1;part2" and res.ended
            busy.read_until_closed(5)
            idle.read_until_closed(5)
            assert busy.closed, "the h2 connection stayed open after its last stream ended during the drain"
            assert idle.closed, "the idle h2 connection stayed open during the drain"
        assert gw.wait_exit(timeout=10) == 0  # long before the 20 s shutdown_timeout
    finally:
        gate.set()
        # the gateway was signalled: let it finish its exit (a second SIGTERM from the fixture
        # during the sanitizers' exit work would kill it and hide this test's own finding)
        with contextlib.suppress(subprocess.TimeoutExpired):
            gw.proc.wait(timeout=25)


def test_upstream_failures_keep_the_connection_usable(gateway_factory, backend, h2_backend):
    dead = f"{HOST}:{free_port()}"
    backend.handler = lambda q: Reply(200, [], b"slow", delay=3) if q.path == "/slow" else backend.default_reply(q)
    h2_backend.handler = lambda q: H2Reply(reset=int(h2.errors.ErrorCodes.INTERNAL_ERROR))
    routes = [{"name": "down", "match": {"path": "/down"}, "upstream": "dead"},
              {"name": "slow", "match": {"path": "/slow"}, "upstream": "app", "timeout": "500ms"},
              {"name": "h2dead", "match": {"path": "/h2down"}, "upstream": "h2dead"},
              {"name": "h2reset", "match": {"path": "/h2reset"}, "upstream": "h2"},
              {"name": "ok", "match": {"path": "/"}, "upstream": "app"}]
    gw = start_gateway(gateway_factory, {"app": [backend], "dead": [dead],
                                         "h2dead": {"targets": [dead], "protocol": "h2c"},
                                         "h2": h2c(h2_backend)}, routes)
    with H2Client(gw.port) as c:
        res = c.request("GET", "/down")
        assert res.status in (502, 503), (res.status, res.reset)
        json_error(res, res.status)
        assert c.request("GET", "/ok1").json()["target"] == "/ok1"
        json_error(c.request("GET", "/slow"), 504)
        assert c.request("GET", "/ok2").json()["target"] == "/ok2"
        res = c.request("GET", "/h2down")
        assert res.status in (502, 503), (res.status, res.reset)
        json_error(res, res.status)
        # the h2 upstream resets the stream: an error answer (or a reset) on this stream only
        res = c.request("GET", "/h2reset")
        assert res.status == 502 or res.reset is not None, (res.status, res.reset)
        if res.status is not None:
            json_error(res, 502)
        assert c.request("GET", "/ok3").json()["target"] == "/ok3"
        assert c.goaway is None
    statuses = [e["status"] for e in gw.wait_access_log(7)]
    assert statuses.count(200) == 3 and 504 in statuses


def test_policies_and_proxy_headers_apply_to_h2_requests(gateway_factory, backend, backend_factory):
    other = backend_factory("other")
    routes = [
        {"name": "by-host", "match": {"host": ["api.h2.test"], "path": "/"}, "upstream": "other"},
        {"name": "keyed", "match": {"path": "/keyed"}, "upstream": "app", "auth": "keys"},
        {"name": "limited", "match": {"path": "/limited"}, "upstream": "app",
         "rate_limit": [{"key": "ip", "rate": "2/min"}]},
        {"name": "get-only", "match": {"path": "/get-only", "methods": ["GET"]}, "upstream": "app"},
        {"name": "hdr", "match": {"path": "/hdr"}, "upstream": "app",
         "headers": {"request": {"set": {"x-gateway": "sluice"}, "remove": ["cookie"]},
                     "response": {"set": {"x-frame-options": "DENY"}}}},
    ]
    gw = start_gateway(gateway_factory, {"app": [backend], "other": [other]}, routes,
                       consumers=[{"name": "alice", "api_keys": ["key:k-alice"]}],
                       auth={"keys": {"api_key": {"header": "x-api-key"}}})
    with H2Client(gw.port, authority="www.h2.test") as c:
        # host routing by :authority
        res = c.request("GET", "/x", authority="api.h2.test")
        assert res.json()["backend"] == "other" and other.last.header("host") == "api.h2.test"
        # auth
        json_error(c.request("GET", "/keyed"), 401)
        res = c.request("GET", "/keyed", headers=[("x-api-key", "k-alice")])
        assert res.status == 200 and backend.last.target == "/keyed"
        assert backend.last.header("x-api-key") is None
        # rate limit
        assert [c.request("GET", "/limited").status for _ in range(2)] == [200, 200]
        res = c.request("GET", "/limited")
        json_error(res, 429)
        assert res.header("retry-after") and res.header("ratelimit-limit")
        # 405 with Allow (bodyless: answers to requests with bodies have their own test)
        res = c.request("DELETE", "/get-only")
        json_error(res, 405)
        assert "GET" in res.header("allow")
        # header rules, x-forwarded-*, request id, trace context
        res = c.request("GET", "/hdr", headers=[("cookie", "a=b"), ("x-request-id", "req-h2-123")])
        assert res.status == 200 and res.header("x-frame-options") == "DENY"
        req = backend.last
        assert req.target == "/hdr" and req.header("x-gateway") == "sluice" and req.header("cookie") is None
        assert req.header("host") == "www.h2.test"
        assert req.header("x-forwarded-for") == "127.0.0.1" and req.header("x-forwarded-proto") == "http"
        assert req.header("x-forwarded-host") == "www.h2.test"
        assert req.header("x-request-id") == "req-h2-123" == res.header("x-request-id")
        assert req.header("traceparent") and req.header("via")
    assert [q.target for q in other.requests] == ["/x"]


def test_access_log_says_http2(gateway_factory, backend):
    gw = start_gateway(gateway_factory, {"app": [backend]}, catch_all())
    with H2Client(gw.port, authority="log.test") as c:
        res = c.request("POST", "/logged?q=1", headers=[("user-agent", "h2-e2e/1.0")], body=b"p" * 500)
        missing = c.request("GET", "/nothing", authority="log.test")
    assert res.status == 200 and missing.status == 200  # catch-all route
    with RawClient(gw.port) as c1:
        c1.send(b"GET /h1 HTTP/1.1\r\nHost: log.test\r\n\r\n")
        assert c1.read_response().status == 200
    entries = gw.wait_access_log(3)
    h2e = [e for e in entries if e["path"] in ("/logged", "/logged?q=1")]
    assert len(h2e) == 1, entries
    e = h2e[0]
    assert (e["protocol"], e["method"], e["status"], e["host"]) == ("HTTP/2", "POST", 200, "log.test")
    assert e["listener"] == "web" and e["route"] == "main" and e["upstream"] == "app"
    assert e["request_id"] == res.header("x-request-id")
    assert e["user_agent"] == "h2-e2e/1.0" and e["bytes_in"] >= 500
    assert [x["protocol"] for x in entries] == ["HTTP/2", "HTTP/2", "HTTP/1.1"]


def test_metrics_count_h2_requests(gateway_factory, backend, http):
    from prometheus_client.parser import text_string_to_metric_families
    admin = free_port()
    gw = start_gateway(gateway_factory, {"app": [backend]},
                       [{"name": "h2r", "match": {"path": "/m"}, "upstream": "app"}],
                       admin={"listen": f"{HOST}:{admin}"})
    with H2Client(gw.port) as c:
        for i in range(7):
            assert c.request("GET", f"/m/{i}").status == 200
        assert c.request("GET", "/none").status == 404

    def samples():
        text = http.get(f"http://{HOST}:{admin}/metrics", timeout=5).text
        return {(s.name, frozenset(s.labels.items())): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def total():
        m = samples()
        return m if m.get(("sluice_requests_total", frozenset({"route": "h2r", "code": "2xx"}.items()))) == 7 else None
    m = wait_for(total, 5, 0.1, "7 h2 requests in sluice_requests_total")
    assert m.get(("sluice_requests_total", frozenset({"route": "", "code": "4xx"}.items()))) == 1
    assert m.get(("sluice_upstream_requests_total",
                  frozenset({"upstream": "app", "target": backend.address, "code": "2xx"}.items()))) == 7
    assert m.get(("sluice_connections_total", frozenset({"listener": "web"}.items())), 0) >= 1


# --------------------------------------------------------------------------------------------
# h2 limits and abuse


def test_concurrent_streams_limit_is_100_and_extra_streams_are_refused(gateway_factory, backend):
    gw = start_gateway(gateway_factory, {"app": [backend]}, catch_all())
    with H2Client(gw.port, timeout=20) as c:
        settings = c.wait_settings()
        assert settings.get(int(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)) == 100, settings
        c.conn.ignore_stream_limit = True
        # 100 streams stay open: their bodies have not been sent yet
        open_ids = [c.start("POST", f"/open/{i}", headers=[("content-length", "3")], end_stream=False)
                    for i in range(100)]
        extra = [c.start("GET", f"/extra/{i}") for i in range(5)]
        c.wait(lambda: all(c.streams[s].done for s in extra) or c.goaway is not None or c.closed,
               15, "the extra streams to be refused")
        if c.goaway is not None:
            # libnghttp2 treats streams beyond the acknowledged limit as a connection error
            # (GOAWAY PROTOCOL_ERROR; RFC 9113 5.1.2 asks for a stream error): the client broke
            # the limit it acknowledged. Nothing of the extra streams reached the backend, and
            # the gateway serves new connections (checked below).
            assert c.goaway.error_code == 1, c.goaway
            assert_serves_fresh_connections(gw)
            assert not [q for q in backend.requests if q.target.startswith("/extra")]
            return
        for s in extra:
            assert c.streams[s].reset == REFUSED_STREAM and c.streams[s].status is None, c.streams[s]
        for s in open_ids:
            c.send_body(s, b"abc")
        c.wait(lambda: all(c.streams[s].done for s in open_ids), 20, "the 100 open streams")
        statuses = Counter(c.streams[s].status for s in open_ids)
        assert statuses == {200: 100}, statuses
        assert c.goaway is None
        # the connection is fine afterwards
        assert c.request("GET", "/after").status == 200
    assert not [q for q in backend.requests if q.target.startswith("/extra")]
    assert len([q for q in backend.requests if q.target.startswith("/open/")]) == 100


def test_oversized_header_list_is_refused_and_the_gateway_goes_on(gateway_factory, backend):
    gw = start_gateway(gateway_factory, {"app": [backend]}, catch_all(),
                       limits={"max_header_bytes": "8KiB", "max_headers": 100})
    problems = []   # every finding of this test at once (each case is independent)
    refused = 0
    with H2Client(gw.port) as c:
        settings = c.wait_settings()
        limit = settings.get(int(h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE))
        assert limit is not None and 8192 <= limit <= 65536, f"SETTINGS_MAX_HEADER_LIST_SIZE {limit}"
        # under the limit: fine
        assert c.request("GET", "/fits", headers=[("x-pad", "p" * 4000)]).status == 200
        # 20 KB of headers (HEADERS + CONTINUATION), then 150 headers: each refused on its
        # stream (431 with the JSON error body, or RST_STREAM), not by closing the connection
        for path, headers in (("/too-big", [("x-pad", "q" * 20000)]),
                              ("/too-many", [(f"x-h{i}", "v") for i in range(150)])):
            sid = c.start("GET", path, headers=headers)
            c.wait(lambda: c.streams[sid].done or c.goaway is not None or c.closed, 10, f"an answer on {path}")
            assert c.goaway is None and not c.closed, f"{path}: connection closed (GOAWAY {c.goaway})"
            res = c.streams[sid]
            if path == "/too-big":
                # Over SETTINGS_MAX_HEADER_LIST_SIZE: the HTTP/2 layer answers a bare 431 before
                # the exchange pipeline sees the request (so no JSON body and no access-log line;
                # docs/configuration.md says so).
                if res.status is not None:
                    assert res.status == 431, res
                elif res.reset is None:
                    problems.append(f"{path}: neither an answer nor a reset: {res}")
            elif res.status is not None:
                refused += 1
                try:
                    json_error(res, 431)
                except AssertionError as e:
                    problems.append(f"{path}: {e}")
            elif res.reset is None:
                problems.append(f"{path}: neither an answer nor a reset: {res}")
            assert c.request("GET", "/after").status == 200
    assert "/too-big" not in [q.target for q in backend.requests]
    assert "/too-many" not in [q.target for q in backend.requests]
    assert_serves_fresh_connections(gw)
    # every 431 answered over h2 is logged as an HTTP/2 request
    def lines_431():
        return [e for e in gw.access_log() if e["status"] == 431]
    with contextlib.suppress(AssertionError):  # the log writer is asynchronous
        wait_for(lambda: len(lines_431()) >= refused, 3, 0.05, "the 431 lines")
    logged = lines_431()
    if len(logged) != refused:
        problems.append(f"{refused} answers of 431, {len(logged)} access log lines with 431: {logged}")
    if any(e["protocol"] != "HTTP/2" for e in logged):
        problems.append(f"431 logged with protocol {[e['protocol'] for e in logged]}")
    assert not problems, "\n".join(problems)


def _flood(c: H2Client, frames: bytes, total: int, batch: int):
    """Writes `frames` (`batch` frames per write) up to `total` times without reading the
    answers, until the gateway stops reading or closes; then reads what it sent."""
    sent = 0
    c.sock.settimeout(3)
    try:
        while sent < total:
            c.send_raw(frames)
            sent += batch
    except (socket.timeout, BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
        pass
    c.read_until_closed(15)
    return sent


def test_rapid_reset_closes_the_connection_with_goaway(gateway_factory, backend):
    gw = start_gateway(gateway_factory, {"app": {"targets": [backend.address], "max_connections": 64,
                                                 "max_pending": 64}}, catch_all())
    with H2Client(gw.port, timeout=10) as c:
        c.wait_settings()
        c.conn.ignore_stream_limit = True
        sent = 0
        try:
            while sent < 20000 and c.goaway is None and not c.closed:
                for _ in range(100):
                    sid = c.conn.get_next_available_stream_id()
                    c.conn.send_headers(sid, c.headers_for("GET", f"/rr/{sid}"), end_stream=True)
                    c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                c.flush()
                sent += 100
                c.pump(0.001)
        except (OSError, h2.exceptions.ProtocolError):
            pass
        c.read_until_closed(15)
        assert c.goaway is not None, f"no GOAWAY after {sent} opened-and-cancelled streams " \
                                     f"(closed={c.closed}, reset_by_peer={c.reset_by_peer})"
        assert c.closed or c.reset_by_peer, "the connection stayed open after the GOAWAY"
    assert sent < 20000 or c.goaway is not None
    assert_serves_fresh_connections(gw)


@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_control_frame_flood_gets_goaway(gateway_factory, backend, kind):
    gw = start_gateway(gateway_factory, {"app": [backend]}, catch_all())
    with H2Client(gw.port, timeout=10, rcvbuf=32 * 1024) as c:  # a flooder that reads nothing
        c.wait_settings()
        if kind == "ping":
            frame = struct.pack(">I", 8)[1:] + bytes([0x6, 0x0]) + struct.pack(">I", 0) + b"pingpong"
        else:
            frame = struct.pack(">I", 0)[1:] + bytes([0x4, 0x0]) + struct.pack(">I", 0)
        batch = 4000
        sent = _flood(c, frame * batch, 400_000, batch)
        # The gateway ends the connection: with a GOAWAY when the flooder reads it (SETTINGS), or
        # by closing it when the ACKs it owes pile up unread (PING: a GOAWAY queued behind
        # unread output cannot arrive; the close then comes as a reset).
        assert c.goaway is not None or c.closed or c.reset_by_peer, \
            f"connection still open after {sent} {kind.upper()} frames (acks={c.pings_acked})"
        if kind == "settings":
            assert c.goaway is not None, f"no GOAWAY after {sent} SETTINGS frames"
    assert_serves_fresh_connections(gw)


def test_other_connections_are_served_during_a_flood(gateway_factory, backend):
    gw = start_gateway(gateway_factory, {"app": [backend]}, catch_all())
    done = threading.Event()
    errors = []

    def flooder():
        try:
            with H2Client(gw.port, timeout=10, rcvbuf=32 * 1024) as c:
                frame = struct.pack(">I", 8)[1:] + bytes([0x6, 0x0]) + struct.pack(">I", 0) + b"floodflo"
                _flood(c, frame * 4000, 400_000, 4000)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            done.set()

    t = threading.Thread(target=flooder, daemon=True)
    t.start()
    try:
        with H2Client(gw.port) as c:
            for i in range(5):
                res = c.request("GET", f"/during/{i}")
                assert res.status == 200 and res.json()["target"] == f"/during/{i}"
    finally:
        done.wait(30)
        t.join(5)
    assert_serves_fresh_connections(gw)


def test_a_stream_the_upstream_refused_is_retried_on_another_target_even_for_post(
        gateway_factory, h2_backend_factory):
    # REFUSED_STREAM means "not processed" (RFC 9113 8.7): like a refused connect, it may go to
    # another target whatever the method. The other statuses of a reset are not retried for POST.
    refusing = h2_backend_factory("refusing")
    refusing.handler = lambda q: H2Reply(reset=int(h2.errors.ErrorCodes.REFUSED_STREAM))
    good = h2_backend_factory("good")
    gw = start_gateway(gateway_factory,
                       {"app": {"targets": [refusing.address, good.address], "protocol": "h2c",
                                "balance": "round_robin",
                                "retries": {"attempts": 1, "on": ["connect_failure"]},
                                "outlier": {"consecutive_failures": 0}}},
                       catch_all())
    with H2Client(gw.port) as c:
        # (with a content-length the body is kept for a retry; a body of unknown length streams
        # full duplex and is not retried, docs/configuration.md)
        for i in range(4):  # round robin: half of them go to the refusing target first
            res = c.request("POST", f"/p{i}", body=b"payload", headers=[("content-length", "7")])
            assert res.status == 200, (i, res.status, res.reset, res.body[:200])
            assert res.json()["path"] == f"/p{i}"
    assert len(refusing.requests) >= 1  # it was asked, and refused
    assert sorted(r.path for r in good.requests) == [f"/p{i}" for i in range(4)]
    assert all(r.body == b"payload" for r in good.requests)
