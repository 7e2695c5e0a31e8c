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


def test_backend_closing_kept_alive_connections_does_not_fail_requests(gateway_factory, backend, http):
    # The backend closes every connection right after answering, without saying so; the
    # gateway must not lose the next request on the dead pooled connection.
    backend.handler = lambda req: Reply(raw=b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                        % (len(req.target), req.target.encode()), close=True)
    gw = gateway_factory(proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app"}]))
    for i in range(10):
        with backend.cond:   # the previous connection is really gone before the next request
            assert backend.cond.wait_for(lambda: backend.closed_connections == i, 3)
        method = http.get if i % 2 == 0 else http.post
        r = method(gw.url(f"/c{i}"), **({} if i % 2 == 0 else {"data": b"body"}))
        assert (r.status_code, r.text) == (200, f"/c{i}"), f"request {i}: {r.status_code} {r.text}"
    assert [q.target for q in backend.requests] == [f"/c{i}" for i in range(10)]
