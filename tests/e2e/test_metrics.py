"""Metrics (SPEC section 5) at the admin listener's /metrics, parsed back with
python3-prometheus-client, and traffic stats at /api/stats: counters match the traffic sent,
top clients names the heavy client."""

from __future__ import annotations

import socket
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import HOST, free_port, proxy_config, wait_for


def admin_cfg(cfg: dict) -> tuple[dict, int]:
    port = free_port()
    cfg["admin"] = {"listen": f"{HOST}:{port}"}
    cfg["workers"] = 2
    return cfg, port


def scrape(port) -> dict:
    """{(sample name, frozenset(labels)): value} of every sample."""
    text = requests.get(f"http://{HOST}:{port}/metrics", timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def raw_get(port: int, path: str, source_ip: str = "127.0.0.1") -> bytes:
    s = socket.create_connection((HOST, port), timeout=5, source_address=(source_ip, 0))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return data


def test_counters_match_a_known_request_mix(gateway_factory, backend_factory):
    a = backend_factory("a")
    cfg, admin = admin_cfg(proxy_config(
        {"app": [a], "dead": [f"{HOST}:1"]},
        [{"name": "app", "match": {"path": "/app"}, "upstream": "app"},
         {"name": "limited", "match": {"path": "/limited"}, "respond": {"status": 200, "body": "x"},
          "rate_limit": [{"key": "route", "rate": "3/min"}]},
         {"name": "down", "match": {"path": "/down"}, "upstream": "dead"}]))
    gw = gateway_factory(cfg)
    with requests.Session() as s:
        s.trust_env = False
        for _ in range(7):
            assert s.get(gw.url("/app/x")).status_code == 200
        for _ in range(5):
            s.get(gw.url("/limited"))
        for _ in range(2):
            assert s.get(gw.url("/nothing-here")).status_code == 404
        assert s.get(gw.url("/down")).status_code == 502
    m = scrape(admin)
    assert value(m, "sluice_requests_total", route="app", code="2xx") == 7
    assert value(m, "sluice_requests_total", route="limited", code="2xx") == 3
    assert value(m, "sluice_requests_total", route="limited", code="4xx") == 2
    assert value(m, "sluice_rate_limited_total", route="limited") == 2
    assert value(m, "sluice_requests_total", route="", code="4xx") == 2
    assert value(m, "sluice_requests_total", route="down", code="5xx") == 1
    assert value(m, "sluice_request_duration_seconds_count", route="app") == 7
    assert value(m, "sluice_request_duration_seconds_bucket", route="app", le="+Inf") == 7
    assert value(m, "sluice_upstream_requests_total", upstream="app", target=a.address, code="2xx") == 7
    # the dead target: one attempt and one retry-free connect failure (no other target)
    assert value(m, "sluice_upstream_requests_total", upstream="dead", target=f"{HOST}:1", code="none") >= 1
    assert value(m, "sluice_upstream_target_healthy", upstream="app", target=a.address) == 1
    assert value(m, "sluice_connections_total", listener="default") >= 1  # keep-alive
    assert value(m, "sluice_bytes_sent_total", listener="default") > 0
    # reloads are counted
    gw.reload()
    assert value(scrape(admin), "sluice_config_reloads_total", result="success") == 1


def test_stats_rates_percentiles_and_top_clients(gateway_factory, backend):
    cfg, admin = admin_cfg(proxy_config({"app": [backend]}, [{"name": "main", "match": {"path": "/"}, "upstream": "app"}]))
    gw = gateway_factory(cfg)
    heavy, light = "127.0.0.9", [f"127.0.0.{i}" for i in range(2, 7)]
    for _ in range(40):
        raw_get(gw.port, "/h", heavy)
    for ip in light:
        for _ in range(3):
            raw_get(gw.port, "/l", ip)
    # stats refresh per complete second: wait for the next one
    def stats():
        r = requests.get(f"http://{HOST}:{admin}/api/stats", timeout=5).json()
        return r if r["rps"]["10s"] > 0 else None
    st = wait_for(stats, 5, 0.2, "a complete second in the rates")
    assert st["requests"] == 55
    assert st["status"]["2xx"] == 55
    route = next(r for r in st["routes"] if r["route"] == "main")
    assert route["requests"] == 55 and route["p99_ms"] >= route["p50_ms"] > 0
    top = st["top_clients"]["by_requests"]
    assert top[0]["client"] == heavy and top[0]["requests"] == 40
    assert {t["client"] for t in top} == {heavy, *light}
    assert st["top_clients"]["by_bytes"][0]["client"] == heavy
    target = st["upstreams"][0]["targets"][0]
    assert target["address"] == backend.address and target["status"]["2xx"] == 55
    assert sum(s["2xx"] for s in st["per_second"]) <= 55
