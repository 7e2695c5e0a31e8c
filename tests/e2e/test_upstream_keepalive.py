"""Upstream connection reuse against a real nginx: sequential requests through one worker
should ride a handful of kept-alive connections, not one connection each."""

import requests

from conftest import proxy_config, wait_for


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
