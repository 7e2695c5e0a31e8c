"""Shared fixtures for the end-to-end tests: the gateway under test, recording backends, nginx.

Everything runs on 127.0.0.1 with ports the kernel handed out, every wait is bounded, and every
process or thread a test starts is stopped by the fixture that started it. The gateway binary is
$SLUICE_BIN (default: build/debug/sluice, the ASan+UBSan build); a gateway that printed a
sanitizer report fails the test that ran it.

Vocabulary as in STYLE.md: the *client* talks to the gateway (downstream); a *backend* is one
target of an upstream. Backends here record what they received, so each test can check both what
the client got and what the backend saw.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
SLUICE_BIN = os.environ.get("SLUICE_BIN") or str(REPO / "build" / "debug" / "sluice")
NGINX_BIN = "/usr/sbin/nginx"
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "SUMMARY: UndefinedBehaviorSanitizer",
)
HOST = "127.0.0.1"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long transfers (select with -m slow, skip with -m 'not slow')")


# --------------------------------------------------------------------------------------------
# small utilities


def free_port() -> int:
    """A port nothing listens on right now (bound once with port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.01,
             what: str = "condition"):
    """Polls `predicate` until it returns something truthy; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def yaml_text(config) -> str:
    """A config as YAML text: strings are used as they are, dicts are dumped as JSON (which is YAML)."""
    return config if isinstance(config, str) else json.dumps(config, indent=2)


# --------------------------------------------------------------------------------------------
# a raw HTTP/1.1 client: exact bytes out, every response (interim ones too) parsed back


@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool = False
    interim: list["RawResponse"] = field(default_factory=list)  # 1xx answers before this one

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)


class RawClient:
    """One client connection to the gateway; send exact bytes, read responses one at a time."""

    def __init__(self, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()  # received, not yet parsed

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def fill(self) -> bool:
        """Reads what is available into `buf`; False when the peer closed."""
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            if not self.fill():
                raise ConnectionError("connection closed in the middle of a line")
        line = bytes(self.buf[:end])
        del self.buf[:end + 2]
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.fill():
                raise ConnectionError(f"connection closed after {len(self.buf)} of {n} body bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_response(self, head_request: bool = False) -> RawResponse:
        interim = []
        while True:
            resp = self.read_one(head_request)
            if 100 <= resp.status < 200 and resp.status != 101:
                interim.append(resp)
                continue
            resp.interim = interim
            return resp

    def read_one(self, head_request: bool = False) -> RawResponse:
        """The next response on the wire, a 1xx interim one included."""
        if not self.buf and not self.fill():
            raise ConnectionError("connection closed before a response")
        status_line = self._line().decode("latin-1")
        version, status, *reason = status_line.split(" ", 2)
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        resp = RawResponse(version, int(status), reason[0] if reason else "", headers, b"")
        code = resp.status
        if head_request or code < 200 or code in (204, 304):
            return resp
        te = (resp.header("transfer-encoding") or "").lower()
        if "chunked" in te:
            resp.chunked = True
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():  # trailers
                        pass
                    break
                parts.append(self._exact(size))
                self._exact(2)
            resp.body = b"".join(parts)
        elif resp.header("content-length") is not None:
            resp.body = self._exact(int(resp.header("content-length")))
        else:  # close-delimited
            while self.fill():
                pass
            resp.body = bytes(self.buf)
            self.buf.clear()
        return resp

    def closed_by_peer(self, timeout: float = 3.0) -> bool:
        """True when the gateway closes (or resets) the connection within `timeout` with nothing
        more to read; extra bytes make it False."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def raw_request(port: int, data: bytes, timeout: float = 5.0, head_request: bool = False) -> RawResponse:
    with RawClient(port, timeout) as c:
        c.send(data)
        return c.read_response(head_request)


# --------------------------------------------------------------------------------------------
# recording backend: a small threaded HTTP/1.1 server written on raw sockets


@dataclass
class RecordedRequest:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    body_bytes: int          # counted even when the body is discarded
    chunked: bool            # arrived with Transfer-Encoding: chunked
    conn_id: int             # which backend connection it came on (1, 2, ...)
    backend: str
    body_sha256: str = ""    # of the whole body, also when it was discarded

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def header(self, name: str) -> str | None:
        vals = self.header_all(name)
        return vals[0] if vals else None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def has_header(self, name: str) -> bool:
        return bool(self.header_all(name))


