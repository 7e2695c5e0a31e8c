"""Strict HTTP/1.1 parsing (SPEC section 3, RFC 9112): a request that could be read two ways is
answered 400 with a JSON body, the connection is closed, and nothing reaches the backend."""

import json

import pytest

from conftest import RawClient

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

HEAD_ATTACKS = {
    "content_length_and_transfer_encoding":
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "transfer_encoding_and_content_length":
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "two_different_content_lengths":
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 38\r\n\r\n" + SMUGGLED,
    "content_length_list_of_different_values":
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 38\r\n\r\n" + SMUGGLED,
    "content_length_with_sign":
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +38\r\n\r\n" + SMUGGLED,
    "content_length_not_a_number":
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3a\r\n\r\nabc",
    "obs_fold":
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
    "obs_fold_of_transfer_encoding":
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\nabc",
    "whitespace_before_first_header":
        b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
    "bare_cr_in_header_value":
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\rX-B: two\r\n\r\n",
    "bare_cr_in_request_line":
        b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n",
    "bare_lf_inside_the_head":
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\nTransfer-Encoding: chunked\r\n\r\n",
    "space_before_colon":
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 38\r\n\r\n" + SMUGGLED,
    "tab_before_colon":
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
    "transfer_encoding_chunked_in_http10":
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "chunked_not_the_final_encoding":
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "nul_in_header_value":
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
    "missing_host_in_http11":
        b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
    "two_host_headers":
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
}

BODY_ATTACKS = {
    "chunk_size_not_hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "chunk_size_negative": b"-5\r\nhello\r\n0\r\n\r\n",
    "chunk_size_with_0x_prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk_size_overflowing_64_bits": b"1ffffffffffffffff5\r\nhello\r\n0\r\n\r\n",
    "chunk_data_longer_than_its_size": b"5\r\nhelloEXTRA\r\n0\r\n\r\n",
    "chunk_size_line_with_bare_lf": b"5\nhello\r\n0\r\n\r\n",
}


def expect_400_and_close(port, data, statuses=(400,)):
    with RawClient(port) as c:
        try:
            c.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
        assert r.status in statuses, (r.status, r.body)
        body = json.loads(r.body)
        assert body["status"] == r.status and body["error"]
        assert body["request_id"] == r.header("x-request-id")
        assert c.closed_by_peer(3), "the connection must be closed after a 400"


@pytest.mark.parametrize("attack", HEAD_ATTACKS.values(), ids=HEAD_ATTACKS.keys())
def test_ambiguous_request_head_is_rejected_with_400_and_close(proxy, attack):
    gw, backend = proxy
    expect_400_and_close(gw.port, attack)
    assert backend.heads_seen == 0, [r.target for r in backend.requests]


@pytest.mark.parametrize("body", BODY_ATTACKS.values(), ids=BODY_ATTACKS.keys())
def test_invalid_chunked_body_is_rejected_with_400_and_close(proxy, body):
    gw, backend = proxy
    expect_400_and_close(gw.port, b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert backend.requests == [], "the backend received a complete request"


@pytest.mark.parametrize("coding", [b"xchunked", b"gzip, chunked", b"identity"])
def test_unknown_or_unsupported_transfer_coding_is_refused_and_closed(proxy, coding):
    # RFC 9112 section 6.1: 501 for a coding the server does not understand (400 accepted too)
    gw, backend = proxy
    expect_400_and_close(gw.port, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + coding
                         + b"\r\n\r\n0\r\n\r\n" + SMUGGLED, statuses=(400, 501))
    assert backend.heads_seen == 0


def test_valid_request_on_a_fresh_connection_still_works_after_attacks(proxy):
    gw, backend = proxy
    expect_400_and_close(gw.port, HEAD_ATTACKS["content_length_and_transfer_encoding"])
    with RawClient(gw.port) as c:
        c.send(b"GET /fine HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.read_response().status == 200
    assert [r.target for r in backend.requests] == ["/fine"]


def test_equal_duplicate_content_lengths_are_not_ambiguous(proxy):
    # RFC 9112 section 6.3 allows a recipient to accept identical repeated values; either a
    # clean 400 or forwarding exactly one 5-byte body is acceptable, never anything else.
    gw, backend = proxy
    with RawClient(gw.port) as c:
        c.send(b"POST /dup HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")
        r = c.read_response()
    assert r.status in (200, 400)
    if r.status == 200:
        assert backend.last.body == b"hello"
        assert backend.last.header_all("content-length") == ["5"]
