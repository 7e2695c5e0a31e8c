"""gRPC through the gateway (SPEC section 2: listener `http2: true`, upstream `protocol: h2c`).

The upstream is a real grpcio server (python3-grpcio) on 127.0.0.1 serving the Echo service of
protos/echo.proto (stubs generated at test time with python3-grpc-tools); clients are grpcio
channels to the gateway: cleartext h2c prior knowledge, and TLS with ALPN h2. Covered: unary,
server / client / bidirectional streaming (bidi interleaved, so a gateway that buffers a request
body until its end cannot pass), non-OK statuses with details and trailing metadata (the
grpc-status / grpc-message trailers), metadata both ways (binary too), deadlines, 4 MiB messages,
concurrent calls on one channel, gateway errors mapped by the client (404 -> UNIMPLEMENTED,
502 -> UNAVAILABLE), and the access log.
"""

from __future__ import annotations

import hashlib
import importlib
import queue
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from conftest import HOST, free_port, proxy_config, wait_for
from h2kit import make_pki

PROTOS = Path(__file__).resolve().parent / "protos"
SERVICE = "sluice.e2e.Echo"
MiB = 1024 * 1024
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0),
                   ("grpc.max_receive_message_length", 16 * MiB),
                   ("grpc.max_send_message_length", 16 * MiB)]
CALL_TIMEOUT = 15


# --------------------------------------------------------------------------------------------
# stubs and the upstream server


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    out = tmp_path_factory.mktemp("grpc_stubs")
    r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"--python_out={out}",
                        f"--grpc_python_out={out}", str(PROTOS / "echo.proto")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("echo_pb2")
        pb2_grpc = importlib.import_module("echo_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return pb2, pb2_grpc


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def make_servicer(pb2, pb2_grpc, state):
    def meta_list(context):
        return [f"{m.key}={m.value if isinstance(m.value, str) else m.value.hex()}"
                for m in context.invocation_metadata()]

    class Echo(pb2_grpc.EchoServicer):
        def Unary(self, request, context):
            context.send_initial_metadata((("x-initial", "from-server"),))
            echo = dict((m.key, m.value) for m in context.invocation_metadata())
            trailing = [("x-trailer-echo", echo.get("x-client-meta", "-"))]
            if "x-bin-bin" in echo:
                trailing.append(("x-bin-back-bin", bytes(reversed(echo["x-bin-bin"]))))
            context.set_trailing_metadata(tuple(trailing))
            payload = request.payload * max(request.count, 1) if request.payload else b""
            return pb2.EchoReply(text=request.text, payload=payload, metadata=meta_list(context),
                                 payload_sha256=sha(request.payload))

        def ServerStream(self, request, context):
            for i in range(request.count):
                yield pb2.EchoReply(text=f"{request.text}-{i}", index=i)
            if request.code:  # then fail: grpc-status arrives as a real trailer, after DATA
                context.set_trailing_metadata((("x-fail-detail", f"after-{request.count}"),))
                context.abort(grpc.StatusCode(_code(request.code)), request.text)

        def ClientStream(self, request_iterator, context):
            texts, total = [], hashlib.sha256()
            for req in request_iterator:
                texts.append(req.text)
                total.update(req.payload)
            return pb2.EchoReply(text=",".join(texts), index=len(texts), payload_sha256=total.hexdigest())

        def BidiStream(self, request_iterator, context):
            for i, req in enumerate(request_iterator):
                yield pb2.EchoReply(text=req.text.upper(), index=i)

        def Fail(self, request, context):
            context.set_trailing_metadata((("x-fail-detail", f"code-{request.code}"),))
            context.abort(grpc.StatusCode(_code(request.code)), request.text)

        def Slow(self, request, context):
            ended = threading.Event()

            def on_done():
                state["cancelled"].append(request.text)
                ended.set()
            context.add_callback(on_done)
            state["slow_started"].set()
            ended.wait(request.sleep_ms / 1000)
            return pb2.EchoReply(text=f"slept {request.sleep_ms}")

    return Echo()


def _code(n: int):
    return next(c.value for c in grpc.StatusCode if c.value[0] == n)


class GrpcServer:
    def __init__(self, pb2, pb2_grpc, credentials=None):
        self.state = {"cancelled": [], "slow_started": threading.Event()}
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32),
                                  options=[("grpc.max_receive_message_length", 16 * MiB),
                                           ("grpc.max_send_message_length", 16 * MiB)])
        pb2_grpc.add_EchoServicer_to_server(make_servicer(pb2, pb2_grpc, self.state), self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port(f"{HOST}:0")
        else:
            self.port = self.server.add_secure_port(f"{HOST}:0", credentials)
        assert self.port, "the grpc server could not bind"
        self.address = f"{HOST}:{self.port}"
        self.server.start()

    def stop(self):
        self.server.stop(grace=None).wait(5)


@pytest.fixture
def grpc_server(stubs):
    s = GrpcServer(*stubs)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("grpc_pki"))