@dataclass
class Reply:
    """What a backend answers. Exactly one body form: `body` (sent with Content-Length unless
    `length=False`, then close-delimited), `chunks` (chunked encoding), or `stream_bytes`
    (a generated body of that many bytes, with Content-Length, never held in memory)."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunks: list[bytes] | None = None
    stream_bytes: int | None = None
    length: bool = True
    delay: float = 0.0       # seconds before the head is sent
    hang: bool = False       # never answer; the connection stays open until the backend stops
    close: bool = False      # close the connection after this answer
    drop: bool = False       # close the connection without answering
    raw: bytes | None = None  # send exactly these bytes instead of a composed answer
    reason: str = ""


STREAM_BLOCK = bytes(range(256)) * 256  # 64 KiB of a known pattern
HEALTH_CHECK_AGENT = "sluice-health-check"  # the User-Agent of the gateway's active health checks


class Backend:
    """Accepts connections, parses requests (keep-alive, Content-Length and chunked bodies),
    records them and answers with `handler(request) -> Reply`. The default handler answers 200
    with a JSON body naming the backend, the method and the target."""

    def __init__(self, name: str = "backend", port: int = 0):
        self.name = name
        self.handler: Callable[[RecordedRequest], Reply] = self.default_reply
        self.store_bodies = True
        self.pause_body = None       # (after_bytes, seconds): stop reading a body for a while
        self.tls_context = None      # an ssl.SSLContext (server side): serve HTTPS
        self.tls_failures = 0        # TLS handshakes that failed
        self.requests: list[RecordedRequest] = []
        self.heads_seen = 0          # requests whose head arrived (body maybe still streaming)
        self.connections = 0
        self.closed_connections = 0  # connections that ended (either side closed)
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._ids = itertools.count(1)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, port))   # a fixed port: a backend started again where it was
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.address = f"{HOST}:{self.port}"
        t = threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True)
        t.start()
        self._threads.append(t)

    def default_reply(self, req: RecordedRequest) -> Reply:
        body = json.dumps({"backend": self.name, "method": req.method, "target": req.target,
                           "body_bytes": req.body_bytes}).encode()
        return Reply(200, [("Content-Type", "application/json")], body)

    # -- waiting on what arrived ------------------------------------------------------------

    def wait_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise AssertionError(f"{self.name}: {len(self.requests)} of {n} requests after {timeout}s")
            return list(self.requests)

    def wait_heads(self, n: int, timeout: float = 5.0):
        with self.cond:
            if not self.cond.wait_for(lambda: self.heads_seen >= n, timeout):
                raise AssertionError(f"{self.name}: {self.heads_seen} of {n} request heads after {timeout}s")

    @property
    def last(self) -> RecordedRequest:
        assert self.requests, f"{self.name} received no request"
        return self.requests[-1]

    def proxied(self) -> list[RecordedRequest]:
        """What clients sent through the gateway: every request but the gateway's health checks."""
        with self.cond:
            return [r for r in self.requests if r.header("user-agent") != HEALTH_CHECK_AGENT]

    def health_checks(self) -> list[RecordedRequest]:
        with self.cond:
            return [r for r in self.requests if r.header("user-agent") == HEALTH_CHECK_AGENT]

    def wait_proxied(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        with self.cond:
            def enough():
                return sum(r.header("user-agent") != HEALTH_CHECK_AGENT for r in self.requests) >= n
            if not self.cond.wait_for(enough, timeout):
                raise AssertionError(f"{self.name}: fewer than {n} proxied requests after {timeout}s")
        return self.proxied()

    def reset(self):
        with self.cond:
            self.requests.clear()
            self.heads_seen = 0

    # -- server -----------------------------------------------------------------------------

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn_id = next(self._ids)
            with self.cond:
                self.connections += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, conn_id), daemon=True,
                                 name=f"{self.name}-conn{conn_id}")
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket, conn_id: int):
        rfile = None
        try:
            conn.settimeout(60)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls_context is not None:
                try:
                    raw = conn
                    conn = self.tls_context.wrap_socket(raw, server_side=True)
                    with self.cond:  # stop() must reach the socket that now owns the fd
                        self._conns = [conn if c is raw else c for c in self._conns]
                except (OSError, ValueError):
                    with self.cond:
                        self.tls_failures += 1
                    raise
            rfile = conn.makefile("rb", buffering=256 * 1024)
            while not self.stopping.is_set():
                if not self._serve_one(conn, rfile, conn_id):
                    break
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                if rfile is not None:
                    rfile.close()
            with contextlib.suppress(OSError):
                conn.close()
            with self.cond:
                self.closed_connections += 1
                self.cond.notify_all()

    def _serve_one(self, conn, rfile, conn_id) -> bool:
        line = rfile.readline(65536)
        while line in (b"\r\n", b"\n"):
            line = rfile.readline(65536)
        if not line:
            return False
        method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        headers = []
        while True:
            h = rfile.readline(65536)
            if not h:
                return False
            if h in (b"\r\n", b"\n"):
                break
            name, _, value = h.decode("latin-1").rstrip("\r\n").partition(":")
            headers.append((name, value.strip()))
        with self.cond:
            self.heads_seen += 1
            self.cond.notify_all()

        def hval(n):
            return [v for k, v in headers if k.lower() == n]

        if any("100-continue" in v.lower() for v in hval("expect")):
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        parts: list[bytes] = []
        digest = hashlib.sha256()
        count = 0
        chunked = any("chunked" in v.lower() for v in hval("transfer-encoding"))
        if chunked:
            while True:
                size_line = rfile.readline(4096)
                if not size_line:
                    return False
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while rfile.readline(4096) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    piece = rfile.read(min(left, 1 << 20))
                    if not piece:
                        return False
                    left -= len(piece)
                    count += len(piece)
                    digest.update(piece)
                    if self.store_bodies:
                        parts.append(piece)
                rfile.read(2)
        elif hval("content-length"):
            left = int(hval("content-length")[0])
            pause = self.pause_body
            while left:
                piece = rfile.read(min(left, 1 << 20))
                if not piece:
                    return False
                if pause and count >= pause[0]:
                    self.stopping.wait(pause[1])   # a slow reader: backpressure must reach the client
                    pause = None
                left -= len(piece)
                count += len(piece)
                digest.update(piece)
                if self.store_bodies:
                    parts.append(piece)
        req = RecordedRequest(method, target, version, headers, b"".join(parts), count, chunked,
                              conn_id, self.name, digest.hexdigest())
        with self.cond:
            self.requests.append(req)
            self.cond.notify_all()

        reply = self.handler(req)
        if reply.delay and self.stopping.wait(reply.delay):
            return False
        if reply.hang:
            self.stopping.wait(60)
            return False
        if reply.drop:
            return False
        if reply.raw is not None:
            conn.sendall(reply.raw)
            return not reply.close
        self._send(conn, reply)
        conn_tokens = ",".join(hval("connection")).lower()
        if reply.close or "close" in conn_tokens or not reply.length:
            return False
        if version == "HTTP/1.0" and "keep-alive" not in conn_tokens:
            return False
        return True

    def _send(self, conn, reply: Reply):
        reason = reply.reason or {200: "OK", 201: "Created", 204: "No Content", 404: "Not Found",
                                  500: "Internal Server Error"}.get(reply.status, "Status")
        head = [f"HTTP/1.1 {reply.status} {reason}"]
        head += [f"{k}: {v}" for k, v in reply.headers]
        if reply.chunks is not None:
            head.append("Transfer-Encoding: chunked")
        elif reply.stream_bytes is not None:
            head.append(f"Content-Length: {reply.stream_bytes}")
        elif reply.length and not any(k.lower() == "content-length" for k, _ in reply.headers):
            head.append(f"Content-Length: {len(reply.body)}")
        if reply.close or not reply.length:
            head.append("Connection: close")
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if reply.chunks is None and reply.stream_bytes is None:
            conn.sendall(head_bytes + reply.body)  # one write: no Nagle/delayed-ACK stall
            return
        conn.sendall(head_bytes)
        if reply.chunks is not None:
            for c in reply.chunks:
                conn.sendall(b"%x\r\n%s\r\n" % (len(c), c))
            conn.sendall(b"0\r\n\r\n")
        elif reply.stream_bytes is not None:
            left = reply.stream_bytes
            block = memoryview(STREAM_BLOCK)
            while left:
                n = min(left, len(block))
                conn.sendall(block[:n])
                left -= n

    def stop(self):
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self.cond:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()
        for t in self._threads:
            t.join(timeout=5)


