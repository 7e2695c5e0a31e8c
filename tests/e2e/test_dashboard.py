"""The live dashboard at GET / of the admin listener (SPEC section 4), driven in headless Chromium:
the page itself loads without the token and fetches nothing from elsewhere; it asks for the token,
then shows what /api/stats says, second by second, while traffic flows. Saves docs/dashboard.png.

Needs chromium, chromium-driver and python3-selenium (scripts/deps.sh installs them): without
them this test fails, it does not skip."""

from __future__ import annotations

import math
import os
import random
import re
import struct
import threading
import time
from http.client import HTTPConnection, HTTPException

import pytest

from conftest import HOST, REPO, free_port, proxy_config, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = REPO / "docs" / "dashboard.png"
WINDOW = (1400, 900)
TOKEN = "dashboard-test-token"

# Clients (each from its own loopback address) and what they ask for: path -> weight.
HEAVY = "127.0.0.2"
CLIENTS = {
    HEAVY: {"/api/orders": 6, "/api/users": 3, "/old-home": 1},
    "127.0.0.3": {"/api/orders": 3, "/missing": 1},
    "127.0.0.4": {"/api/users": 4, "/flaky": 1, "/billing/invoices": 1},
    "127.0.0.5": {"/report.csv": 1},  # few requests, many bytes
}
CLIENT_PAUSE = {HEAVY: 0.012, "127.0.0.3": 0.03, "127.0.0.4": 0.05, "127.0.0.5": 0.4}


class Traffic:
    """One thread per client address, keep-alive, a varying pace so the charts have a shape;
    stop() ends and joins them (bounded)."""

    def __init__(self, port: int):
        self.port = port
        self.stopping = threading.Event()
        self.sent = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(ip,), daemon=True, name=f"traffic-{ip}")
                        for ip in CLIENTS]

    def start(self) -> "Traffic":
        for t in self.threads:
            t.start()
        return self

    def _run(self, ip: str):
        rnd = random.Random(ip)
        paths, weights = zip(*CLIENTS[ip].items())
        conn = None
        t0 = time.monotonic()
        while not self.stopping.is_set():
            if conn is None:
                conn = HTTPConnection(HOST, self.port, timeout=5, source_address=(ip, 0))
            try:
                conn.request("GET", rnd.choices(paths, weights)[0], headers={"Host": "shop.test"})
                conn.getresponse().read()
                with self.lock:
                    self.sent += 1
            except (OSError, HTTPException):
                conn.close()
                conn = None
            pace = 1.0 + 0.6 * math.sin((time.monotonic() - t0) / 2.5)
            self.stopping.wait(CLIENT_PAUSE[ip] * pace)
        if conn is not None:
            conn.close()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=10)


@pytest.fixture
def browser():
    """Headless Chromium through chromedriver, 1400x900; quit (with chromedriver) at the end."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            pytest.fail(f"{path} is required for this test: run scripts/deps.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        # the viewport itself is 1400x900 (--window-size counts the window's frame too)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(10)
        yield driver
    finally:
        driver.quit()


def admin_stats(http, port: int) -> dict:
    r = http.get(f"http://{HOST}:{port}/api/stats", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def number(text: str) -> float:
    return float(text.replace(",", ""))


READ_PAGE = """
const t = (id) => document.getElementById(id).textContent;
const rows = (id) => [...document.querySelectorAll('#' + id + ' tr[data-client]')].map(
    (tr) => [tr.dataset.client, tr.cells[1].textContent]);