def grpc_gateway(gateway_factory, target: str, pki=None, route_path: str = f"/{SERVICE}", upstream=None):
    port = free_port()
    listener = {"name": "grpc", "listen": f"{HOST}:{port}", "http2": True}
    if pki is not None:
        listener["tls"] = {"certificates": [{"cert": str(pki.server.cert), "key": str(pki.server.key)}]}
    up = upstream or {"targets": [target], "protocol": "h2c"}
    cfg = proxy_config({"echo": up}, [{"name": "echo", "match": {"path": route_path}, "upstream": "echo"}],
                       listeners=[listener], workers=1, shutdown_timeout="5s",
                       log={"access": "stdout", "error": "stderr", "level": "info"})
    return gateway_factory(cfg, port=port)


@pytest.fixture
def channel_factory():
    opened = []

    def make(port: int, pki=None):
        if pki is None:
            ch = grpc.insecure_channel(f"{HOST}:{port}", options=CHANNEL_OPTIONS)
        else:
            creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
            ch = grpc.secure_channel(f"{HOST}:{port}", creds,
                                     options=CHANNEL_OPTIONS + [("grpc.ssl_target_name_override", "a.test")])
        opened.append(ch)
        return ch

    yield make
    for ch in opened:
        ch.close()


@pytest.fixture
def echo(stubs, grpc_server, gateway_factory, channel_factory):
    """(stub through a cleartext h2c gateway, pb2 module, gateway, grpc server)."""
    pb2, pb2_grpc = stubs
    gw = grpc_gateway(gateway_factory, grpc_server.address)
    stub = pb2_grpc.EchoStub(channel_factory(gw.port))
    return stub, pb2, gw, grpc_server


# --------------------------------------------------------------------------------------------
# calls


def test_unary_call_through_the_gateway(echo):
    stub, pb2, gw, _ = echo
    reply, call = stub.Unary.with_call(pb2.EchoRequest(text="hello", payload=b"abc"),
                                       metadata=(("x-client-meta", "m1"),), timeout=CALL_TIMEOUT)
    assert reply.text == "hello" and reply.payload == b"abc" and reply.payload_sha256 == sha(b"abc")
    assert call.code() == grpc.StatusCode.OK
    seen = dict(m.split("=", 1) for m in reply.metadata)
    assert seen["x-client-meta"] == "m1"
    assert seen.get("x-forwarded-for") == "127.0.0.1" and seen.get("x-request-id")
    assert dict(call.initial_metadata())["x-initial"] == "from-server"
    assert dict(call.trailing_metadata())["x-trailer-echo"] == "m1"
    entry = gw.wait_access_log(1)[-1]
    assert (entry["protocol"], entry["path"], entry["status"], entry["route"]) == \
        ("HTTP/2", f"/{SERVICE}/Unary", 200, "echo")


def test_server_streaming_100_messages_in_order(echo):
    stub, pb2, _, _ = echo
    replies = list(stub.ServerStream(pb2.EchoRequest(text="s", count=100), timeout=CALL_TIMEOUT))
    assert [r.index for r in replies] == list(range(100))
    assert [r.text for r in replies] == [f"s-{i}" for i in range(100)]


def test_client_streaming(echo):
    stub, pb2, _, _ = echo
    parts = [bytes([i]) * (1000 + i) for i in range(50)]
    reply = stub.ClientStream(iter(pb2.EchoRequest(text=f"c{i}", payload=p) for i, p in enumerate(parts)),
                              timeout=CALL_TIMEOUT)
    assert reply.index == 50
    assert reply.text == ",".join(f"c{i}" for i in range(50))
    assert reply.payload_sha256 == sha(b"".join(parts))


