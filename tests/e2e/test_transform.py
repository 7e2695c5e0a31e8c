"""Route `transform` (docs/transform.md): request and response bodies converted between XML and
JSON, content-type and length fixed up, bounded by max_body; invalid input is a 400 for a
request and a 502 for a response."""

import json
import socket

from conftest import Reply, base_config, free_port, proxy_config

XML = b'<?xml version="1.0"?><order id="7"><item>a</item><item>b</item><note>x &amp; y</note></order>'
JSON = {"order": {"@id": "7", "item": ["a", "b"], "note": "x & y"}}


def gateway(gateway_factory, backend, transform, **extra):
    port = free_port()
    route = {"match": {"path": "/"}, "upstream": "app", "transform": transform}
    return gateway_factory(base_config(port, **proxy_config({"app": [backend]}, [route])) | extra)


def echo_json(req):
    """Answers with the request body as JSON, naming what it received."""
    return Reply(200, [("content-type", "application/json")], req.body)


def test_xml_request_reaches_the_upstream_as_json_with_its_length(gateway_factory, backend, http):
    backend.handler = lambda req: Reply(201, [("content-type", "text/plain")], b"stored")
    gw = gateway(gateway_factory, backend, {"request": "xml_to_json"})
    r = http.post(gw.url("/orders"), data=XML, headers={"content-type": "application/xml"})
    assert r.status_code == 201 and r.text == "stored"
    req = backend.wait_requests(1)[0]
    assert json.loads(req.body) == JSON
    assert req.header("content-type") == "application/json"
    assert int(req.header("content-length")) == len(req.body)


