"""Bodies stream (SPEC section 3): 1 GiB up and 1 GiB down through the gateway while its
resident memory stays within 64 MiB of what it used before the transfer."""

import hashlib
import socket
import threading
import time

import pytest

from conftest import STREAM_BLOCK, RawClient, Reply, proxy_config, rss_bytes

GIB = 1 << 30
RSS_BUDGET = 64 << 20
PIECE = STREAM_BLOCK * 16  # 1 MiB


def expected_sha256(total: int) -> str:
    h = hashlib.sha256()
    for _ in range(total // len(PIECE)):
        h.update(PIECE)
    return h.hexdigest()


class RssSampler:
    """Samples VmRSS of `pid` every 20 ms on a thread until stopped; keeps the peak."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self.samples += 1
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def warmed_baseline(gw) -> int:
    with RawClient(gw.port) as c:
        for _ in range(3):
            c.send(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
            assert c.read_response().status == 200
    return rss_bytes(gw.pid)


@pytest.mark.slow
def test_1gib_upload_streams_through_with_bounded_memory(gateway_factory, backend):
    gw = gateway_factory(proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app"}],
                                      limits={"max_body": "2GiB"}))
    backend.store_bodies = False
    baseline = warmed_baseline(gw)
    with RssSampler(gw.pid) as rss, RawClient(gw.port, timeout=60) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\n"
               b"Content-Length: %d\r\n\r\n" % GIB)
        for _ in range(GIB // len(PIECE)):
            c.send(PIECE)
        r = c.read_response()
    assert r.status == 200
    seen = backend.last
    assert seen.target == "/upload"
    assert seen.body_bytes == GIB
    assert seen.body_sha256 == expected_sha256(GIB)
    assert rss.samples > 5
    growth = rss.peak - baseline
    assert growth <= RSS_BUDGET, f"RSS grew by {growth >> 20} MiB (baseline {baseline >> 20} MiB)"


@pytest.mark.slow
def test_1gib_download_streams_through_with_bounded_memory(proxy):
    gw, backend = proxy
    backend.handler = lambda req: (Reply(200, [("Content-Type", "application/octet-stream")], stream_bytes=GIB)
                                   if req.target == "/download" else backend.default_reply(req))
    baseline = warmed_baseline(gw)
    got = 0
    digest = hashlib.sha256()
    with RssSampler(gw.pid) as rss, RawClient(gw.port, timeout=60) as c:
        c.send(b"GET /download HTTP/1.1\r\nHost: a\r\n\r\n")
        while b"\r\n\r\n" not in c.buf:
            assert c.fill()
        head, rest = c.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"content-length: %d" % GIB in head.lower()
        got += len(rest)
        digest.update(rest)
        while got < GIB:
            chunk = c.sock.recv(1 << 20)
            assert chunk, f"connection closed after {got} bytes"
            got += len(chunk)
            digest.update(chunk)
    assert got == GIB
    assert digest.hexdigest() == expected_sha256(GIB)
    assert backend.last.target == "/download"
    assert rss.samples > 5
    growth = rss.peak - baseline
    assert growth <= RSS_BUDGET, f"RSS grew by {growth >> 20} MiB (baseline {baseline >> 20} MiB)"


SLOW_TOTAL = 256 << 20
PAUSE = 1.5


@pytest.mark.slow
def test_slow_reading_client_pushes_back_instead_of_the_gateway_buffering(proxy):
    gw, backend = proxy
    backend.handler = lambda req: (Reply(200, [], stream_bytes=SLOW_TOTAL) if req.target == "/big"
                                   else backend.default_reply(req))
    baseline = warmed_baseline(gw)
    with RssSampler(gw.pid) as rss, RawClient(gw.port, timeout=30) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        c.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        got = 0
        while got < (1 << 20):
            got += len(c.sock.recv(1 << 16))
        time.sleep(PAUSE)   # the behaviour under test: a client that stops reading for a while
        paused_peak = rss.peak
        while got < SLOW_TOTAL:   # head bytes are counted too: a few bytes over is fine
            chunk = c.sock.recv(1 << 20)
            assert chunk
            got += len(chunk)
    growth = paused_peak - baseline
    assert growth <= RSS_BUDGET, f"RSS grew by {growth >> 20} MiB while the client was not reading"
    assert rss.peak - baseline <= RSS_BUDGET


@pytest.mark.slow
def test_slow_reading_backend_pushes_back_on_the_uploading_client(gateway_factory, backend):
    gw = gateway_factory(proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app"}],
                                      limits={"max_body": "1GiB"}))
    backend.store_bodies = False
    backend.pause_body = (1 << 20, PAUSE)
    baseline = warmed_baseline(gw)
    with RssSampler(gw.pid) as rss, RawClient(gw.port, timeout=30) as c:
        c.send(b"PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % SLOW_TOTAL)
        for _ in range(SLOW_TOTAL // len(PIECE)):
            c.send(PIECE)
        r = c.read_response()
    assert r.status == 200
    assert backend.last.body_bytes == SLOW_TOTAL
    growth = rss.peak - baseline
    assert growth <= RSS_BUDGET, f"RSS grew by {growth >> 20} MiB while the backend was not reading"
