"""HTTP/2 test kit for the end-to-end tests (test_http2.py, test_grpc.py): an h2/h2c backend, a
raw h2 client, a small PKI, and curl/nghttp wrappers. Both the backend and the client are written
on python3-h2 (the hyper-h2 state machine: independent of the gateway's nghttp2), on plain
sockets, with every wait bounded.

H2Backend  a threaded HTTP/2 server (cleartext prior knowledge, or TLS with ALPN h2). It records
           every request (pseudo-headers, headers, body, trailers, stream id, connection) and
           answers with `handler(request) -> H2Reply`; the default handler echoes the request as
           JSON. Replies may stream chunks (optionally held until an Event is set), send trailers,
           generate large bodies, reset the stream or never answer. It sends DATA only within the
           peer's flow-control windows, and python3-h2 raises if the gateway exceeds ours: both
           directions are checked.
H2Client   one HTTP/2 connection to the gateway: open streams, send bodies (within the gateway's
           windows), read events per stream (headers, data, trailers, RST_STREAM codes) and the
           connection's GOAWAY. It can ignore the gateway's stream limit and write raw frames for
           the limit and flood tests.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import itertools
import json
import queue
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

HOST = "127.0.0.1"
BLOCK = bytes(range(256)) * 256  # 64 KiB of a known pattern


def pattern_bytes(n: int, seed: int = 0) -> bytes:
    """n bytes of a pattern that differs with the seed (so bodies cannot be confused)."""
    block = bytes((i * 7 + seed) & 0xFF for i in range(256)) * 256
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# a small PKI (python3-cryptography)


@dataclass
class Issued:
    cert: Path
    key: Path


@dataclass
class Pki:
    ca: Path        # the CA certificate (PEM)
    server: Issued  # a.test, *.h2.test, IP 127.0.0.1: the gateway's listener
    backend: Issued  # backend.test, IP 127.0.0.1: TLS upstreams


def make_pki(directory: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder().subject_name(name("H2 Test CA")).issuer_name(name("H2 Test CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(ca_key, hashes.SHA256()))
    ca_path = directory / "h2-ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(stem, cn, dns):
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(HOST))]
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        issued = Issued(directory / f"{stem}.pem", directory / f"{stem}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
        return issued

    return Pki(ca=ca_path, server=issue("h2-server", "a.test", ["a.test", "*.h2.test"]),
               backend=issue("h2-backend", "backend.test", ["backend.test"]))


def client_tls_context(pki: Pki | None, alpn=("h2", "http/1.1")) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if pki is not None:
        ctx.load_verify_locations(pki.ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def negotiated_alpn(port: int, ctx: ssl.SSLContext, server_name: str = "a.test") -> str | None:
    raw = socket.create_connection((HOST, port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname=server_name) as s:
        return s.selected_alpn_protocol()


# --------------------------------------------------------------------------------------------
# the h2 backend


@dataclass
class H2Request:
    stream_id: int
    conn_id: int
    headers: list[tuple[str, str]]       # in arrival order, pseudo-headers included
    body: bytes = b""
    body_bytes: int = 0
    trailers: list[tuple[str, str]] = field(default_factory=list)
    backend: str = ""

    def header(self, name: str) -> str | None:
        vals = self.header_all(name)
        return vals[0] if vals else None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    @property
    def method(self) -> str:
        return self.header(":method")

    @property
    def path(self) -> str:
        return self.header(":path")

    @property
    def authority(self) -> str | None:
        return self.header(":authority")

    @property
    def scheme(self) -> str | None:
        return self.header(":scheme")


@dataclass
class H2Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunks: list[bytes] | None = None        # DATA sent piece by piece (each flushed on its own)
    gates: dict[int, threading.Event] = field(default_factory=dict)  # chunk index -> wait before it
    stream_bytes: int | None = None          # a generated body of that many bytes (BLOCK pattern)
    trailers: list[tuple[str, str]] | None = None
    delay: float = 0.0                       # before the head
    reset: int | None = None                 # answer with RST_STREAM(code) instead
    hang: bool = False                       # never answer (until the backend stops)


class _Conn:
    def __init__(self, sock, conn_id, h2conn):
        self.sock = sock
        self.id = conn_id
        self.h2 = h2conn
        self.lock = threading.Condition()   # guards h2 state; notified on window updates/resets
        self.out: queue.Queue = queue.Queue()
        self.closed = False
        self.reset_streams: set[int] = set()
        self.partial: dict[int, H2Request] = {}
        self.parts: dict[int, list[bytes]] = {}
        self.early: set[int] = set()        # streams answered before their request ended


class H2Backend:
    """A threaded HTTP/2 server on 127.0.0.1 (h2c prior knowledge, or TLS+ALPN h2 with
    `tls=(cert, key)`). `initial_window` is the stream window it advertises (SETTINGS)."""

    def __init__(self, name: str = "h2-backend", tls: Issued | None = None, initial_window: int = 65535,
                 max_concurrent_streams: int = 1000, store_bodies: bool = True):
        self.name = name
        self.handler: Callable[[H2Request], H2Reply] = self.echo
        self.initial_window = initial_window
        self.max_concurrent_streams = max_concurrent_streams
        self.store_bodies = store_bodies
        self.respond_early = False   # call the handler when the head arrives, not at END_STREAM
        self.data_seen: dict[tuple[int, int], int] = {}   # (conn id, stream id) -> body bytes so far
        self.requests: list[H2Request] = []
        self.connections = 0
        self.alpn: list[str | None] = []           # per TLS connection: the negotiated protocol
        self.errors: list[str] = []                # protocol errors the h2 state machine raised
        self.resets_received: list[tuple[int, int]] = []  # (stream id, error code) from the gateway
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self._conns: list[_Conn] = []
        self._threads: list[threading.Thread] = []
        self._ids = itertools.count(1)
        self.tls_context = None
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls.cert, tls.key)
            ctx.set_alpn_protocols(["h2"])
            self.tls_context = ctx
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.address = f"{HOST}:{self.port}"
        self._spawn(self._accept_loop, f"{name}-accept")

    def _spawn(self, fn, name, *args):
        t = threading.Thread(target=fn, args=args, daemon=True, name=name)
        t.start()
        self._threads.append(t)
        return t

    # -- what arrived ----------------------------------------------------------------------

    def echo(self, req: H2Request) -> H2Reply:
        body = json.dumps({
            "backend": self.name, "method": req.method, "path": req.path,
            "authority": req.authority, "scheme": req.scheme,
            "headers": [[k, v] for k, v in req.headers if not k.startswith(":")],
            "trailers": req.trailers, "body_bytes": req.body_bytes,
            "body_sha256": sha256(req.body) if self.store_bodies else None,
            "stream_id": req.stream_id, "conn_id": req.conn_id}).encode()
        return H2Reply(200, [("content-type", "application/json"), ("x-backend", self.name)], body)

    def wait_requests(self, n: int, timeout: float = 10.0) -> list[H2Request]:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise AssertionError(f"{self.name}: {len(self.requests)} of {n} requests after {timeout}s")
            return list(self.requests)

    @property
    def last(self) -> H2Request:
        assert self.requests, f"{self.name} received no request"
        return self.requests[-1]

    # -- server ----------------------------------------------------------------------------

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            conn_id = next(self._ids)
            with self.cond:
                self.connections += 1
            self._spawn(self._serve, f"{self.name}-conn{conn_id}", sock, conn_id)

    def _serve(self, sock: socket.socket, conn_id: int):
        sock.settimeout(60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls_context is not None:
            try:
                sock = self.tls_context.wrap_socket(sock, server_side=True)
            except (OSError, ValueError) as e:
                with self.cond:
                    self.errors.append(f"TLS handshake: {e}")
                sock.close()
                return
            with self.cond:
                self.alpn.append(sock.selected_alpn_protocol())
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        h2conn = h2.connection.H2Connection(config=config)
        h2conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 20,
        })
        c = _Conn(sock, conn_id, h2conn)
        with self.cond:
            self._conns.append(c)
        writer = self._spawn(self._writer, f"{self.name}-w{conn_id}", c)
        try:
            with c.lock:
                h2conn.initiate_connection()
                if self.initial_window != 65535:
                    # A window change takes effect when the gateway ACKs it (RFC 9113 6.9.2): the
                    # gateway may send DATA under the default window before it has read it.
                    h2conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.initial_window})
                self._flush(c)
            while not self.stopping.is_set():
                try:
                    data = sock.recv(65536)
                except (OSError, ValueError):
                    break
                if not data:
                    break
                with c.lock:
                    try:
                        events = h2conn.receive_data(data)
                    except h2.exceptions.ProtocolError as e:
                        with self.cond:
                            self.errors.append(f"conn {conn_id}: {type(e).__name__}: {e}")
                        self._flush(c)
                        break
                    for ev in events:
                        self._event(c, ev)
                    self._flush(c)
                    c.lock.notify_all()
        finally:
            with c.lock:
                c.closed = True
                c.lock.notify_all()
            c.out.put(None)
            writer.join(timeout=5)
            with contextlib.suppress(OSError):
                sock.close()

    def _writer(self, c: _Conn):
        while True:
            data = c.out.get()
            if data is None:
                return
            try:
                c.sock.sendall(data)
            except (OSError, ValueError):
                with c.lock:
                    c.closed = True
                    c.lock.notify_all()
                return

    @staticmethod
    def _flush(c: _Conn):
        """Queues what the state machine has to send; call with c.lock held (keeps frame order)."""
        data = c.h2.data_to_send()
        if data:
            c.out.put(data)

    def _event(self, c: _Conn, ev):
        if isinstance(ev, h2.events.RequestReceived):
            c.partial[ev.stream_id] = H2Request(ev.stream_id, c.id, [(k, v) for k, v in ev.headers],
                                                backend=self.name)
            c.parts[ev.stream_id] = []
            if self.respond_early and not ev.stream_ended:
                c.early.add(ev.stream_id)
                self._spawn(self._respond, f"{self.name}-s{ev.stream_id}", c, c.partial[ev.stream_id])
        elif isinstance(ev, h2.events.DataReceived):
            req = c.partial.get(ev.stream_id)
            with self.cond:
                key = (c.id, ev.stream_id)
                self.data_seen[key] = self.data_seen.get(key, 0) + len(ev.data)
                self.cond.notify_all()
            if req is not None:
                req.body_bytes += len(ev.data)
                if self.store_bodies:
                    c.parts[ev.stream_id].append(ev.data)
            if ev.flow_controlled_length:
                # Every byte read is given back at once (connection and stream). Not python3-h2's
                # acknowledge_received_data: its heuristic never reopens a stream window that a
                # smaller SETTINGS_INITIAL_WINDOW_SIZE made negative, and the upload would stall.
                c.h2.increment_flow_control_window(ev.flow_controlled_length)
                with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                    if ev.stream_id not in c.reset_streams and not ev.stream_ended:
                        c.h2.increment_flow_control_window(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            req = c.partial.get(ev.stream_id)
            if req is not None:
                req.trailers = [(k, v) for k, v in ev.headers]
        elif isinstance(ev, h2.events.StreamEnded):
            req = c.partial.pop(ev.stream_id, None)
            if req is not None:
                req.body = b"".join(c.parts.pop(ev.stream_id, []))
                with self.cond:
                    self.requests.append(req)
                    self.cond.notify_all()
                if ev.stream_id not in c.early:
                    self._spawn(self._respond, f"{self.name}-s{ev.stream_id}", c, req)
        elif isinstance(ev, h2.events.StreamReset):
            c.reset_streams.add(ev.stream_id)
            c.partial.pop(ev.stream_id, None)
            with self.cond:
                self.resets_received.append((ev.stream_id, int(ev.error_code)))
        elif isinstance(ev, h2.events.ConnectionTerminated):
            c.closed = True

    def _respond(self, c: _Conn, req: H2Request):
        try:
            reply = self.handler(req)
        except Exception as e:  # noqa: BLE001 - a broken handler answers 500, visibly
            reply = H2Reply(500, [("content-type", "text/plain")], f"handler failed: {e!r}".encode())
        sid = req.stream_id
        if reply.delay and self.stopping.wait(reply.delay):
            return
        if reply.hang:
            self.stopping.wait(60)
            return
        try:
            if reply.reset is not None:
                with c.lock:
                    c.h2.reset_stream(sid, reply.reset)
                    self._flush(c)
                return
            if reply.chunks is not None:
                parts = reply.chunks
            elif reply.stream_bytes is not None:
                full, rest = divmod(reply.stream_bytes, len(BLOCK))
                parts = [BLOCK] * full + ([BLOCK[:rest]] if rest else [])
            else:
                parts = [reply.body] if reply.body else []
            head = [(":status", str(reply.status)), *[(k.lower(), v) for k, v in reply.headers]]
            with c.lock:
                c.h2.send_headers(sid, head, end_stream=not parts and not reply.trailers)
                self._flush(c)
            for i, part in enumerate(parts):
                gate = reply.gates.get(i)
                if gate is not None and not gate.wait(20):
                    with c.lock:
                        c.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                        self._flush(c)
                    return
                last = i == len(parts) - 1 and not reply.trailers
                if not self._send_data(c, sid, part, last):
                    return
            if reply.trailers:
                with c.lock:
                    c.h2.send_headers(sid, [(k.lower(), v) for k, v in reply.trailers], end_stream=True)
                    self._flush(c)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError, KeyError) as e:
            if sid not in c.reset_streams and not c.closed:
                with self.cond:
                    self.errors.append(f"stream {sid}: {type(e).__name__}: {e}")

    def _send_data(self, c: _Conn, sid: int, data: bytes, end: bool) -> bool:
        view = memoryview(data)
        with c.lock:
            while True:
                if c.closed or sid in c.reset_streams:
                    return False
                if not view:
                    if end:
                        c.h2.end_stream(sid)
                        self._flush(c)
                    return True
                window = min(c.h2.local_flow_control_window(sid), c.h2.max_outbound_frame_size)
                if window <= 0:
                    if not c.lock.wait(20):
                        raise h2.exceptions.ProtocolError("no WINDOW_UPDATE from the gateway in 20 s")
                    continue
                n = min(window, len(view))
                c.h2.send_data(sid, bytes(view[:n]), end_stream=end and n == len(view))
                view = view[n:]
                self._flush(c)
                if not view and end:
                    return True

    def stop(self):
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.listener.close()
        with self.cond:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.sock.close()
            with c.lock:
                c.closed = True
                c.lock.notify_all()
        for t in self._threads:
            t.join(timeout=5)


# --------------------------------------------------------------------------------------------
# the raw h2 client


class LooseH2Connection(h2.connection.H2Connection):
    """Lets the client open more streams than the peer allows (to test the gateway's refusal)."""

    ignore_stream_limit = False

    @property
    def open_outbound_streams(self):
        if self.ignore_stream_limit:
            return 0
        return super().open_outbound_streams


@dataclass
class StreamResult:
    stream_id: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    informational: list[list[tuple[str, str]]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    data_frames: int = 0
    trailers: list[tuple[str, str]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None          # the RST_STREAM error code from the gateway

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    @property
    def status(self) -> int | None:
        v = self.header(":status")
        return int(v) if v is not None else None

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def trailer(self, name: str) -> str | None:
        return next((v for k, v in self.trailers if k == name.lower()), None)

    @property
    def body(self) -> bytes:
        return bytes(self.data)

    def json(self):
        return json.loads(bytes(self.data))


class H2Client:
    """One HTTP/2 connection (h2c prior knowledge, or TLS with ALPN when `tls` is a context).
    `settings` are the client's initial SETTINGS (e.g. a small INITIAL_WINDOW_SIZE)."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None, server_name: str = "a.test",
                 settings: dict | None = None, timeout: float = 10.0, authority: str | None = None,
                 rcvbuf: int | None = None, validate: bool = True):
        self.timeout = timeout
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect((HOST, port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.alpn = None
        if tls is not None:
            self.sock = tls.wrap_socket(raw, server_hostname=server_name)
            self.alpn = self.sock.selected_alpn_protocol()
            self.scheme = "https"
        else:
            self.sock = raw
            self.scheme = "http"
        self.sock.settimeout(timeout)
        self.authority = authority or (f"{server_name}:{port}" if tls is not None else f"{HOST}:{port}")
        # validate=False sends headers exactly as given (malformed ones too, for smuggling tests)
        self.validate = validate
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                           validate_outbound_headers=validate,
                                           normalize_outbound_headers=validate)
        self.conn = LooseH2Connection(config=config)
        values = {h2.settings.SettingCodes.ENABLE_PUSH: 0,
                  h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                  h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 20}
        values.update(settings or {})
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values=values)
        self.conn.initiate_connection()
        self.streams: dict[int, StreamResult] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.remote_settings: dict[int, int] = {}
        self.settings_seen = False
        self.closed = False                # the gateway closed the TCP connection
        self.reset_by_peer = False
        self.auto_ack = True
        self.pings_acked = 0
        self.flush()

    # -- plumbing --------------------------------------------------------------------------

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def pump(self, timeout: float | None = None) -> bool:
        """Reads once (up to `timeout`) and processes the events; False when nothing more can come."""
        if self.closed:
            return False
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return True
        except ssl.SSLZeroReturnError:
            data = b""
        except (ConnectionResetError, BrokenPipeError):
            self.reset_by_peer = True
            data = b""
        finally:
            self.sock.settimeout(self.timeout)
        if not data:
            self.closed = True
            return False
        for ev in self.conn.receive_data(data):
            self._event(ev)
        with contextlib.suppress(OSError):
            self.flush()
        return True

    def _stream(self, sid) -> StreamResult:
        return self.streams.setdefault(sid, StreamResult(sid))

    def _event(self, ev):
        if isinstance(ev, h2.events.ResponseReceived):
            self._stream(ev.stream_id).headers = [(k, v) for k, v in ev.headers]
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            self._stream(ev.stream_id).informational.append([(k, v) for k, v in ev.headers])
        elif isinstance(ev, h2.events.DataReceived):
            s = self._stream(ev.stream_id)
            s.data += ev.data
            s.data_frames += 1
            if self.auto_ack and ev.flow_controlled_length:
                with contextlib.suppress(h2.exceptions.StreamClosedError, KeyError):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            self._stream(ev.stream_id).trailers = [(k, v) for k, v in ev.headers]
        elif isinstance(ev, h2.events.StreamEnded):
            self._stream(ev.stream_id).ended = True
        elif isinstance(ev, h2.events.StreamReset):
            self._stream(ev.stream_id).reset = int(ev.error_code)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev
            if ev.error_code == 0:
                # A graceful GOAWAY: streams up to last_stream_id still complete. python3-h2
                # closes its state machine on any GOAWAY; reopen it to read them.
                self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.settings_seen = True
            for code, change in ev.changed_settings.items():
                self.remote_settings[int(code)] = change.new_value
        elif isinstance(ev, h2.events.PingAckReceived):
            self.pings_acked += 1

    def wait(self, predicate: Callable[[], bool], timeout: float | None = None, what: str = "condition"):
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            if not self.pump(min(left, 1.0)) and not predicate():
                raise AssertionError(f"connection closed while waiting for {what} "
                                     f"(goaway={self.goaway}, reset_by_peer={self.reset_by_peer})")

    def wait_settings(self):
        self.wait(lambda: self.settings_seen, what="the gateway's SETTINGS")
        return self.remote_settings

    # -- requests --------------------------------------------------------------------------

    def headers_for(self, method: str, path: str, headers=(), authority: str | None = None):
        return [(":method", method), (":scheme", self.scheme), (":authority", authority or self.authority),
                (":path", path), *[(k.lower() if self.validate else k, v) for k, v in headers]]

    def start(self, method: str = "GET", path: str = "/", headers=(), end_stream: bool = True,
              authority: str | None = None) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = StreamResult(sid)
        self.conn.send_headers(sid, self.headers_for(method, path, headers, authority), end_stream=end_stream)
        self.flush()
        return sid

    def send_body(self, sid: int, data: bytes, end: bool = True, stop_early: bool = False) -> bool:
        """Sends `data` on the stream within the gateway's flow-control windows, reading (and
        acknowledging) what arrives in between. With `stop_early`, stops (returns False) once the
        gateway has answered the stream completely or reset it; otherwise a reset fails."""
        view = memoryview(data)
        deadline = time.monotonic() + max(self.timeout, 30)
        while view:
            if stop_early and self.streams[sid].done:
                return False
            if self.streams[sid].reset is not None:
                raise AssertionError(f"stream {sid} was reset ({self.streams[sid].reset}) while sending its body")
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                if time.monotonic() > deadline:
                    raise AssertionError(f"stream {sid}: no WINDOW_UPDATE from the gateway")
                if not self.pump(1.0):
                    raise AssertionError(f"connection closed while sending the body of stream {sid}")
                continue
            n = min(window, len(view))
            self.conn.send_data(sid, bytes(view[:n]), end_stream=end and n == len(view))
            view = view[n:]
            self.flush()
        if end and not data:
            self.conn.end_stream(sid)
            self.flush()
        return True

    def send_trailers(self, sid: int, trailers):
        self.conn.send_headers(sid, [(k.lower(), v) for k, v in trailers], end_stream=True)
        self.flush()

    def reset(self, sid: int, code=h2.errors.ErrorCodes.CANCEL):
        self.conn.reset_stream(sid, code)
        self.flush()

    def response(self, sid: int, timeout: float | None = None) -> StreamResult:
        self.wait(lambda: self.streams[sid].done, timeout, f"the response on stream {sid}")
        return self.streams[sid]

    def request(self, method: str = "GET", path: str = "/", headers=(), body: bytes | None = None,
                trailers=None, timeout: float | None = None, authority: str | None = None) -> StreamResult:
        has_body = body is not None or trailers
        sid = self.start(method, path, headers, end_stream=not has_body, authority=authority)
        if body is not None:
            self.send_body(sid, body, end=not trailers)
        if trailers:
            self.send_trailers(sid, trailers)
        return self.response(sid, timeout)

    def read_until_closed(self, timeout: float = 10.0):
        """Reads (and processes) until the gateway closes the connection or `timeout` passes;
        frames that cannot be parsed any more (after a GOAWAY) end it too."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self.pump(min(1.0, deadline - time.monotonic())):
                    return
            except h2.exceptions.ProtocolError:
                return


def h2_get(port: int, path: str = "/", tls: ssl.SSLContext | None = None, **kw) -> StreamResult:
    """One request on a fresh h2 connection."""
    with H2Client(port, tls=tls) as c:
        return c.request("GET", path, **kw)


# --------------------------------------------------------------------------------------------
# command-line clients


@dataclass
class CurlResult:
    returncode: int
    http_version: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stderr: str

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def json(self):
        return json.loads(self.body)


def curl(url: str, *args: str, timeout: float = 20.0, tmp: Path | None = None) -> CurlResult:
    """curl with `args` (e.g. --http2-prior-knowledge); headers of the final response parsed."""
    import tempfile
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        body_path, head_path = Path(d) / "body", Path(d) / "head"
        out = subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", str(int(timeout)),
                              "-o", str(body_path), "-D", str(head_path),
                              "-w", "%{http_version} %{http_code}", *args, url],
                             capture_output=True, timeout=timeout + 10)
        version, _, code = out.stdout.decode().strip().partition(" ")
        headers = []
        if head_path.exists():
            blocks = head_path.read_bytes().decode("latin-1").strip().split("\r\n\r\n")
            for line in blocks[-1].split("\r\n")[1:]:
                k, _, v = line.partition(":")
                headers.append((k.strip().lower(), v.strip()))
        body = body_path.read_bytes() if body_path.exists() else b""
        return CurlResult(out.returncode, version, int(code or 0), headers, body, out.stderr.decode(errors="replace"))


def nghttp(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run(["nghttp", "--timeout", str(int(timeout)), *args], capture_output=True,
                          text=True, timeout=timeout + 10)
