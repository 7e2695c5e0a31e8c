"""TLS termination, mutual TLS, redirect_to_https and upstream TLS (SPEC section 2, issue 4).

Certificates are minted here with python3-cryptography (a test CA, server certificates with
different names, client certificates from a trusted and from an untrusted CA); clients are
Python's ssl module (OpenSSL underneath, independent of the gateway's code) and curl.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import HOST, RawClient, free_port, proxy_config, wait_for

# --------------------------------------------------------------------------------------------
# a small PKI


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key, path: Path):
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


@dataclass
class Issued:
    cert: Path
    key: Path


class Ca:
    def __init__(self, directory: Path, cn: str):
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.name = _name(cn)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.path = directory / f"{cn.replace(' ', '_')}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, cn: str, dns: list[str] = (), ips: list[str] = (),
              client: bool = False, days: int = 30) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        import ipaddress
        builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=days)))
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.dir / f"{stem}.pem", self.dir / f"{stem}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, issued.key)
        return issued


@dataclass
class Pki:
    ca: Ca              # signs the server certificates
    a: Issued           # a.test, *.wild.test, IP 127.0.0.1
    b: Issued           # b.test
    a2: Issued          # a.test again (a renewed certificate, for the reload test)
    client_ca: Ca       # signs client certificates
    alice: Issued       # client CN=alice (a configured consumer)
    mallory: Issued     # client CN=mallory (verified, not a consumer)
    rogue: Issued       # client CN=alice from a CA the gateway does not trust
    backend: Issued     # upstream TLS server: backend.test, IP 127.0.0.1


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = Ca(d, "Test Server CA")
    client_ca = Ca(d, "Test Client CA")
    rogue_ca = Ca(d, "Rogue CA")
    return Pki(
        ca=ca,
        a=ca.issue("a", "a.test", dns=["a.test", "*.wild.test"], ips=["127.0.0.1"]),
        b=ca.issue("b", "b.test", dns=["b.test"]),
        a2=ca.issue("a2", "a.test", dns=["a.test"], days=60),
        client_ca=client_ca,
        alice=client_ca.issue("alice", "alice", client=True),
        mallory=client_ca.issue("mallory", "mallory", client=True),
        rogue=rogue_ca.issue("rogue", "alice", client=True),
        backend=ca.issue("backend", "backend.test", dns=["backend.test"], ips=["127.0.0.1"]),
    )


def tls_listener(port: int, pki: Pki, **tls_extra) -> dict:
    tls = {"certificates": [{"cert": str(pki.a.cert), "key": str(pki.a.key)},
                            {"cert": str(pki.b.cert), "key": str(pki.b.key)}]}
    tls.update(tls_extra)
    return {"name": "https", "listen": f"{HOST}:{port}", "tls": tls}


def tls_gateway(gateway_factory, backend, pki, routes=None, listeners_extra=(), **tls_extra):
    port = free_port()
    routes = routes or [{"match": {"path": "/"}, "upstream": "app"}]
    cfg = proxy_config({"app": [backend]}, routes,
                       listeners=[tls_listener(port, pki, **tls_extra), *listeners_extra],
                       workers=1, shutdown_timeout="5s",
                       log={"access": "stdout", "error": "stderr", "level": "debug"},
                       consumers=[{"name": "alice", "groups": ["staff"]}])
    return gateway_factory(cfg, port=port)


def client_context(pki: Pki, cert: Issued | None = None, verify: bool = True,
                   alpn: list[str] | None = ("http/1.1",)) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(pki.ca.path)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_request(port: int, ctx: ssl.SSLContext, server_name: str | None = "a.test", path: str = "/",
                session=None, headers: dict | None = None, body: bytes = b""):
    """One HTTP/1.1 request over a new TLS connection. Returns (status, headers, body, sslsock
    facts: cert, version, alpn, session, session_reused)."""
    raw = socket.create_connection((HOST, port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname=server_name, session=session)
    try:
        hdrs = {"Host": server_name or HOST, "Connection": "close"}
        hdrs.update(headers or {})
        if body:
            hdrs["Content-Length"] = str(len(body))
        head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        s.sendall(head.encode() + body)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ssl.SSLZeroReturnError:
                break
            if not chunk:
                break
            data += chunk
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        rh = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            rh[k.strip().lower()] = v.strip()
        facts = {"cert": s.getpeercert(), "version": s.version(), "alpn": s.selected_alpn_protocol(),
                 "session": s.session, "session_reused": s.session_reused}
        return status, rh, rest, facts
    finally:
        s.close()


def peer_names(facts) -> set[str]:
    return {v for k, v in facts["cert"].get("subjectAltName", ()) if k == "DNS"}


# --------------------------------------------------------------------------------------------
# termination


def test_sni_picks_the_certificate(gateway_factory, backend, pki):
    gw = tls_gateway(gateway_factory, backend, pki)
    ctx = client_context(pki)
    status, _, body, facts = tls_request(gw.port, ctx, "b.test")
    assert status == 200 and json.loads(body)["backend"] == "backend"
    assert peer_names(facts) == {"b.test"}
    _, _, _, facts = tls_request(gw.port, ctx, "a.test")
    assert "a.test" in peer_names(facts)
    # one-label wildcard
    _, _, _, facts = tls_request(gw.port, ctx, "x.wild.test")
    assert "*.wild.test" in peer_names(facts)
    # an unknown name and no SNI at all get the first certificate
    loose = client_context(pki, verify=False)
    for name in ("unknown.test", None):
        raw = socket.create_connection((HOST, gw.port), timeout=5)
        with loose.wrap_socket(raw, server_hostname=name) as s:
            der = s.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "a.test"


def test_curl_verifies_the_chain_and_name(gateway_factory, backend, pki):
    gw = tls_gateway(gateway_factory, backend, pki)
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(pki.ca.path),
                          "--resolve", f"b.test:{gw.port}:127.0.0.1",
                          "-w", "\n%{http_code} %{ssl_verify_result}",
                          f"https://b.test:{gw.port}/curl"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "200 0"
    assert json.loads(body)["target"] == "/curl"
    # TLS 1.1 at most: refused by the gateway (curl exit 35: handshake failed)
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-k", "--tlsv1.0", "--tls-max", "1.1",
                          "--ciphers", "DEFAULT:@SECLEVEL=0", f"https://127.0.0.1:{gw.port}/"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 35, (out.returncode, out.stderr)
    assert backend.requests[-1].target == "/curl"  # nothing else reached the backend


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_1_0_and_1_1_are_refused(gateway_factory, backend, pki, version):
    gw = tls_gateway(gateway_factory, backend, pki)
    ctx = client_context(pki, verify=False)
    ctx.minimum_version = version
    ctx.maximum_version = version
    ctx.set_ciphers("ALL:@SECLEVEL=0")  # let this client really offer the old protocol
    raw = socket.create_connection((HOST, gw.port), timeout=5)
    with pytest.raises(ssl.SSLError) as e:
        ctx.wrap_socket(raw, server_hostname="a.test")
    raw.close()
    # the server's alert, not a client-side refusal
    assert "PROTOCOL_VERSION" in str(e.value).upper(), e.value
    assert backend.requests == []


def test_tls_1_2_and_1_3_are_served_with_modern_ciphers(gateway_factory, backend, pki):
    gw = tls_gateway(gateway_factory, backend, pki)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_context(pki)
        ctx.minimum_version = ctx.maximum_version = version
        raw = socket.create_connection((HOST, gw.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="a.test") as s:
            assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
            name, _, bits = s.cipher()
            assert "GCM" in name or "CHACHA20" in name, name
    # a TLS 1.2 client offering only CBC / non-forward-secret suites is refused
    ctx = client_context(pki, verify=False)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("AES128-SHA:AES256-SHA:AES128-SHA256:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA")
    raw = socket.create_connection((HOST, gw.port), timeout=5)
    with pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="a.test")
    raw.close()


def test_min_version_1_3_refuses_1_2(gateway_factory, backend, pki):
    gw = tls_gateway(gateway_factory, backend, pki, min_version="1.3")
    ctx = client_context(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    raw = socket.create_connection((HOST, gw.port), timeout=5)
    with pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="a.test")
    raw.close()
    status, _, _, facts = tls_request(gw.port, client_context(pki))
    assert status == 200 and facts["version"] == "TLSv1.3"


def test_alpn_answers_http_1_1(gateway_factory, backend, pki):
    gw = tls_gateway(gateway_factory, backend, pki)
    _, _, _, facts = tls_request(gw.port, client_context(pki, alpn=["h2", "http/1.1"]))
    assert facts["alpn"] == "http/1.1"
    # no protocol in common: no ALPN answer, and HTTP/1.1 still works
    status, _, _, facts = tls_request(gw.port, client_context(pki, alpn=["h2"]))
    assert facts["alpn"] is None and status == 200
    _, _, _, facts = tls_request(gw.port, client_context(pki, alpn=None))
    assert facts["alpn"] is None


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_session_resumption_with_tickets(gateway_factory, backend, pki, version):
    gw = tls_gateway(gateway_factory, backend, pki)
    ctx = client_context(pki)
    ctx.maximum_version = version
    _, _, _, first = tls_request(gw.port, ctx)
    assert not first["session_reused"]
    assert first["session"] is not None and first["session"].has_ticket
    _, _, _, second = tls_request(gw.port, ctx, session=first["session"])
    assert second["session_reused"], "the ticket was not accepted"
    # a resumed connection gets a fresh ticket (TLS 1.3 clients use each ticket once)
    assert second["session"].has_ticket
    assert (second["session"].id, second["session"].time) != (first["session"].id, first["session"].time)
    # a reload (new certificates loaded, same listener) keeps the ticket keys
    gw.reload()
    _, _, _, third = tls_request(gw.port, ctx, session=second["session"])
    assert third["session_reused"]


def test_ticket_keys_rotate(gateway_factory, backend, pki):
    gw = tls_gateway(gateway_factory, backend, pki, ticket_rotation="1s")
    ctx = client_context(pki)
    _, _, _, first = tls_request(gw.port, ctx)
    _, _, _, again = tls_request(gw.port, ctx, session=first["session"])
    assert again["session_reused"]
    # Two rotation periods later no key that made the first ticket is still accepted: a full
    # handshake (which succeeds, with a new ticket that resumes).
    time.sleep(2.5)
    _, _, _, late = tls_request(gw.port, ctx, session=first["session"])
    assert not late["session_reused"]
    _, _, _, fresh = tls_request(gw.port, ctx, session=late["session"])
    assert fresh["session_reused"]


def test_handshake_timeout_closes_silent_clients(gateway_factory, backend, pki):
    port = free_port()
    listener = tls_listener(port, pki)
    listener["limits"] = {"header_timeout": "1s"}
    gw = gateway_factory(proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app"}],
                                      listeners=[listener], workers=1), port=port)
    s = socket.create_connection((HOST, gw.port), timeout=5)
    start = time.monotonic()
    assert s.recv(1) == b""  # closed without a ClientHello ever arriving
    assert time.monotonic() - start < 4
    s.close()
    # a client that sends garbage instead of a ClientHello is closed too, and nothing breaks
    s = socket.create_connection((HOST, gw.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    try:
        data = s.recv(4096)  # a TLS alert, or nothing
    except ConnectionResetError:
        data = b""
    assert not data.startswith(b"HTTP/")
    s.close()
    status, _, _, _ = tls_request(gw.port, client_context(pki))
    assert status == 200


def test_large_bodies_stream_through_tls(gateway_factory, backend, pki):
    gw = tls_gateway(gateway_factory, backend, pki)
    body = bytes(range(256)) * 4096  # 1 MiB up
    status, _, resp, _ = tls_request(gw.port, client_context(pki), path="/up", body=body)
    assert status == 200 and json.loads(resp)["body_bytes"] == len(body)
    assert backend.last.body == body
    from conftest import Reply
    big = b"z" * (3 * 1024 * 1024 + 17)
    backend.handler = lambda req: Reply(200, [("Content-Type", "application/octet-stream")], big)
    status, headers, resp, _ = tls_request(gw.port, client_context(pki), path="/down")
    assert status == 200 and resp == big


def test_forwarded_proto_is_https(gateway_factory, backend, pki):
    gw = tls_gateway(gateway_factory, backend, pki)
    tls_request(gw.port, client_context(pki), path="/p")
    req = backend.last
    assert req.header("x-forwarded-proto") == "https"
    assert "proto=https" in req.header("forwarded")


def test_keep_alive_and_pipelining_over_tls(gateway_factory, backend, pki):
    gw = tls_gateway(gateway_factory, backend, pki)
    raw = socket.create_connection((HOST, gw.port), timeout=5)
    s = client_context(pki).wrap_socket(raw, server_hostname="a.test")
    s.sendall(b"".join(f"GET /p{i} HTTP/1.1\r\nHost: a.test\r\n\r\n".encode() for i in range(5)))
    data = b""
    deadline = time.monotonic() + 5
    while data.count(b"HTTP/1.1 200") < 5 and time.monotonic() < deadline:
        data += s.recv(65536)
    s.close()
    assert data.count(b"HTTP/1.1 200") == 5
    assert [r.target for r in backend.requests] == [f"/p{i}" for i in range(5)]


def test_reload_swaps_the_certificate(gateway_factory, backend, pki):
    gw = tls_gateway(gateway_factory, backend, pki)
    ctx = client_context(pki)

    def serial():
        raw = socket.create_connection((HOST, gw.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="a.test") as s:
            return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number

    before = serial()
    cfg = json.loads(gw.config_path.read_text())
    cfg["listeners"][0]["tls"]["certificates"][0] = {"cert": str(pki.a2.cert), "key": str(pki.a2.key)}
    gw.reload(cfg)
    after = serial()
    assert before != after
    assert after == x509.load_pem_x509_certificate(pki.a2.cert.read_bytes()).serial_number


def test_bad_certificate_files_are_config_errors(gateway_factory, backend, pki, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    port = free_port()
    cfg = {"listeners": [{"name": "https", "listen": f"{HOST}:{port}",
                          "tls": {"certificates": [{"cert": str(pki.a.cert), "key": str(pki.b.key)},
                                                   {"cert": str(garbage), "key": str(pki.a.key)}]}}],
           "routes": [{"match": {"path": "/"}, "respond": {"status": 200}}]}
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(cfg, indent=2))
    from conftest import SLUICE_BIN
    out = subprocess.run([SLUICE_BIN, "validate", "--config", str(path)], capture_output=True,
                         text=True, timeout=20)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert f"{path}:" in text
    assert "does not match certificate" in text, text
    assert "garbage.pem" in text, text


# --------------------------------------------------------------------------------------------
# mutual TLS


MTLS_ROUTES = [
    {"name": "staff", "match": {"path": "/staff"}, "upstream": "app", "allow": {"groups": ["staff"]}},
    {"name": "alice-only", "match": {"path": "/alice"}, "upstream": "app", "allow": {"consumers": ["alice"]}},
    {"name": "open", "match": {"path": "/"}, "upstream": "app"},
]


def test_mtls_required(gateway_factory, backend, pki):
    gw = tls_gateway(gateway_factory, backend, pki, routes=MTLS_ROUTES,
                     client_ca=str(pki.client_ca.path), client_cert="required")
    status, _, _, _ = tls_request(gw.port, client_context(pki, pki.alice), path="/staff")
    assert status == 200
    status, _, _, _ = tls_request(gw.port, client_context(pki, pki.mallory), path="/alice")
    assert status == 403
    status, _, _, _ = tls_request(gw.port, client_context(pki, pki.mallory), path="/open")
    assert status == 200
    # no certificate, or one from a CA the gateway does not trust: no request gets through
    for cert in (None, pki.rogue):
        with pytest.raises((ssl.SSLError, ConnectionError, ValueError, IndexError)):
            tls_request(gw.port, client_context(pki, cert), path="/open")
    assert [r.target for r in backend.requests] == ["/staff", "/open"]
    consumers = [e["consumer"] for e in gw.wait_access_log(3)]
    assert consumers == ["alice", "mallory", "mallory"]


def test_mtls_optional(gateway_factory, backend, pki):
    gw = tls_gateway(gateway_factory, backend, pki, routes=MTLS_ROUTES,
                     client_ca=str(pki.client_ca.path), client_cert="optional")
    assert tls_request(gw.port, client_context(pki), path="/open")[0] == 200
    assert tls_request(gw.port, client_context(pki), path="/staff")[0] == 403
    assert tls_request(gw.port, client_context(pki, pki.alice), path="/staff")[0] == 200
    assert tls_request(gw.port, client_context(pki, pki.alice), path="/alice")[0] == 200
    # a certificate that does not verify is refused even though certificates are optional
    with pytest.raises((ssl.SSLError, ConnectionError, ValueError, IndexError)):
        tls_request(gw.port, client_context(pki, pki.rogue), path="/open")
    # a resumed session keeps its verified identity
    ctx = client_context(pki, pki.alice)
    _, _, _, first = tls_request(gw.port, ctx, path="/alice")
    status, _, _, again = tls_request(gw.port, ctx, path="/alice", session=first["session"])
    assert again["session_reused"] and status == 200


def test_mtls_identity_yields_to_route_auth(gateway_factory, backend, pki):
    """A route with `auth` still demands its credentials; the certificate alone is not enough."""
    port = free_port()
    cfg = proxy_config({"app": [backend]},
                       [{"match": {"path": "/"}, "upstream": "app", "auth": "keys"}],
                       listeners=[tls_listener(port, pki, client_ca=str(pki.client_ca.path))],
                       workers=1, consumers=[{"name": "alice", "api_keys": ["key:k-alice"]}],
                       auth={"keys": {"api_key": {"header": "x-api-key"}}})
    gw = gateway_factory(cfg, port=port)
    assert tls_request(gw.port, client_context(pki, pki.mallory))[0] == 401
    status, _, _, _ = tls_request(gw.port, client_context(pki, pki.mallory), headers={"x-api-key": "k-alice"})
    assert status == 200
    assert backend.last.header("x-api-key") is None


# --------------------------------------------------------------------------------------------
# redirect_to_https


def test_redirect_to_https(gateway_factory, backend, pki, http):
    plain = free_port()
    gw = tls_gateway(gateway_factory, backend, pki,
                     listeners_extra=[{"name": "plain", "listen": f"{HOST}:{plain}", "redirect_to_https": True}])
    with RawClient(plain) as c:
        c.send(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: a.test:8080\r\n\r\n")
        r = c.read_response()
        assert r.status == 308
        assert r.header("location") == f"https://a.test:{gw.port}/a/b?x=1&y=2"
        # keep-alive: the connection serves the next request too
        c.send(b"POST /form HTTP/1.1\r\nHost: b.test\r\nContent-Length: 3\r\n\r\nabc")
        r = c.read_response()
        assert r.status == 308 and r.header("location") == f"https://b.test:{gw.port}/form"
    assert backend.requests == []  # nothing was proxied in cleartext
    # following it with a verifying client lands on the TLS listener
    status, _, body, _ = tls_request(gw.port, client_context(pki), "a.test", path="/a/b?x=1&y=2")
    assert status == 200 and json.loads(body)["target"] == "/a/b?x=1&y=2"


# --------------------------------------------------------------------------------------------
# upstream TLS


def tls_backend(backend_factory, pki, name="tls-backend"):
    b = backend_factory(name)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.backend.cert, pki.backend.key)
    b.sni_seen = []
    ctx.sni_callback = lambda sock, name, _ctx: b.sni_seen.append(name)
    b.tls_context = ctx
    return b


def upstream_tls_gateway(gateway_factory, b, tls, health_check=None):
    up = {"targets": [b.address], "tls": tls}
    if health_check:
        up["health_check"] = health_check
    return gateway_factory(proxy_config({"secure": up}, [{"match": {"path": "/"}, "upstream": "secure"}]))


def test_upstream_tls_verified_against_ca(gateway_factory, backend_factory, pki, http):
    b = tls_backend(backend_factory, pki)
    gw = upstream_tls_gateway(gateway_factory, b, {"ca": str(pki.ca.path), "sni": "backend.test"})
    for i in range(5):
        r = http.get(gw.url(f"/s{i}"))
        assert r.status_code == 200 and r.json()["backend"] == "tls-backend"
    assert [req.target for req in b.requests] == [f"/s{i}" for i in range(5)]
    assert b.sni_seen[0] == "backend.test"
    assert b.connections == 1  # the TLS connection is pooled and reused
    # a body both ways through the upstream TLS connection
    payload = b"q" * 300_000
    r = http.post(gw.url("/body"), data=payload)
    assert r.status_code == 200 and r.json()["body_bytes"] == len(payload)


def test_upstream_tls_ip_target_verified_by_ip(gateway_factory, backend_factory, pki, http):
    b = tls_backend(backend_factory, pki)
    gw = upstream_tls_gateway(gateway_factory, b, {"ca": str(pki.ca.path)})
    assert http.get(gw.url("/ip")).status_code == 200
    assert b.sni_seen == [None]  # no SNI for an IP address


def test_upstream_tls_without_a_valid_ca_is_502(gateway_factory, backend_factory, pki, http):
    b = tls_backend(backend_factory, pki)
    # the system store does not know the test CA
    gw = upstream_tls_gateway(gateway_factory, b, {"sni": "backend.test"})
    r = http.get(gw.url("/x"))
    assert r.status_code == 502
    assert r.json()["error"] == "upstream TLS handshake failed"
    assert b.requests == []
    msg = gw.wait_error_log("TLS handshake failed")["msg"]
    assert "certificate verify failed" in msg, msg
    assert gw.wait_access_log(1)[-1]["error"] == "upstream TLS handshake failed"


def test_upstream_tls_wrong_name_is_502(gateway_factory, backend_factory, pki, http):
    b = tls_backend(backend_factory, pki)
    gw = upstream_tls_gateway(gateway_factory, b, {"ca": str(pki.ca.path), "sni": "other.test"})
    assert http.get(gw.url("/x")).status_code == 502
    assert "certificate verify failed" in gw.wait_error_log("TLS handshake failed")["msg"]
    assert b.requests == []


def test_upstream_tls_verify_false_skips_verification(gateway_factory, backend_factory, pki, http):
    b = tls_backend(backend_factory, pki)
    gw = upstream_tls_gateway(gateway_factory, b, {"verify": False, "sni": "backend.test"})
    assert http.get(gw.url("/insecure")).status_code == 200


def test_upstream_tls_to_a_cleartext_backend_is_502(gateway_factory, pki, http):
    """A target that answers the ClientHello with plain HTTP: the handshake fails at once."""
    import threading
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        gw = gateway_factory(proxy_config(
            {"secure": {"targets": [f"{HOST}:{port}"], "tls": {"ca": str(pki.ca.path)}}},
            [{"match": {"path": "/"}, "upstream": "secure"}]))
        r = http.get(gw.url("/x"))
        assert r.status_code == 502 and r.json()["error"] == "upstream TLS handshake failed"
        assert "TLS handshake failed" in gw.wait_error_log("TLS handshake failed")["msg"]
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        listener.close()
        t.join(timeout=5)


def test_upstream_tls_health_checks_use_tls(gateway_factory, backend_factory, pki, http):
    b = tls_backend(backend_factory, pki)
    gw = upstream_tls_gateway(gateway_factory, b, {"ca": str(pki.ca.path), "sni": "backend.test"},
                              health_check={"path": "/healthz", "interval": "100ms", "timeout": "1s"})
    wait_for(lambda: len(b.health_checks()) >= 2, 5, what="health checks over TLS")
    assert b.tls_failures == 0
    assert http.get(gw.url("/ok")).status_code == 200


def test_gateway_to_gateway_tls(gateway_factory, backend, pki, http):
    """sluice terminating TLS in front of sluice with upstream TLS: the whole chain verifies."""
    inner = tls_gateway(gateway_factory, backend, pki)
    outer = gateway_factory(proxy_config(
        {"inner": {"targets": [f"{HOST}:{inner.port}"], "tls": {"ca": str(pki.ca.path), "sni": "b.test"}}},
        [{"match": {"path": "/"}, "upstream": "inner"}]))
    r = http.get(outer.url("/chain"))
    assert r.status_code == 200 and r.json()["target"] == "/chain"
    assert backend.last.header("x-forwarded-proto") == "https"