def test_json_response_reaches_the_client_as_xml(gateway_factory, backend, http):
    backend.handler = lambda req: Reply(200, [("content-type", "application/json"), ("etag", '"v1"')],
                                        json.dumps(JSON).encode())
    gw = gateway(gateway_factory, backend, {"response": "json_to_xml"})
    r = http.get(gw.url("/orders/7"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/xml")
    assert int(r.headers["content-length"]) == len(r.content)
    assert "etag" not in r.headers  # another representation: the upstream's validator is dropped
    assert r.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert b'<order id="7"><item>a</item><item>b</item><note>x &amp; y</note></order>' in r.content
    assert backend.wait_requests(1)[0].header("accept-encoding") is None


def test_xml_in_json_upstream_xml_out_round_trip(gateway_factory, backend, http):
    """The client speaks XML, the service JSON: both directions converted, keep-alive kept."""
    backend.handler = echo_json
    gw = gateway(gateway_factory, backend, {"request": "xml_to_json", "response": "json_to_xml"})
    for _ in range(3):  # on one client connection
        r = http.post(gw.url("/echo"), data=XML, headers={"content-type": "text/xml"})
        assert r.status_code == 200
        again = http.post(gw.url("/echo"), data=r.content, headers={"content-type": "application/xml"})
        assert again.content == r.content  # a fixpoint after one trip
    assert json.loads(backend.wait_requests(6)[0].body) == JSON


def test_chunked_bodies_are_converted_both_ways(gateway_factory, backend):
    backend.handler = lambda req: Reply(200, [("content-type", "application/json")],
                                        chunks=[b'{"a":', b'{"b":"1"}}'])
    gw = gateway(gateway_factory, backend, {"request": "xml_to_json", "response": "json_to_xml"})
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        body = b"<a><b>1</b></a>"
        s.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Type: application/xml\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
                  b"5\r\n" + body[:5] + b"\r\n" + f"{len(body) - 5:x}\r\n".encode() + body[5:] + b"\r\n0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, out = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: %d" % len(out) in head.lower()
    assert out.endswith(b"<a><b>1</b></a>")
    req = backend.wait_requests(1)[0]
    assert json.loads(req.body) == {"a": {"b": "1"}} and not req.chunked


def test_invalid_xml_request_is_a_400_and_reaches_no_upstream(gateway_factory, backend, http):
    gw = gateway(gateway_factory, backend, {"request": "xml_to_json"})
    r = http.post(gw.url("/x"), data=b"<a><b></a>", headers={"content-type": "application/xml"})
    assert r.status_code == 400 and r.json()["error"] == "bad request"
    entry = gw.wait_access_log(1)[0]
    assert entry["status"] == 400 and "not convertible (malformed)" in entry["error"]
    assert backend.proxied() == []
    r = http.post(gw.url("/x"), data=b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>',
                  headers={"content-type": "application/xml"})
    assert r.status_code == 400  # no DOCTYPE, so no entity expansion of any kind
    assert backend.proxied() == []


def test_invalid_json_response_is_a_502(gateway_factory, backend, http):
    backend.handler = lambda req: Reply(200, [("content-type", "application/json")], b'{"a": [1, }')
    gw = gateway(gateway_factory, backend, {"response": "json_to_xml"})
    r = http.get(gw.url("/x"))
    assert r.status_code == 502
    entry = gw.wait_access_log(1)[0]
    assert "upstream response body is not convertible (malformed)" in entry["error"]
    assert http.get(gw.url("/again")).status_code == 502  # the client connection is still usable


def test_body_already_in_the_target_format_passes_unchanged(gateway_factory, backend, http):
    backend.handler = lambda req: Reply(200, [("content-type", "application/xml")], b"<ok/>")
    gw = gateway(gateway_factory, backend, {"request": "xml_to_json", "response": "json_to_xml"})
    r = http.post(gw.url("/x"), json={"already": "json"})
    assert r.status_code == 200 and r.content == b"<ok/>"
    req = backend.wait_requests(1)[0]
    assert json.loads(req.body) == {"already": "json"}


def test_other_media_types_are_refused_with_415(gateway_factory, backend, http):
    gw = gateway(gateway_factory, backend, {"request": "xml_to_json"})
    r = http.post(gw.url("/x"), data=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"] == "unsupported media type"
    assert backend.proxied() == []


def test_non_convertible_response_types_and_bodyless_answers_pass(gateway_factory, backend, http):
    answers = {"/html": Reply(503, [("content-type", "text/html")], b"<h1>down</h1>"),
               "/none": Reply(204, [], b"")}
    backend.handler = lambda req: answers[req.path]
    gw = gateway(gateway_factory, backend, {"response": "json_to_xml"})
    r = http.get(gw.url("/html"))
    assert r.status_code == 503 and r.content == b"<h1>down</h1>"
    assert http.get(gw.url("/none")).status_code == 204


def test_bodies_beyond_max_body_are_refused(gateway_factory, backend, http):
    backend.handler = lambda req: Reply(200, [("content-type", "application/json")],
                                        json.dumps({"a": "x" * 5000}).encode())
    gw = gateway(gateway_factory, backend, {"request": "xml_to_json", "response": "json_to_xml"},
                 limits={"max_body": "4KiB"})
    big = b"<a>" + b"x" * 5000 + b"</a>"
    r = http.post(gw.url("/x"), data=big, headers={"content-type": "application/xml"})
    assert r.status_code == 413
    r = http.get(gw.url("/x"))  # the upstream's 5 KB answer is more than max_body: not converted
    assert r.status_code == 502
    assert "larger than max_body" in gw.wait_access_log(2)[1]["error"]


def test_empty_bodies_pass_both_ways(gateway_factory, backend, http):
    """An empty request (a bodyless POST) and an empty answer (201 + Location) are not documents
    to convert: they pass as they are instead of failing as malformed."""
    backend.handler = lambda req: Reply(201, [("location", "/orders/8")], b"")
    gw = gateway(gateway_factory, backend, {"request": "xml_to_json", "response": "json_to_xml"})
    r = http.post(gw.url("/orders"), data=b"")
    assert r.status_code == 201 and r.content == b"" and r.headers["location"] == "/orders/8"
    req = backend.wait_requests(1)[0]
    assert req.body == b"" and req.header("content-type") is None
    backend.handler = lambda req: Reply(200, [("content-type", "application/json")], chunks=[b""])
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:  # an empty chunked body
        s.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Type: application/xml\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\n")
    assert backend.wait_requests(2)[1].body == b""
