"""`limits` (SPEC section 2) and their statuses (section 3): 414, 431, 413, 408. The backend
never sees a request the gateway refused."""

import json
import time

import pytest

from conftest import RawClient, proxy_config

LIMITS = {"max_request_line": "1KiB", "max_headers": 10, "max_header_bytes": "2KiB", "max_body": "1KiB",
          "header_timeout": "300ms"}


@pytest.fixture
def limited(gateway_factory, backend):
    gw = gateway_factory(proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app"}],
                                      limits=LIMITS))
    return gw, backend


def refused(gw, data: bytes, status: int):
    with RawClient(gw.port) as c:
        c.send(data)
        r = c.read_response()
        assert r.status == status, r.body
        body = json.loads(r.body)
        assert body["status"] == status and body["error"]
        assert body["request_id"] == r.header("x-request-id")
    return r


def test_request_line_over_max_request_line_gets_414(limited):
    gw, backend = limited
    refused(gw, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414)
    assert backend.heads_seen == 0


def test_request_line_just_under_the_limit_is_forwarded(limited):
    gw, backend = limited
    target = b"/" + b"a" * 900
    with RawClient(gw.port) as c:
        c.send(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.read_response().status == 200
    assert backend.last.target.encode() == target


def test_more_headers_than_max_headers_gets_431(limited):
    gw, backend = limited
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(20))
    refused(gw, b"GET / HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n", 431)
    assert backend.heads_seen == 0


def test_head_bigger_than_max_header_bytes_gets_431(limited):
    gw, backend = limited
    refused(gw, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 3000 + b"\r\n\r\n", 431)
    assert backend.heads_seen == 0


def test_content_length_over_max_body_gets_413_without_reaching_the_backend(limited):
    gw, backend = limited
    refused(gw, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000, 413)
    assert backend.heads_seen == 0


def test_chunked_body_over_max_body_gets_413_and_is_not_delivered(limited):
    gw, backend = limited
    chunks = b"".join(b"100\r\n" + b"c" * 256 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"  # 2048 bytes
    with RawClient(gw.port) as c:
        c.send(b"POST /chunky HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            c.send(chunks)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
    assert r.status == 413
    assert json.loads(r.body)["status"] == 413
    assert backend.requests == [], "the backend received a complete over-limit body"


def test_body_within_max_body_is_forwarded(limited):
    gw, backend = limited
    with RawClient(gw.port) as c:
        c.send(b"POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"y" * 1000)
        assert c.read_response().status == 200
    assert backend.last.body == b"y" * 1000


def test_slow_request_head_gets_408_or_a_close_after_header_timeout(limited):
    gw, backend = limited
    with RawClient(gw.port, timeout=5) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow")
        started = time.monotonic()
        try:
            r = c.read_response()
            assert r.status == 408
            assert json.loads(r.body)["status"] == 408
        except ConnectionError:
            pass  # closed without an answer is allowed too
        assert c.closed_by_peer(2)
        assert time.monotonic() - started < 3
    assert backend.heads_seen == 0


def test_slow_head_trickled_byte_by_byte_is_cut_off(limited):
    gw, backend = limited
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Trickle: " + b"t" * 200 + b"\r\n\r\n"
    started = time.monotonic()
    with RawClient(gw.port, timeout=5) as c:
        try:
            for byte in head:
                c.send(bytes([byte]))
                time.sleep(0.01)   # the point of this test is a slow client: 2 s for the whole head
        except (BrokenPipeError, ConnectionResetError):
            pass
        cut_after = time.monotonic() - started
    assert cut_after < 1.5, "header_timeout bounds the whole head, not the gap between bytes"
    assert backend.heads_seen == 0