@pytest.fixture
def backend_factory():
    started: list[Backend] = []

    def make(name: str = "backend", port: int = 0) -> Backend:
        b = Backend(name, port)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def backend(backend_factory) -> Backend:
    return backend_factory("backend")


# --------------------------------------------------------------------------------------------
# the gateway under test


class Gateway:
    """One `sluice run` process with its config in tmp_path; stdout (the access log by default)
    and stderr (the error log) go to files there."""

    def __init__(self, tmp_path: Path, index: int):
        self.dir = tmp_path / f"gateway{index}"
        self.dir.mkdir()
        self.config_path = self.dir / "sluice.yaml"
        self.stdout_path = self.dir / "stdout.log"
        self.stderr_path = self.dir / "stderr.log"
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def write_config(self, config) -> Path:
        self.config_path.write_text(yaml_text(config))
        return self.config_path

    def start(self, config, port: int, wait: bool = True, timeout: float = 15.0,
              args: list[str] | None = None):
        """Runs `sluice run -c <config>`, or `sluice <args>` when args are given (config unused)."""
        self.port = port
        if args is None:
            self.write_config(config)
            args = ["run", "-c", str(self.config_path)]
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([SLUICE_BIN, *args],
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         cwd=self.dir, env=env)
        if wait:
            def up():
                if self.proc.poll() is not None:
                    raise AssertionError(f"gateway exited with {self.proc.returncode} at startup:\n"
                                         + self.stderr())
                return port_accepts(port)
            wait_for(up, timeout, 0.02, f"the gateway to accept on port {port}")
        return self

    # -- what it printed ---------------------------------------------------------------------

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def access_log(self) -> list[dict]:
        entries = []
        for line in self.stdout().splitlines():
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    entries.append(json.loads(line))
        return entries

    def wait_access_log(self, n: int, timeout: float = 5.0) -> list[dict]:
        return wait_for(lambda: (lambda e: e if len(e) >= n else None)(self.access_log()), timeout,
                        what=f"{n} access log lines")

    def error_log(self) -> list[dict]:
        entries = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    entries.append(json.loads(line))
        return entries

    def error_messages(self, containing: str = "") -> list[str]:
        return [e.get("msg", "") for e in self.error_log() if containing in e.get("msg", "")]

    def wait_error_log(self, containing: str, timeout: float = 5.0) -> dict:
        """The first error-log entry whose message contains `containing`, waiting up to `timeout`."""
        def find():
            return next((e for e in self.error_log() if containing in e.get("msg", "")), None)
        return wait_for(find, timeout, what=f"{containing!r} in the error log")

    def sanitizer_report(self) -> str | None:
        text = self.stderr() + self.stdout()
        for marker in SANITIZER_MARKERS:
            idx = text.find(marker)
            if idx >= 0:
                return text[max(0, idx - 200): idx + 4000]
        return None

    # -- signals ----------------------------------------------------------------------------

    def reload(self, config=None, timeout: float = 5.0) -> dict:
        """Writes `config` (if given), sends SIGHUP, and returns the error-log entry that says
        how the reload ended (accepted or rejected)."""
        if config is not None:
            self.write_config(config)
        before = len(self.error_log())

        def outcome():
            for e in self.error_log()[before:]:
                msg = e.get("msg", "")
                if "reloaded" in msg or "reload rejected" in msg:
                    return e
            return None
        self.proc.send_signal(signal.SIGHUP)
        return wait_for(outcome, timeout, what="the reload outcome in the error log")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        self.returncode = self.proc.wait(timeout=timeout)
        return self.returncode

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.returncode = self.proc.returncode
        return self.returncode


