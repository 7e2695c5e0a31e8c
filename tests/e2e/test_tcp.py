"""L4 load balancing (issue 8): `protocol: tcp` and `protocol: udp` listeners, and the PROXY
protocol on both sides (SPEC.md listener `proxy_protocol` / `upstream`, upstream
`proxy_protocol: v1|v2`; docs/configuration.md#tcp-and-udp-listeners).

Real peers: small echo / recording servers written here, redis-server with redis-cli, and a
second sluice as the L7 gateway behind an L4 one. What is proven: bytes relayed unchanged both
ways, balancing, a connect failure retried on another target, half-close, idle timeout,
max_connections, UDP sessions and their idle expiry, PROXY headers parsed (v1, v2, malformed,
late) and sent (tcp and http upstreams, health checks), the original client address surviving
L4 sluice -> L7 sluice -> backend, the access log and metrics, drain, and config errors."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest
import requests

from conftest import HOST, SLUICE_BIN, free_port, wait_for

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


# --------------------------------------------------------------------------------------------
# peers


def parse_proxy(buf: bytes):
    """(header dict, rest) for a PROXY v1/v2 header at the start of `buf`, or (None, buf) when
    more bytes are needed. Written from the spec, independently of the gateway's parser."""
    if buf.startswith(b"PROXY "):
        end = buf.find(b"\r\n")
        if end < 0:
            return None, buf
        parts = buf[:end].decode().split(" ")
        if parts[1] == "UNKNOWN":
            return {"version": 1, "local": True}, buf[end + 2:]
        return ({"version": 1, "local": False, "src": parts[2], "dst": parts[3],
                 "sport": int(parts[4]), "dport": int(parts[5])}, buf[end + 2:])
    if buf.startswith(V2_SIG):
        if len(buf) < 16:
            return None, buf
        ver_cmd, fam, length = buf[12], buf[13], struct.unpack("!H", buf[14:16])[0]
        if len(buf) < 16 + length:
            return None, buf
        block, rest = buf[16:16 + length], buf[16 + length:]
        assert ver_cmd >> 4 == 2
        if ver_cmd & 0xF == 0:
            return {"version": 2, "local": True}, rest
        if fam == 0x11:
            src, dst = socket.inet_ntop(socket.AF_INET, block[0:4]), socket.inet_ntop(socket.AF_INET, block[4:8])
            sport, dport = struct.unpack("!HH", block[8:12])
        else:
            assert fam == 0x21, fam
            src, dst = socket.inet_ntop(socket.AF_INET6, block[0:16]), socket.inet_ntop(socket.AF_INET6, block[16:32])
            sport, dport = struct.unpack("!HH", block[32:36])
        return {"version": 2, "local": False, "src": src, "dst": dst, "sport": sport, "dport": dport}, rest
    if len(buf) < 16 and (V2_SIG.startswith(buf[:12]) or b"PROXY ".startswith(buf[:6])):
        return None, buf
    raise AssertionError(f"no PROXY header: {buf[:32]!r}")


class TcpServer:
    """A threaded TCP server on 127.0.0.1: `mode` decides what each connection gets.
      echo        echoes every byte back (with `prefix` before the first reply)
      name        sends `prefix` (its name) and then echoes
      drain       reads until EOF, then answers b"got N" and closes (half-close check)
      hold        accepts and says nothing
    With `proxy=True` each connection must start with a PROXY header, recorded in `headers`."""

    def __init__(self, mode: str = "echo", prefix: bytes = b"", proxy: bool = False, port: int = 0):
        self.mode, self.prefix, self.proxy = mode, prefix, proxy
        self.headers: list[dict] = []
        self.peers: list[tuple[str, int]] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.conns: list[socket.socket] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, port))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.address = f"{HOST}:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.peers.append(peer)
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        conn.settimeout(20)
        try:
            buf = b""
            if self.proxy:
                while True:
                    header, rest = parse_proxy(buf)
                    if header is not None:
                        break
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                with self.lock:
                    self.headers.append(header)
                buf = rest
            if self.mode == "hold":
                while conn.recv(65536):
                    pass
                return
            if self.mode == "drain":
                total = len(buf)
                while chunk := conn.recv(65536):
                    total += len(chunk)
                conn.sendall(b"got %d" % total)
                return
            first = True
            if self.mode == "name":
                conn.sendall(self.prefix)
                first = False
            if buf:
                conn.sendall((self.prefix if first else b"") + buf)
                first = False
            while chunk := conn.recv(65536):
                conn.sendall((self.prefix if first else b"") + chunk)
                first = False
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def stop(self):
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        with self.lock:
            for c in self.conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    c.close()