def test_bidirectional_streaming_is_interleaved(echo):
    """Each request is sent only after the reply to the previous one arrived: a gateway that
    waited for the end of the request stream would deadlock (and hit the deadline)."""
    stub, pb2, _, _ = echo
    outbox: queue.Queue = queue.Queue()
    words = [f"word{i}" for i in range(20)]

    def requests():
        for w in words:
            yield pb2.EchoRequest(text=w)
            if outbox.get(timeout=CALL_TIMEOUT) is None:
                return

    got = []
    call = stub.BidiStream(requests(), timeout=CALL_TIMEOUT)
    try:
        for reply in call:
            got.append((reply.index, reply.text))
            outbox.put(reply.text)
    finally:
        outbox.put(None)
    assert got == [(i, w.upper()) for i, w in enumerate(words)]
    assert call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("code,details", [
    (grpc.StatusCode.NOT_FOUND, "no such item: 42"),
    (grpc.StatusCode.PERMISSION_DENIED, "denied: ünïcode & 100% <chars>\tok"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "quota"),
    (grpc.StatusCode.INTERNAL, "boom"),
])
def test_error_status_and_details_arrive_intact(echo, code, details):
    stub, pb2, _, _ = echo
    with pytest.raises(grpc.RpcError) as e:
        stub.Fail(pb2.EchoRequest(text=details, code=code.value[0]), timeout=CALL_TIMEOUT)
    assert e.value.code() == code, (e.value.code(), e.value.details())
    assert e.value.details() == details
    assert dict(e.value.trailing_metadata())["x-fail-detail"] == f"code-{code.value[0]}"
    # the channel (and the h2 connection) go on
    assert stub.Unary(pb2.EchoRequest(text="after"), timeout=CALL_TIMEOUT).text == "after"


def test_error_after_streamed_messages_arrives_as_trailers(echo):
    stub, pb2, _, _ = echo
    call = stub.ServerStream(pb2.EchoRequest(text="partial failure", count=7,
                                             code=grpc.StatusCode.DATA_LOSS.value[0]), timeout=CALL_TIMEOUT)
    got = []
    with pytest.raises(grpc.RpcError) as e:
        for reply in call:
            got.append(reply.index)
    assert got == list(range(7))
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.DATA_LOSS, "partial failure")
    assert dict(e.value.trailing_metadata())["x-fail-detail"] == "after-7"


def test_metadata_both_ways_including_binary(echo):
    stub, pb2, _, _ = echo
    blob = bytes(range(256))
    reply, call = stub.Unary.with_call(
        pb2.EchoRequest(text="m"),
        metadata=(("x-client-meta", "v-1"), ("x-multi", "a"), ("x-multi", "b"), ("x-bin-bin", blob)),
        timeout=CALL_TIMEOUT)
    seen = [m.split("=", 1) for m in reply.metadata]
    assert ["x-client-meta", "v-1"] in seen
    # repeated keys: kept apart, or combined into one comma-separated value (HTTP semantics)
    assert ",".join(v for k, v in seen if k == "x-multi").replace(" ", "") == "a,b", seen
    assert dict(seen)["x-bin-bin"] == blob.hex()
    trailing = dict(call.trailing_metadata())
    assert trailing["x-trailer-echo"] == "v-1"
    assert trailing["x-bin-back-bin"] == bytes(reversed(blob))
    assert dict(call.initial_metadata())["x-initial"] == "from-server"


def test_deadline_exceeded_and_the_upstream_call_is_cancelled(echo):
    stub, pb2, _, server = echo
    with pytest.raises(grpc.RpcError) as e:
        stub.Slow(pb2.EchoRequest(text="slow-1", sleep_ms=8000), timeout=0.5)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert server.state["slow_started"].is_set()
    # the server-side call ends long before its 8 s sleep: the deadline (grpc-timeout) or the
    # cancellation (RST_STREAM) reached it through the gateway
    wait_for(lambda: "slow-1" in server.state["cancelled"], 5, 0.05, "the upstream call to end")
    reply = stub.Slow(pb2.EchoRequest(text="quick", sleep_ms=10), timeout=CALL_TIMEOUT)
    assert reply.text == "slept 10"


def test_4mib_messages_both_ways(echo):
    stub, pb2, _, _ = echo
    payload = bytes((i * 31) & 0xFF for i in range(4 * MiB))
    reply = stub.Unary(pb2.EchoRequest(text="big", payload=payload), timeout=30)
    assert reply.payload_sha256 == sha(payload)
    assert len(reply.payload) == len(payload) and reply.payload == payload
    # client streaming with several megabytes in total
    chunks = [payload[i:i + MiB] for i in range(0, len(payload), MiB)]
    reply = stub.ClientStream(iter(pb2.EchoRequest(text=str(i), payload=c) for i, c in enumerate(chunks)), timeout=30)
    assert reply.payload_sha256 == sha(payload) and reply.index == 4