return {
  polls: Number(document.body.dataset.polls),
  total: t('total-requests'), rps1: t('rps-1s'), rps10: t('rps-10s'), rps60: t('rps-60s'),
  p50: t('p50'), p99: t('p99'), s2xx: t('status-2xx'), s4xx: t('status-4xx'), s5xx: t('status-5xx'),
  generation: t('generation'), checksum: t('checksum'), live: t('live-text'),
  top_requests: rows('top-requests'), top_bytes: rows('top-bytes'),
};
"""


def polls(driver) -> int:
    return driver.execute_script("return Number(document.body.dataset.polls)")


def second_totals(stats: dict) -> list[int]:
    return [sum(p[c] for c in ("1xx", "2xx", "3xx", "4xx", "5xx", "none")) for p in stats["per_second"]]


def close(shown: float, exact: float) -> bool:
    """`shown` is `exact` as the page prints it: one decimal below 100, rounded above."""
    return abs(shown - exact) <= (0.5 if exact >= 100 else 0.051)


def within(value: float, a: float, b: float, slack: float) -> bool:
    lo, hi = min(a, b), max(a, b)
    return lo * (1 - slack) - 0.1 <= value <= hi * (1 + slack) + 0.1


def test_dashboard_shows_live_stats_in_a_browser(gateway_factory, backend_factory, browser, http):
    from selenium.webdriver.common.by import By

    backend, spare = backend_factory("backend"), backend_factory("spare")
    dead = f"{HOST}:{free_port()}"  # nothing listens: its health checks fail
    admin = free_port()
    cfg = proxy_config(
        {"shop": [backend, spare],
         "billing": {"targets": [dead], "outlier": "off",
                     "health_check": {"path": "/healthz", "interval": "200ms", "timeout": "150ms",
                                      "healthy": 2, "unhealthy": 1}}},
        [{"name": "billing", "match": {"path": "/billing"}, "upstream": "billing"},
         {"name": "legacy", "match": {"path_exact": "/old-home"}, "redirect": {"to": "/", "status": 301}},
         {"name": "missing", "match": {"path": "/missing"}, "respond": {"status": 404, "body": "no"}},
         {"name": "flaky", "match": {"path": "/flaky"}, "respond": {"status": 503, "body": "busy"}},
         {"name": "report", "match": {"path": "/report.csv"}, "respond": {"status": 200, "body": "x" * 60000}},
         {"name": "shop", "match": {"path": "/"}, "upstream": "shop"}],
        admin={"listen": f"{HOST}:{admin}", "token": TOKEN}, workers=2)
    gw = gateway_factory(cfg)
    base = f"http://{HOST}:{admin}"

    # The page: served without the token (it holds no data), self-contained, locked down by CSP.
    page = http.get(base + "/", timeout=5)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "Dygraph" in page.text and "/*DYGRAPHS" not in page.text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text), "an external reference"
    assert http.post(base + "/", timeout=5).status_code == 405
    assert http.get(base + "/api/stats", timeout=5).status_code == 401  # the data needs the token
    r = http.post(f"{base}/api/upstreams/shop/targets/{spare.address}/drain",
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert r.status_code == 200

    traffic = Traffic(gw.port).start()
    try:
        started = time.monotonic()
        driver = browser
        driver.get(base + "/")
        # no token yet: the page says so
        banner = driver.find_element(By.ID, "auth-banner")
        wait_for(banner.is_displayed, 10, 0.1, "the token prompt")
        assert polls(driver) == 0
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "token-save").click()
        wait_for(lambda: polls(driver) >= 1, 10, 0.1, "the first update with the token")
        assert not banner.is_displayed()
        assert driver.execute_script("return sessionStorage.getItem('sluice-admin-token')") == TOKEN

        # the numbers move on their own, once a second
        first = driver.execute_script(READ_PAGE)
        wait_for(lambda: (lambda p: p["polls"] >= first["polls"] + 2 and number(p["total"]) > number(first["total"])
                          and number(p["rps1"]) > 0)(driver.execute_script(READ_PAGE)),
                 15, 0.2, "the page's numbers to change")

        # ... and they are /api/stats': the page's reading comes from a fetch that started after
        # `before` was answered (two updates later) and ended before `after` was asked for.
        for _ in range(3):
            n0 = polls(driver)
            before = admin_stats(http, admin)
            wait_for(lambda: polls(driver) >= n0 + 2, 10, 0.05, "two more updates")
            shown = driver.execute_script(READ_PAGE)
            after = admin_stats(http, admin)
            assert before["requests"] <= number(shown["total"]) <= after["requests"], (before, shown, after)
            for key, cls in (("s2xx", "2xx"), ("s4xx", "4xx"), ("s5xx", "5xx")):
                assert before["status"][cls] <= number(shown[key]) <= after["status"][cls], (cls, shown)
            # rates: of a complete second that `after` still lists among its last ones
            totals = second_totals(after)
            # (seconds since the page's fetch: up to ~10 when the machine is busy with other tests)
            recent = range(1, 12)
            assert any(close(number(shown["rps1"]), totals[-k]) for k in recent), (shown["rps1"], totals[-6:])
            assert any(close(number(shown["rps10"]), sum(totals[-k - 9:len(totals) - k + 1]) / 10)
                       for k in recent), (shown["rps10"], totals[-15:])
            assert within(number(shown["rps60"]), before["rps"]["60s"], after["rps"]["60s"], 0.1)
            for key, field in (("p50", "p50_ms"), ("p99", "p99_ms")):
                assert within(number(shown[key]), before[field], after[field], 0.5), \
                    (field, shown[key], before[field], after[field])
            assert shown["generation"] == str(after["generation"])
            assert shown["checksum"] == after["checksum"]
            assert shown["live"] == "live"

        # upstream health: the backend is up (with its in-flight count), the drained one drained,
        # the dead one down
        def target_row(address):
            return driver.find_element(By.CSS_SELECTOR, f'#upstreams tr[data-target="{address}"]')

        def state(address):
            return target_row(address).find_element(By.CSS_SELECTOR, ".state").text.lower()
        row = target_row(backend.address)
        assert row.get_attribute("data-upstream") == "shop"
        assert state(backend.address) == "up"
        assert int(row.find_element(By.CSS_SELECTOR, ".in-flight").text) >= 0
        assert int(driver.find_element(By.ID, "in-flight").text) >= 0
        assert number(row.find_element(By.CSS_SELECTOR, ".requests").text) > 0
        assert state(spare.address) == "drained"
        assert target_row(dead).get_attribute("data-upstream") == "billing"
        wait_for(lambda: state(dead) == "down", 5, 0.1, "the dead target shown down")

        # top clients: the heavy client leads by requests, the report reader by bytes
        shown = driver.execute_script(READ_PAGE)
        stats = admin_stats(http, admin)
        assert shown["top_requests"][0][0] == HEAVY == stats["top_clients"]["by_requests"][0]["client"]
        assert shown["top_bytes"][0][0] == "127.0.0.5" == stats["top_clients"]["by_bytes"][0]["client"]
        assert {c for c, _ in shown["top_requests"]} == set(CLIENTS)

        # the charts hold the last 60 s: requests per second, and every status class seen
        charts = driver.execute_script("""
            const d = window.sluiceDashboard;
            const col = (g, c) => { let s = 0; for (let r = 0; r < g.numRows(); r++) s += g.getValue(r, c); return s; };
            return {rows: d.rpsChart.numRows(), rps: col(d.rpsChart, 1),
                    s2xx: col(d.statusChart, 1), s3xx: col(d.statusChart, 2),
                    s4xx: col(d.statusChart, 3), s5xx: col(d.statusChart, 4)};""")
        assert charts["rows"] == 60
        assert charts["rps"] > 0 and all(charts[k] > 0 for k in ("s2xx", "s3xx", "s4xx", "s5xx")), charts

        # a few more seconds of traffic for the picture, then the screenshot
        time.sleep(max(0.0, 14 - (time.monotonic() - started)))
        n0 = polls(driver)
        wait_for(lambda: polls(driver) > n0, 5, 0.05, "a fresh update")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(SCREENSHOT))
        png = SCREENSHOT.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", png[16:24]) == WINDOW

        # nothing went wrong in the page (the first, token-less 401 aside), no CSP violation
        errors = [e["message"] for e in driver.get_log("browser")
                  if e["level"] == "SEVERE" and "status of 401" not in e["message"]]
        assert not errors, errors
    finally:
        traffic.stop()
    assert traffic.sent > 100