def base_config(port: int, **extra) -> dict:
    """A minimal gateway config on `port`: one worker, short timeouts; `extra` adds/overrides keys."""
    cfg = {
        "listen": f"{HOST}:{port}",
        "workers": 1,
        "shutdown_timeout": "5s",
        "log": {"access": "stdout", "error": "stderr", "level": "info"},
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
def gateway_factory(tmp_path):
    """start(config, port=None) -> Gateway. `config` is a dict (a `listen` on a fresh port is
    added when it has neither `listen` nor `listeners`) or YAML text (then pass `port`).
    start(None, port, args=[...]) runs another subcommand (e.g. `demo`) under the same care."""
    started: list[Gateway] = []

    def start(config, port: int | None = None, wait: bool = True, args: list[str] | None = None) -> Gateway:
        if args is not None:
            gw = Gateway(tmp_path, len(started))
            started.append(gw)
            return gw.start(None, port, wait=wait, args=args)
        if isinstance(config, dict) and "listen" not in config and "listeners" not in config:
            port = port or free_port()
            config = base_config(port, **config)
        elif isinstance(config, dict) and port is None:
            port = int(config["listen"].rsplit(":", 1)[1])
        assert port is not None, "pass the port of a text config"
        gw = Gateway(tmp_path, len(started))
        started.append(gw)
        return gw.start(config, port, wait=wait)

    yield start
    problems = []
    for gw in started:
        rc = gw.stop()
        report = gw.sanitizer_report()
        if report:
            problems.append(f"{gw.dir}: the gateway printed a sanitizer report:\n{report}")
        elif rc not in (0, None):
            tail = "\n".join(gw.stderr().splitlines()[-20:])
            problems.append(f"{gw.dir}: the gateway exited with {rc} (SIGTERM must exit 0):\n{tail}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def proxy_config(upstreams: dict, routes: list, **extra) -> dict:
    """Config with upstreams given as {name: [Backend or address, ...] or a full upstream dict}."""
    ups = {}
    for name, spec in upstreams.items():
        if isinstance(spec, dict):
            ups[name] = spec
        else:
            ups[name] = [b.address if isinstance(b, Backend) else b for b in spec]
    cfg = {"upstreams": ups, "routes": routes}
    cfg.update(extra)
    return cfg


@pytest.fixture
def proxy(gateway_factory, backend):
    """The common case: one backend behind one catch-all route; returns (gateway, backend)."""
    gw = gateway_factory(proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app"}]))
    return gw, backend


@pytest.fixture
def http():
    """A requests.Session that ignores proxy settings from the environment."""
    import requests
    s = requests.Session()
    s.trust_env = False
    yield s
    s.close()


# --------------------------------------------------------------------------------------------
# nginx as a real backend


class Nginx:
    """nginx in the foreground (no daemon, no master process) with its own prefix in tmp_path.
    Its access log has one line per request: `$connection $connection_requests $request`."""

    def __init__(self, tmp_path: Path):
        self.prefix = tmp_path / "nginx"
        self.prefix.mkdir()
        (self.prefix / "logs").mkdir()
        self.port = free_port()
        self.address = f"{HOST}:{self.port}"
        self.access_log = self.prefix / "logs" / "access.log"
        p = self.prefix
        conf = f"""
daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 512; }}
http {{
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    log_format conn '$connection $connection_requests "$request"';
    access_log {self.access_log} conn;
    keepalive_requests 100000;
    keepalive_timeout 60s;
    server {{
        listen {self.address};
        location / {{ default_type text/plain; return 200 "nginx ok\\n"; }}
    }}
}}
"""
        self.conf = p / "nginx.conf"
        self.conf.write_text(conf)
        with open(p / "stderr.log", "wb") as err:
            self.proc = subprocess.Popen([NGINX_BIN, "-p", str(p), "-c", str(self.conf), "-e",
                                          str(p / "logs" / "error.log")],
                                         stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited: " + (p / "stderr.log").read_text()
                                     + (p / "logs" / "error.log").read_text())
            return port_accepts(self.port)
        wait_for(up, 10, 0.02, "nginx to accept")

    def log_lines(self) -> list[tuple[int, int, str]]:
        out = []
        if self.access_log.exists():
            for line in self.access_log.read_text().splitlines():
                conn, reqs, request = line.split(" ", 2)
                out.append((int(conn), int(reqs), request.strip('"')))
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def nginx(tmp_path):
    if not os.path.exists(NGINX_BIN):
        pytest.fail(f"{NGINX_BIN} is required for this test")
    n = Nginx(tmp_path)
    yield n
    n.stop()


# --------------------------------------------------------------------------------------------
# steady client load


@dataclass
class Outcome:
    """One client request of a ClientLoad: what the client got back (or the exception)."""
    started: float           # time.monotonic()
    ended: float
    path: str
    status: int | None = None
    backend: str | None = None    # the "backend" of the default reply's JSON body
    request_id: str | None = None
    error: str | None = None      # a client-side failure (connection reset, timeout, ...)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


class ClientLoad:
    """`threads` clients, each on its own keep-alive connection, sending GET /load/<thread>/<n>
    back to back until stop(); every outcome is recorded. Bounded: stop() ends it, and the test
    fixture stops it when a test forgot."""

    def __init__(self, gateway: "Gateway", threads: int = 4, timeout: float = 5.0):
        self.gateway = gateway
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.workers = [threading.Thread(target=self._run, args=(i,), daemon=True, name=f"load{i}")
                        for i in range(threads)]

    def start(self) -> "ClientLoad":
        for t in self.workers:
            t.start()
        return self

    def _run(self, index: int):
        import requests
        session = requests.Session()
        session.trust_env = False
        n = 0
        try:
            while not self.stopping.is_set():
                path = f"/load/{index}/{n}"
                n += 1
                o = Outcome(time.monotonic(), 0.0, path)
                try:
                    r = session.get(self.gateway.url(path), timeout=self.timeout)
                    o.status = r.status_code
                    o.request_id = r.headers.get("x-request-id")
                    with contextlib.suppress(ValueError, AttributeError, TypeError):
                        o.backend = r.json().get("backend")
                except Exception as e:  # noqa: BLE001 - every client failure is an outcome
                    o.error = f"{type(e).__name__}: {e}"
                o.ended = time.monotonic()
                with self.lock:
                    self.outcomes.append(o)
        finally:
            session.close()

    def snapshot(self) -> list[Outcome]:
        with self.lock:
            return list(self.outcomes)

    def answered_by(self, backend_name: str, since: float = 0.0) -> int:
        return sum(1 for o in self.snapshot() if o.backend == backend_name and o.started >= since)

    def wait_answered_by(self, backend_name: str, n: int, since: float = 0.0, timeout: float = 5.0):
        wait_for(lambda: self.answered_by(backend_name, since) >= n, timeout,
                 what=f"{n} answers from {backend_name}")

    def run_for(self, seconds: float):
        """Lets the load run on for a while: the point is what happens during that time."""
        self.stopping.wait(seconds)

    def stop(self) -> list[Outcome]:
        self.stopping.set()
        for t in self.workers:
            if t.is_alive():
                t.join(timeout=self.timeout + 5)
        return self.snapshot()


@pytest.fixture
def client_load():
    """start(gateway, threads=4) -> a running ClientLoad; stopped at the end of the test."""
    started: list[ClientLoad] = []

    def start(gateway, threads: int = 4) -> ClientLoad:
        load = ClientLoad(gateway, threads).start()
        started.append(load)
        return load

    yield start
    for load in started:
        load.stop()


# --------------------------------------------------------------------------------------------
# Redis (for global rate limits)


class RedisServer:
    """redis-server on a private port, no persistence; stop() and start() again on the same port."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "redis"
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            ["/usr/bin/redis-server", "--bind", HOST, "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--enable-debug-command", "local", "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_for(lambda: port_accepts(self.port), 10, what=f"redis on port {self.port}")
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def client(self):
        import redis
        return redis.Redis(host=HOST, port=self.port, socket_timeout=5)


@pytest.fixture
def redis_server(tmp_path):
    r = RedisServer(tmp_path).start()
    yield r
    r.stop()
