"""Upstream connection reuse against a real nginx: sequential requests through one worker
should ride a handful of kept-alive connections, not one connection each."""

import requests

from conftest import Reply, proxy_config, wait_for


def test_sequential_requests_reuse_upstream_connections_at_nginx(gateway_factory, nginx, http):
    gw = gateway_factory(proxy_config(
        {"web": {"targets": [nginx.address], "timeouts": {"idle": "30s"}}},
        [{"match": {"path": "/"}, "upstream": "web"}]))
    n = 200
    for i in range(n // 2):                       # one client connection for these ...
        r = http.get(gw.url(f"/ka/{i}"))
        assert r.status_code == 200 and r.text == "nginx ok\n"
    for i in range(n // 2, n):                    # ... and a new client connection for each of these
        with requests.Session() as s:
            s.trust_env = False
            r = s.get(gw.url(f"/ka/{i}"))
            assert r.status_code == 200 and r.text == "nginx ok\n"

    lines = wait_for(lambda: (lambda l: l if len(l) >= n else None)(nginx.log_lines()), 5,
                     what="nginx to log every request")
    assert [req for _, _, req in lines] == [f"GET /ka/{i} HTTP/1.1" for i in range(n)]
    connections = {conn for conn, _, _ in lines}
    assert len(connections) <= 5, f"{len(connections)} upstream connections for {n} requests"
    assert max(reqs for _, reqs, _ in lines) >= n // len(connections)


def test_idle_upstream_connection_is_closed_after_the_idle_timeout(gateway_factory, backend, http):
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [backend.address], "timeouts": {"idle": "300ms"}}},
        [{"match": {"path": "/"}, "upstream": "app"}]))
    assert http.get(gw.url("/")).status_code == 200
    with backend.cond:
        assert backend.cond.wait_for(lambda: backend.closed_connections == 1, 3), "pooled connection kept open"


def closing_backend(backend):
    """The backend closes every connection right after answering, without saying so."""
    backend.handler = lambda req: Reply(raw=b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                        % (len(req.target), req.target.encode()), close=True)


def sequential_after_close(gw, backend, send, n=6):
    for i in range(n):
        with backend.cond:   # the previous connection is really gone before the next request
            assert backend.cond.wait_for(lambda: backend.closed_connections == i, 3)
        r = send(gw.url(f"/c{i}"))
        assert (r.status_code, r.text) == (200, f"/c{i}"), f"request {i}: {r.status_code} {r.text}"
    assert [q.target for q in backend.requests] == [f"/c{i}" for i in range(n)]


def test_get_after_the_backend_closed_the_pooled_connection_succeeds(gateway_factory, backend, http):
    closing_backend(backend)
    gw = gateway_factory(proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app"}]))
    sequential_after_close(gw, backend, http.get)


def test_post_after_the_backend_closed_the_pooled_connection_succeeds(gateway_factory, backend, http):
    # The FIN arrived before the request was written: a closed pooled connection must be noticed
    # (and skipped) before reuse, because a request with a body cannot be replayed.
    closing_backend(backend)
    gw = gateway_factory(proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app"}]))
    sequential_after_close(gw, backend, lambda url: http.post(url, data=b"body"))
    assert all(q.body == b"body" for q in backend.requests)