def test_concurrent_calls_on_one_channel(echo):
    stub, pb2, _, _ = echo

    def one(i):
        if i % 2:
            return [r.text for r in stub.ServerStream(pb2.EchoRequest(text=f"t{i}", count=5), timeout=CALL_TIMEOUT)]
        return stub.Unary(pb2.EchoRequest(text=f"t{i}", payload=bytes([i]) * 1000), timeout=CALL_TIMEOUT).text

    with futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(40)))
    for i, r in enumerate(results):
        assert r == ([f"t{i}-{k}" for k in range(5)] if i % 2 else f"t{i}"), (i, r)


# --------------------------------------------------------------------------------------------
# gateway answers as gRPC statuses


def test_unrouted_method_is_unimplemented_and_dead_upstream_is_unavailable(stubs, grpc_server, gateway_factory,
                                                                           channel_factory):
    pb2, pb2_grpc = stubs
    gw = grpc_gateway(gateway_factory, grpc_server.address)
    channel = channel_factory(gw.port)
    other = channel.unary_unary("/other.Service/Method", request_serializer=pb2.EchoRequest.SerializeToString,
                                response_deserializer=pb2.EchoReply.FromString)
    with pytest.raises(grpc.RpcError) as e:
        other(pb2.EchoRequest(text="x"), timeout=CALL_TIMEOUT)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, (e.value.code(), e.value.details())  # HTTP 404
    assert "404" in e.value.details()
    assert pb2_grpc.EchoStub(channel).Unary(pb2.EchoRequest(text="ok"), timeout=CALL_TIMEOUT).text == "ok"

    dead = grpc_gateway(gateway_factory, f"{HOST}:{free_port()}")
    with pytest.raises(grpc.RpcError) as e:
        pb2_grpc.EchoStub(channel_factory(dead.port)).Unary(pb2.EchoRequest(text="x"), timeout=CALL_TIMEOUT)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, (e.value.code(), e.value.details())  # 502/503
    statuses = [x["status"] for x in gw.wait_access_log(2)]
    assert statuses == [404, 200]
    assert dead.wait_access_log(1)[-1]["status"] in (502, 503)


# --------------------------------------------------------------------------------------------
# TLS


def test_grpc_over_tls_with_alpn_h2(stubs, grpc_server, gateway_factory, channel_factory, pki):
    pb2, pb2_grpc = stubs
    gw = grpc_gateway(gateway_factory, grpc_server.address, pki=pki)
    stub = pb2_grpc.EchoStub(channel_factory(gw.port, pki=pki))
    reply = stub.Unary(pb2.EchoRequest(text="secure", payload=b"p" * 1000), timeout=CALL_TIMEOUT)
    assert reply.text == "secure" and reply.payload_sha256 == sha(b"p" * 1000)
    seen = dict(m.split("=", 1) for m in reply.metadata)
    assert seen.get("x-forwarded-proto") == "https"
    assert [r.index for r in stub.ServerStream(pb2.EchoRequest(text="s", count=10), timeout=CALL_TIMEOUT)] == list(range(10))
    with pytest.raises(grpc.RpcError) as e:
        stub.Fail(pb2.EchoRequest(text="tls failure", code=grpc.StatusCode.ABORTED.value[0]), timeout=CALL_TIMEOUT)
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.ABORTED, "tls failure")


def test_grpc_to_a_tls_upstream_with_protocol_http2(stubs, gateway_factory, channel_factory, pki):
    pb2, pb2_grpc = stubs
    creds = grpc.ssl_server_credentials([(pki.backend.key.read_bytes(), pki.backend.cert.read_bytes())])
    server = GrpcServer(pb2, pb2_grpc, credentials=creds)
    try:
        up = {"targets": [server.address], "protocol": "http2",
              "tls": {"ca": str(pki.ca), "sni": "backend.test"}}
        gw = grpc_gateway(gateway_factory, server.address, upstream=up)
        stub = pb2_grpc.EchoStub(channel_factory(gw.port))
        assert stub.Unary(pb2.EchoRequest(text="via-tls"), timeout=CALL_TIMEOUT).text == "via-tls"
        replies = list(stub.ServerStream(pb2.EchoRequest(text="t", count=20), timeout=CALL_TIMEOUT))
        assert [r.text for r in replies] == [f"t-{i}" for i in range(20)]
    finally:
        server.stop()