class UdpEcho:
    """Echoes each datagram back prefixed with `prefix`; records the source addresses (one per
    gateway session)."""

    def __init__(self, prefix: bytes = b""):
        self.prefix = prefix
        self.sources: list[tuple[str, int]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = f"{HOST}:{self.port}"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            try:
                data, src = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if src not in self.sources:
                self.sources.append(src)
            with contextlib.suppress(OSError):
                self.sock.sendto(self.prefix + data, src)

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def servers():
    started = []

    def make(*args, **kwargs):
        s = (UdpEcho if kwargs.pop("udp", False) else TcpServer)(*args, **kwargs)
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


def tcp_config(upstream: dict, listener_extra: dict | None = None, **extra) -> tuple[dict, int, int]:
    """A gateway with one tcp listener `l4` (upstream `db`) and an admin listener; returns
    (config, l4 port, admin port)."""
    port, admin = free_port(), free_port()
    listener = {"name": "l4", "listen": f"{HOST}:{port}", "protocol": "tcp", "upstream": "db"}
    listener.update(listener_extra or {})
    cfg = {"listeners": [listener], "workers": 1, "shutdown_timeout": "5s",
           "admin": {"listen": f"{HOST}:{admin}"},
           "log": {"access": "stdout", "error": "stderr", "level": "info"},
           "upstreams": {"db": upstream}}
    cfg.update(extra)
    return cfg, port, admin


def connect(port: int, source: str | None = None, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def recv_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def closed_without_data(s: socket.socket, timeout: float = 3.0) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def tcp_lines(gw, n: int, protocol: str = "tcp", timeout: float = 5.0) -> list[dict]:
    return wait_for(lambda: (lambda e: e if len(e) >= n else None)(
        [e for e in gw.access_log() if e.get("protocol") == protocol]), timeout,
        what=f"{n} {protocol} access log lines")


# --------------------------------------------------------------------------------------------
# tcp relay


def test_tcp_echo_relays_bytes_unchanged_both_ways_and_logs_one_line(gateway_factory, servers):
    echo = servers("echo")
    cfg, port, admin = tcp_config({"targets": [echo.address]})
    gw = gateway_factory(cfg, port=admin)
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value: a bulk transfer (splice)
    for _ in range(3):  # (later connections reuse the worker's buffers and must find them whole)
        with connect(port) as c:
            sender = threading.Thread(target=c.sendall, args=(payload,))
            sender.start()
            got = recv_exact(c, len(payload))
            sender.join(5)
        assert got == payload
        with connect(port) as c:  # and a short exchange in between
            c.sendall(b"ping")
            assert recv_exact(c, 4) == b"ping"
    line = tcp_lines(gw, 6)[0]
    assert line["protocol"] == "tcp" and line["listener"] == "l4"
    assert line["bytes_in"] == len(payload) and line["bytes_out"] == len(payload)
    assert line["upstream"] == "db" and line["target"] == echo.address
    assert line["status"] == 200 and line["attempts"] == 1 and line["error"] is None
    assert line["client_ip"] == HOST and line["duration_ms"] >= 0
    metrics = requests.get(f"http://{HOST}:{admin}/metrics", timeout=5).text
    total = 3 * (len(payload) + 4)
    assert f'sluice_bytes_received_total{{listener="l4"}} {total}' in metrics
    assert f'sluice_bytes_sent_total{{listener="l4"}} {total}' in metrics
    assert 'sluice_connections_total{listener="l4"} 6' in metrics


def test_redis_cli_talks_to_redis_server_through_the_tcp_listener(gateway_factory, redis_server):
    cfg, port, admin = tcp_config({"targets": [redis_server.address]})
    gw = gateway_factory(cfg, port=admin)

    def cli(*args):
        out = subprocess.run(["redis-cli", "-h", HOST, "-p", str(port), *args],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()
    assert cli("SET", "l4:key", "through sluice") == "OK"
    assert cli("GET", "l4:key") == "through sluice"
    assert redis_server.client().get("l4:key") == b"through sluice"  # really in redis
    # A pipeline of many commands in one connection.
    script = "".join(f"SET k{i} v{i}\n" for i in range(200)) + "GET k199\n"
    out = subprocess.run(["redis-cli", "-h", HOST, "-p", str(port)], input=script,
                         capture_output=True, text=True, timeout=10)
    assert out.stdout.strip().splitlines()[-1] == "v199"
    assert len(tcp_lines(gw, 3)) >= 3


def test_connections_are_balanced_over_the_targets(gateway_factory, servers):
    a, b = servers("name", prefix=b"A"), servers("name", prefix=b"B")
    cfg, port, admin = tcp_config({"targets": [a.address, b.address], "balance": "round_robin"})
    gateway_factory(cfg, port=admin)
    seen = []
    for _ in range(6):
        with connect(port) as c:
            seen.append(recv_exact(c, 1))
    assert seen.count(b"A") == 3 and seen.count(b"B") == 3


def test_ring_hash_keeps_one_client_ip_on_one_target(gateway_factory, servers):
    a, b = servers("name", prefix=b"A"), servers("name", prefix=b"B")
    cfg, port, admin = tcp_config({"targets": [a.address, b.address], "balance": "ring_hash"})
    gateway_factory(cfg, port=admin)
    per_source = {}
    for src in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"):
        got = set()
        for _ in range(3):
            with connect(port, source=src) as c:
                got.add(recv_exact(c, 1))
        assert len(got) == 1, (src, got)  # each client sticks to one target
        per_source[src] = got.pop()


def test_a_dead_target_is_retried_on_another_and_then_ejected(gateway_factory, servers):
    live = servers("name", prefix=b"L")
    dead = f"{HOST}:{free_port()}"  # nothing listens: connection refused
    cfg, port, admin = tcp_config({"targets": [dead, live.address], "balance": "round_robin",
                                   "outlier": {"consecutive_failures": 2, "ejection_time": "30s"}})
    gw = gateway_factory(cfg, port=admin)
    for _ in range(6):
        with connect(port) as c:
            assert recv_exact(c, 1) == b"L"  # every connection lands on the live target
    lines = tcp_lines(gw, 6)
    assert all(line["target"] == live.address and line["status"] == 200 for line in lines)
    retried = [line for line in lines if line["attempts"] == 2]
    assert len(retried) == 2  # the dead one was tried twice, then ejected
    gw.wait_error_log("connection refused")
    state = requests.get(f"http://{HOST}:{admin}/api/upstreams", timeout=5).json()
    text = str(state)
    assert "ejected" in text and dead in text


def test_no_available_target_closes_the_connection_and_logs_502(gateway_factory):
    dead = f"{HOST}:{free_port()}"
    cfg, port, admin = tcp_config({"targets": [dead], "retries": {"attempts": 0}})
    gw = gateway_factory(cfg, port=admin)
    with connect(port) as c:
        assert closed_without_data(c)
    (line,) = tcp_lines(gw, 1)
    assert line["status"] == 502 and line["error"] == "upstream connection refused"
    assert line["target"] == dead and line["bytes_out"] == 0


def test_half_close_client_shuts_write_and_still_gets_the_reply(gateway_factory, servers):
    drain = servers("drain")
    cfg, port, admin = tcp_config({"targets": [drain.address]})
    gw = gateway_factory(cfg, port=admin)
    with connect(port) as c:
        c.sendall(b"x" * 100_000)
        c.shutdown(socket.SHUT_WR)  # the server replies only once it saw our EOF
        assert recv_all(c) == b"got 100000"
    (line,) = tcp_lines(gw, 1)
    assert line["bytes_in"] == 100_000 and line["bytes_out"] == len(b"got 100000")
    assert line["error"] is None


def test_upstream_half_close_reaches_the_client_which_can_still_send(gateway_factory):
    """The server says its piece and shuts its write side; the client still sends afterwards."""
    srv = socket.socket()
    srv.bind((HOST, 0))
    srv.listen(1)
    got = []

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(10)
        conn.sendall(b"hello")
        conn.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
        got.append(data)
        conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cfg, port, admin = tcp_config({"targets": [f"{HOST}:{srv.getsockname()[1]}"]})
    gateway_factory(cfg, port=admin)
    with connect(port) as c:
        assert recv_all(c) == b"hello"  # EOF arrives: the upstream half-closed
        c.sendall(b"late words")
        c.shutdown(socket.SHUT_WR)
        t.join(5)
    srv.close()
    assert got == [b"late words"]


def test_idle_connection_is_closed_after_the_upstream_idle_timeout(gateway_factory, servers):
    echo = servers("echo")
    cfg, port, admin = tcp_config({"targets": [echo.address], "timeouts": {"idle": "400ms"}})
    gw = gateway_factory(cfg, port=admin)
    with connect(port) as c:
        c.sendall(b"ping")
        assert recv_exact(c, 4) == b"ping"
        started = time.monotonic()
        assert closed_without_data(c, timeout=5)
        assert time.monotonic() - started >= 0.3
    (line,) = tcp_lines(gw, 1)
    assert line["error"] == "idle timeout" and line["bytes_in"] == 4


def test_max_connections_refuses_beyond_the_limit(gateway_factory, servers):
    hold = servers("hold")
    cfg, port, admin = tcp_config({"targets": [hold.address], "max_connections": 1})
    gw = gateway_factory(cfg, port=admin)
    first = connect(port)
    wait_for(lambda: hold.connections == 1, what="the first connection upstream")
    with connect(port) as second:
        assert closed_without_data(second)
    (line,) = tcp_lines(gw, 1)
    assert line["status"] == 503 and line["error"] == "upstream overloaded (circuit open)"
    first.close()
    tcp_lines(gw, 2)
    with connect(port) as third:  # the slot came back
        wait_for(lambda: hold.connections == 2, what="the third connection upstream")
        third.close()


def test_drain_lets_an_established_relay_finish(gateway_factory, servers):
    echo = servers("echo")
    cfg, port, admin = tcp_config({"targets": [echo.address]})
    gw = gateway_factory(cfg, port=admin)
    c = connect(port)
    c.sendall(b"before")
    assert recv_exact(c, 6) == b"before"
    gw.signal(15)  # SIGTERM: stop accepting, let the relay go on
    wait_for(lambda: not _accepts(port), what="the listener to close")
    c.sendall(b"after")
    assert recv_exact(c, 5) == b"after"
    c.close()
    assert gw.wait_exit(5) == 0
    # (a probe of the port may have been accepted just before the listener closed: another line)
    ours = [line for line in tcp_lines(gw, 1) if line["bytes_in"] > 0]
    assert len(ours) == 1 and ours[0]["bytes_in"] == 11 and ours[0]["error"] is None


def test_reload_moves_new_connections_and_keeps_established_ones(gateway_factory, servers):
    a, b = servers("name", prefix=b"A"), servers("name", prefix=b"B")
    cfg, port, admin = tcp_config({"targets": [a.address]})
    gw = gateway_factory(cfg, port=admin)
    old = connect(port)
    assert recv_exact(old, 1) == b"A"
    cfg["upstreams"]["db"] = {"targets": [b.address]}
    udp_port = free_port()  # and a udp listener appears on the way
    cfg["listeners"].append({"name": "u", "listen": f"{HOST}:{udp_port}", "protocol": "udp",
                             "upstream": "db"})
    assert "reloaded" in gw.reload(cfg)["msg"]
    with connect(port) as new:
        assert recv_exact(new, 1) == b"B"  # new connections: the new upstream
    old.sendall(b"still here")
    assert recv_exact(old, 10) == b"still here"  # the established relay was not touched
    old.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# PROXY protocol


def test_proxy_v1_accepted_on_the_listener_and_v2_sent_to_the_target(gateway_factory, servers):
    backend = servers("echo", proxy=True)
    cfg, port, admin = tcp_config({"targets": [backend.address], "proxy_protocol": "v2"},
                              {"proxy_protocol": True})
    gw = gateway_factory(cfg, port=admin)
    with connect(port) as c:
        c.sendall(b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 6379\r\nhello")
        assert recv_exact(c, 5) == b"hello"  # the header is not relayed, the rest is
    wait_for(lambda: backend.headers, what="the backend to see a PROXY header")
    assert backend.headers[0] == {"version": 2, "local": False, "src": "192.0.2.7",
                                  "dst": "198.51.100.1", "sport": 51000, "dport": 6379}
    (line,) = tcp_lines(gw, 1)
    assert line["client_ip"] == "192.0.2.7" and line["bytes_in"] == 5


def test_proxy_v2_accepted_and_v1_sent_with_the_real_address_without_one(gateway_factory, servers):
    backend = servers("echo", proxy=True)
    cfg, port, admin = tcp_config({"targets": [backend.address], "proxy_protocol": "v1"},
                              {"proxy_protocol": True})
    gateway_factory(cfg, port=admin)
    header = V2_SIG + bytes([0x21, 0x21]) + struct.pack("!H", 36 + 7) + \
        socket.inet_pton(socket.AF_INET6, "2001:db8::7") + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + \
        struct.pack("!HH", 40000, 443) + b"\x04\x00\x04abcd"  # with a TLV (ignored)
    with connect(port) as c:
        c.sendall(header + b"data")
        assert recv_exact(c, 4) == b"data"
    with connect(port, source="127.0.0.9") as c:  # LOCAL: the connection's own address counts
        c.sendall(V2_SIG + bytes([0x20, 0x00, 0, 0]) + b"x")
        assert recv_exact(c, 1) == b"x"
    wait_for(lambda: len(backend.headers) == 2, what="two PROXY headers")
    assert backend.headers[0] == {"version": 1, "local": False, "src": "2001:db8::7",
                                  "dst": "2001:db8::1", "sport": 40000, "dport": 443}
    assert backend.headers[1] == {"version": 1, "local": False, "src": "127.0.0.9",
                                  "dst": HOST, "sport": backend.headers[1]["sport"], "dport": port}
    assert backend.headers[1]["sport"] > 0


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 06379\r\n",
    b"PROXY TCP4 300.0.2.7 198.51.100.1 1 2\r\n",
    V2_SIG + bytes([0x31, 0x11, 0, 12]) + b"\0" * 12,
])
def test_malformed_proxy_header_closes_the_connection_and_is_logged(gateway_factory, servers, garbage):
    echo = servers("echo")
    cfg, port, admin = tcp_config({"targets": [echo.address]}, {"proxy_protocol": True})
    gw = gateway_factory(cfg, port=admin)
    with connect(port) as c:
        c.sendall(garbage)
        assert closed_without_data(c)
    entry = gw.wait_error_log("PROXY header from 127.0.0.1 refused")
    assert entry["level"] in ("warn", "warning")
    assert echo.connections == 0  # nothing reached the upstream
    (line,) = tcp_lines(gw, 1)
    assert line["status"] == 400 and line["error"] == "bad PROXY protocol header"


def test_proxy_header_must_arrive_within_header_timeout(gateway_factory, servers):
    echo = servers("echo")
    cfg, port, admin = tcp_config({"targets": [echo.address]},
                              {"proxy_protocol": True, "limits": {"header_timeout": "300ms"}})
    gw = gateway_factory(cfg, port=admin)
    with connect(port) as c:
        c.sendall(b"PROXY TCP4 192.0.2.7 ")  # and then nothing
        assert closed_without_data(c, timeout=5)
    gw.wait_error_log("no complete PROXY header within header_timeout")


def test_client_address_survives_l4_sluice_to_l7_sluice_to_backend(gateway_factory, backend):
    """client (127.0.0.5) -> L4 sluice (tcp, PROXY v2 out) -> L7 sluice (proxy_protocol: true)
    -> HTTP backend: the backend sees the original client in x-forwarded-for and forwarded, and
    the L7 gateway's ip rules and access log use it."""
    l7_port = free_port()
    l7 = gateway_factory({
        "listeners": [{"name": "web", "listen": f"{HOST}:{l7_port}", "proxy_protocol": True}],
        "workers": 1, "shutdown_timeout": "5s",
        "log": {"access": "stdout", "error": "stderr", "level": "info"},
        "upstreams": {"app": [backend.address]},
        "routes": [
            {"match": {"path": "/healthz"}, "respond": {"status": 200, "body": "ok"}},
            {"match": {"path": "/private"}, "upstream": "app", "deny": {"ips": ["127.0.0.6"]}},
            {"match": {"path": "/"}, "upstream": "app"},
        ]}, port=l7_port)
    cfg, port, admin = tcp_config({"targets": [f"{HOST}:{l7_port}"], "proxy_protocol": "v2",
                                   "health_check": {"path": "/healthz", "interval": "200ms"}})
    gateway_factory(cfg, port=admin)
    conn = http.client.HTTPConnection(HOST, port, timeout=5, source_address=("127.0.0.5", 0))
    conn.request("GET", "/hello")
    resp = conn.getresponse()
    assert resp.status == 200
    resp.read()
    conn.close()
    req = backend.wait_proxied(1)[0]
    assert req.header("x-forwarded-for") == "127.0.0.5"
    assert "for=127.0.0.5" in req.header("forwarded")
    # allow/deny see the original client too.
    conn = http.client.HTTPConnection(HOST, port, timeout=5, source_address=("127.0.0.6", 0))
    conn.request("GET", "/private")
    assert conn.getresponse().status == 403
    conn.close()
    lines = l7.wait_access_log(2)
    assert {line["client_ip"] for line in lines if line.get("path") in ("/hello", "/private")} == \
        {"127.0.0.5", "127.0.0.6"}
    # Health checks of the L4 gateway reach the L7 one with a LOCAL header and pass.
    wait_for(lambda: any(line.get("path") == "/healthz" for line in l7.access_log()),
             what="a health check through the PROXY listener")
    hc = next(line for line in l7.access_log() if line.get("path") == "/healthz")
    assert hc["status"] == 200 and hc["client_ip"] == HOST


def test_proxy_header_comes_before_tls_on_a_tls_listener(gateway_factory, backend, tmp_path):
    from test_tls import Ca  # the same throwaway PKI as the TLS tests
    ca = Ca(tmp_path, "Test Server CA")
    cert = ca.issue("a", "a.test", dns=["a.test"], ips=["127.0.0.1"])
    port = free_port()
    gw = gateway_factory({
        "listeners": [{"name": "https", "listen": f"{HOST}:{port}", "proxy_protocol": True,
                       "tls": {"certificates": [{"cert": str(cert.cert), "key": str(cert.key)}]}}],
        "workers": 1, "shutdown_timeout": "5s",
        "log": {"access": "stdout", "error": "stderr", "level": "info"},
        "upstreams": {"app": [backend.address]},
        "routes": [{"match": {"path": "/"}, "upstream": "app"}]}, port=port)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca.path)
    raw = connect(port)
    raw.sendall(V2_SIG + bytes([0x21, 0x11, 0, 12]) + socket.inet_aton("198.51.100.23") +
                socket.inet_aton("192.0.2.1") + struct.pack("!HH", 40000, 443))
    with ctx.wrap_socket(raw, server_hostname="a.test") as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        data = b""
        with contextlib.suppress(ssl.SSLError, OSError):
            while chunk := s.recv(65536):
                data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    req = backend.wait_proxied(1)[0]
    assert req.header("x-forwarded-for") == "198.51.100.23"
    assert req.header("x-forwarded-proto") == "https"
    assert gw.wait_access_log(1)[0]["client_ip"] == "198.51.100.23"


def test_tcp_listener_and_http_routes_share_target_health(gateway_factory, backend_factory):
    """One upstream behind an http route and a tcp listener: the active health check marks a
    target down once, and neither path sends to it."""
    from conftest import Reply
    good, sick = backend_factory("good"), backend_factory("sick")
    sick.handler = lambda req: Reply(503, body=b"down") if req.path == "/healthz" else sick.default_reply(req)
    http_port, tcp_port, admin = free_port(), free_port(), free_port()
    gw = gateway_factory({
        "listeners": [{"name": "web", "listen": f"{HOST}:{http_port}"},
                      {"name": "l4", "listen": f"{HOST}:{tcp_port}", "protocol": "tcp",
                       "upstream": "app"}],
        "admin": {"listen": f"{HOST}:{admin}"},
        "workers": 1, "shutdown_timeout": "5s",
        "log": {"access": "stdout", "error": "stderr", "level": "info"},
        "upstreams": {"app": {"targets": [good.address, sick.address],
                              "health_check": {"path": "/healthz", "interval": "100ms",
                                               "unhealthy": 1, "healthy": 1}}},
        "routes": [{"match": {"path": "/"}, "upstream": "app"}]}, port=admin)
    gw.wait_error_log(f"target {sick.address} is down")

    def answered_by(port):
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        conn.request("GET", "/who")
        body = conn.getresponse().read()
        conn.close()
        return json.loads(body)["backend"]
    assert {answered_by(http_port) for _ in range(6)} == {"good"}  # L7
    assert {answered_by(tcp_port) for _ in range(6)} == {"good"}   # L4, same target state
    assert not [r for r in sick.proxied() if r.path == "/who"]


def test_mqtt_listener_takes_the_client_address_from_a_proxy_header(gateway_factory, backend):
    from test_mqtt import connect_packet, mqtt_config, publish_packet
    cfg, port = mqtt_config([{"topic": "devices/+/telemetry", "upstream": "telemetry"}],
                            {"telemetry": [backend]}, listener_extra={"proxy_protocol": True})
    gw = gateway_factory(cfg, port)
    with connect(port) as c:
        c.sendall(b"PROXY TCP4 203.0.113.9 10.0.0.1 40000 1883\r\n" + connect_packet("dev-1"))
        assert recv_exact(c, 4)[0] >> 4 == 2  # CONNACK
        c.sendall(publish_packet("devices/d1/telemetry", b"21.5"))
        req = backend.wait_requests(1)[0]
    assert req.header("x-forwarded-for") == "203.0.113.9"
    line = next(e for e in gw.wait_access_log(1) if e.get("protocol") == "mqtt")
    assert line["client_ip"] == "203.0.113.9"
    with connect(port) as c:  # no header: refused before MQTT is read
        c.sendall(connect_packet("dev-2"))
        assert closed_without_data(c)
    gw.wait_error_log("PROXY header from 127.0.0.1 refused")


def test_http_upstream_gets_proxy_v1_and_pools_connections_per_client(gateway_factory):
    """An HTTP upstream with `proxy_protocol: v1`: each new connection starts with the header of
    the client it serves, and is reused only for that client."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((HOST, 0))
    srv.listen(16)
    headers = []
    stop = threading.Event()

    def serve(conn):
        conn.settimeout(10)
        buf = b""
        try:
            while (h := parse_proxy(buf)[0]) is None:
                buf += conn.recv(4096)
            header, buf = parse_proxy(buf)
            headers.append(header)
            while not stop.is_set():
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                _, buf = buf.split(b"\r\n\r\n", 1)
                body = f"{header['src']}:{header['sport']}".encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            conn.close()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    port = free_port()
    gateway_factory({"listen": f"{HOST}:{port}", "workers": 1, "shutdown_timeout": "5s",
                     "log": {"access": "stdout", "error": "stderr"},
                     "upstreams": {"app": {"targets": [f"{HOST}:{srv.getsockname()[1]}"],
                                           "proxy_protocol": "v1"}},
                     "routes": [{"match": {"path": "/"}, "upstream": "app"}]}, port=port)
    try:
        answers = {}
        for src in ("127.0.0.2", "127.0.0.3"):
            conn = http.client.HTTPConnection(HOST, port, timeout=5, source_address=(src, 0))
            for _ in range(3):  # keep-alive: one client connection, three requests
                conn.request("GET", "/")
                r = conn.getresponse()
                assert r.status == 200
                answers.setdefault(src, set()).add(r.read().decode())
            conn.close()
        # Each client's requests all carried its own address and port; two clients, two
        # upstream connections (the pool never hands one client's connection to another).
        assert len(answers["127.0.0.2"]) == 1 and len(answers["127.0.0.3"]) == 1
        assert answers["127.0.0.2"].pop().startswith("127.0.0.2:")
        assert answers["127.0.0.3"].pop().startswith("127.0.0.3:")
        assert len(headers) == 2 and all(h["version"] == 1 and h["dport"] == port for h in headers)
    finally:
        stop.set()
        srv.close()


# --------------------------------------------------------------------------------------------
# udp


def udp_config(upstream: dict) -> tuple[dict, int, int]:
    """A udp listener `dns` plus an http listener (the fixture waits on a TCP port)."""
    udp_port, http_port = free_port(), free_port()
    cfg = {"listeners": [{"name": "dns", "listen": f"{HOST}:{udp_port}", "protocol": "udp",
                          "upstream": "db"},
                         {"name": "web", "listen": f"{HOST}:{http_port}"}],
           "workers": 2, "shutdown_timeout": "5s",
           "log": {"access": "stdout", "error": "stderr", "level": "info"},
           "upstreams": {"db": upstream},
           "routes": [{"match": {"path": "/"}, "respond": {"status": 200, "body": "ok"}}]}
    return cfg, udp_port, http_port


def test_udp_echo_for_several_clients_with_a_session_each(gateway_factory, servers):
    echo = servers(prefix=b"echo:", udp=True)
    cfg, udp_port, http_port = udp_config({"targets": [echo.address], "timeouts": {"idle": "500ms"}})
    gw = gateway_factory(cfg, port=http_port)
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for round_ in range(3):
            for i, c in enumerate(clients):
                c.settimeout(3)
                msg = b"client %d round %d" % (i, round_)
                c.sendto(msg, (HOST, udp_port))
                data, src = c.recvfrom(65536)
                assert data == b"echo:" + msg and src == (HOST, udp_port)
        assert len(echo.sources) == 3  # one upstream socket per client session
        lines = tcp_lines(gw, 3, protocol="udp", timeout=5)  # after idle expiry
        assert sorted(line["bytes_in"] for line in lines) == sorted(
            sum(len(b"client %d round %d" % (i, r)) for r in range(3)) for i in range(3))
        assert all(line["bytes_out"] == line["bytes_in"] + 3 * len(b"echo:") for line in lines)
        assert all(line["target"] == echo.address and line["error"] is None for line in lines)
        # After expiry, the same client gets a new session (a new upstream socket).
        clients[0].sendto(b"again", (HOST, udp_port))
        assert clients[0].recvfrom(65536)[0] == b"echo:again"
        assert len(echo.sources) == 4
    finally:
        for c in clients:
            c.close()


def test_udp_sessions_beyond_max_connections_are_dropped_and_counted(gateway_factory, servers):
    echo = servers(udp=True)
    cfg, udp_port, http_port = udp_config({"targets": [echo.address], "max_connections": 2})
    cfg["workers"] = 1
    admin = free_port()
    cfg["admin"] = {"listen": f"{HOST}:{admin}"}
    gw = gateway_factory(cfg, port=http_port)
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for c in clients[:2]:
            c.settimeout(3)
            c.sendto(b"hi", (HOST, udp_port))
            assert c.recvfrom(100)[0] == b"hi"
        clients[2].settimeout(0.5)
        for _ in range(3):
            clients[2].sendto(b"hi", (HOST, udp_port))
        with pytest.raises(socket.timeout):
            clients[2].recvfrom(100)  # no session for a third client: dropped
        metrics = requests.get(f"http://{HOST}:{admin}/metrics", timeout=5).text
        assert 'sluice_udp_datagrams_dropped_total{listener="dns"} 3' in metrics
        assert 'sluice_connections_active{listener="dns"} 2' in metrics
        gw.wait_error_log("datagram(s) dropped (upstream max_connections reached)")
    finally:
        for c in clients:
            c.close()


def test_a_client_reset_reaches_the_upstream_as_a_reset(gateway_factory):
    srv = socket.socket()
    srv.bind((HOST, 0))
    srv.listen(1)
    seen = []
    got_bytes = threading.Event()

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(5)
        try:
            while conn.recv(4096):
                got_bytes.set()
            seen.append("eof")
        except ConnectionResetError:
            seen.append("reset")
        conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cfg, port, admin = tcp_config({"targets": [f"{HOST}:{srv.getsockname()[1]}"]})
    gw = gateway_factory(cfg, port=admin)
    c = connect(port)
    c.sendall(b"some bytes")
    assert got_bytes.wait(5)  # relayed: the upstream connection exists
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # RST
    t.join(5)
    srv.close()
    assert seen == ["reset"]
    (line,) = tcp_lines(gw, 1)
    assert line["error"] == "client reset" and line["bytes_in"] == 10


def test_a_reload_that_removes_a_udp_listener_ends_its_sessions(gateway_factory, servers):
    echo = servers(udp=True)
    cfg, udp_port, http_port = udp_config({"targets": [echo.address]})
    gw = gateway_factory(cfg, port=http_port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(3)
        c.sendto(b"before", (HOST, udp_port))
        assert c.recvfrom(100)[0] == b"before"
        cfg["listeners"] = [item for item in cfg["listeners"] if item["name"] != "dns"]
        assert "reloaded" in gw.reload(cfg)["msg"]
        (line,) = tcp_lines(gw, 1, protocol="udp")
        assert line["error"] == "listener closed" and line["bytes_in"] == len(b"before")
        c.settimeout(0.5)
        c.sendto(b"after", (HOST, udp_port))  # nobody listens there any more
        with pytest.raises((socket.timeout, ConnectionRefusedError)):
            c.recvfrom(100)


def test_udp_target_that_refuses_ends_the_session(gateway_factory):
    dead = f"{HOST}:{free_port()}"
    cfg, udp_port, http_port = udp_config({"targets": [dead]})
    gw = gateway_factory(cfg, port=http_port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.sendto(b"one", (HOST, udp_port))
        (line,) = tcp_lines(gw, 1, protocol="udp")
        assert line["status"] == 502 and line["error"] == "upstream refused"
    gw.wait_error_log("Connection refused")


# --------------------------------------------------------------------------------------------
# configuration


def test_config_errors_for_bad_l4_combinations_have_file_line_col(tmp_path):
    path = tmp_path / "l4.yaml"
    path.write_text(
        "listeners:\n"
        "  - { name: a, listen: 127.0.0.1:7001, protocol: tcp }\n"
        "  - { name: b, listen: 127.0.0.1:7002, protocol: tcp, upstream: dbb }\n"
        "  - { name: c, listen: 127.0.0.1:7003, upstream: db }\n"
        "  - { name: d, listen: 127.0.0.1:7004, protocol: udp, upstream: db, proxy_protocol: true }\n"
        "upstreams:\n"
        "  db: { targets: [127.0.0.1:5432], proxy_protocol: v9 }\n")
    out = subprocess.run([SLUICE_BIN, "validate", "-c", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    text = out.stdout + out.stderr
    assert f"{path}:2:5: listener 'a' has 'protocol: tcp' but no 'upstream'" in text
    assert f"{path}:3:65: unknown upstream 'dbb' (did you mean 'db'?)" in text
    assert f"{path}:4:40: 'upstream' is for tcp and udp listeners" in text
    assert f"{path}:5:69: 'proxy_protocol' is for tcp, http and mqtt listeners" in text
    assert f"{path}:7:52: unknown proxy_protocol version 'v9'" in text


# --------------------------------------------------------------------------------------------
# examples


def test_the_l4_front_example_topology_runs_and_the_backend_sees_the_client(gateway_factory,
                                                                          backend_factory):
    """examples/l4-front.yaml + l4-gateway-a/b.yaml as shipped, on fresh ports: requests from
    127.0.0.5 reach both backends through both tiers, with x-forwarded-for 127.0.0.5."""
    from conftest import REPO
    b1, b2 = backend_factory("b1"), backend_factory("b2")
    ports = {old: free_port() for old in (8000, 8101, 8102, 9900, 9911, 9912)}

    def load(name: str) -> str:
        text = (REPO / "examples" / name).read_text()
        for old, new in ports.items():
            text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
        text = text.replace("127.0.0.1:9001", b1.address).replace("127.0.0.1:9002", b2.address)
        return text.replace("workers: auto", "workers: 1")
    gateway_factory(load("l4-gateway-a.yaml"), port=ports[9911])
    gateway_factory(load("l4-gateway-b.yaml"), port=ports[9912])
    front = gateway_factory(load("l4-front.yaml"), port=ports[9900])
    for _ in range(8):
        conn = http.client.HTTPConnection(HOST, ports[8000], timeout=5,
                                          source_address=("127.0.0.5", 0))
        conn.request("GET", "/hello")
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        resp.read()
        conn.close()
    got = b1.proxied() + b2.proxied()
    assert len(got) == 8 and b1.proxied() and b2.proxied()
    assert all(r.header("x-forwarded-for") == "127.0.0.5" for r in got)
    lines = tcp_lines(front, 8)
    assert {line["target"] for line in lines} == {f"127.0.0.1:{ports[8101]}", f"127.0.0.1:{ports[8102]}"}


def test_http2_clients_keep_their_address_through_l4_to_an_http2_gateway(gateway_factory, backend):
    """client (127.0.0.5, h2c prior knowledge, curl) -> L4 sluice (PROXY v2 out) -> L7 sluice
    (`http2: true`, `proxy_protocol: true`) -> HTTP/1.1 backend: the PROXY header comes before
    the HTTP/2 preface, and the streams carry the original client."""
    l7_port = free_port()
    l7 = gateway_factory({
        "listeners": [{"name": "web", "listen": f"{HOST}:{l7_port}", "proxy_protocol": True,
                       "http2": True}],
        "workers": 1, "shutdown_timeout": "5s",
        "log": {"access": "stdout", "error": "stderr", "level": "info"},
        "upstreams": {"app": [backend.address]},
        "routes": [{"match": {"path": "/"}, "upstream": "app"}]}, port=l7_port)
    cfg, port, admin = tcp_config({"targets": [f"{HOST}:{l7_port}"], "proxy_protocol": "v2"})
    gateway_factory(cfg, port=admin)
    # (one curl per request: curl 7.88 does not send a second request on a reused h2c prior-
    # knowledge connection, against nginx either; streams per connection are test_http2.py's)
    for path in ("/one", "/two"):
        out = subprocess.run(
            ["curl", "-s", "--max-time", "10", "--interface", "127.0.0.5",
             "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
             f"http://{HOST}:{port}{path}"], capture_output=True, text=True, timeout=20)
        assert out.stdout == "2 200", (path, out.stdout, out.stderr)
    reqs = backend.wait_proxied(2)
    assert sorted(r.path for r in reqs) == ["/one", "/two"]
    assert all(r.header("x-forwarded-for") == "127.0.0.5" for r in reqs)
    lines = [line for line in l7.wait_access_log(2) if line.get("path") in ("/one", "/two")]
    assert {(line["client_ip"], line["protocol"]) for line in lines} == {("127.0.0.5", "HTTP/2")}
