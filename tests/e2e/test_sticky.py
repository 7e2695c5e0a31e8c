"""Session persistence (SPEC section 2 `upstreams: sticky`): a client without a valid pin gets
`Set-Cookie: <cookie>=<16 hex>; Path=/; Max-Age=<ttl>; HttpOnly; SameSite=Lax` naming the target
that answered; a request carrying the cookie goes to that target while it is available, and is
re-pinned (a new Set-Cookie) when it is not. The cookie value is opaque: it never carries the
target's address."""

import re

import pytest

from conftest import proxy_config

COOKIE = "sid"
SET_COOKIE = re.compile(rf"^{COOKIE}=([0-9a-f]{{16}}); Path=/; Max-Age=3600; HttpOnly; SameSite=Lax$")


def sticky_gateway(gateway_factory, backends, **upstream):
    spec = {"targets": [b.address for b in backends], "sticky": {"cookie": COOKIE, "ttl": "1h"}}
    spec.update(upstream)
    return gateway_factory(proxy_config({"app": spec}, [{"match": {"path": "/"}, "upstream": "app"}]))


def pin_of(response) -> str:
    """The value of the sticky cookie the response sets; fails when it sets none or a malformed one."""
    values = [v for v in response.raw.headers.getlist("set-cookie") if v.startswith(COOKIE + "=")]
    assert len(values) == 1, f"expected one Set-Cookie for {COOKIE}, got {values}"
    m = SET_COOKIE.match(values[0])
    assert m, values[0]
    return m.group(1)


def sets_pin(response) -> bool:
    return COOKIE + "=" in (response.headers.get("set-cookie") or "")


def get(http, gw, path, pin=None):
    # The cookie is sent by hand: the Session's cookie jar stays empty, so each request says
    # exactly which pin it carries.
    headers = {"Cookie": f"{COOKIE}={pin}"} if pin else {}
    r = http.get(gw.url(path), headers=headers)
    assert r.status_code == 200, (path, r.status_code, r.text)
    http.cookies.clear()
    return r


def assert_opaque(pin, backends):
    for b in backends:
        host, port = b.address.rsplit(":", 1)
        assert port not in pin and host not in pin and "7f000001" not in pin, (pin, b.address)


def test_hundred_requests_with_the_cookie_all_land_on_the_pinned_target(gateway_factory, backend_factory, http):
    backends = [backend_factory(n) for n in ("a", "b", "c")]
    gw = sticky_gateway(gateway_factory, backends)
    first = get(http, gw, "/first")
    pin, pinned = pin_of(first), first.json()["backend"]
    assert_opaque(pin, backends)
    answered = [get(http, gw, f"/s{i}", pin) for i in range(100)]
    assert {r.json()["backend"] for r in answered} == {pinned}
    assert not any(sets_pin(r) for r in answered), "a valid pin must not be set again"
    by_name = {b.name: b for b in backends}
    assert [q.target for q in by_name[pinned].requests] == ["/first"] + [f"/s{i}" for i in range(100)]
    assert all(q.header("cookie") == f"{COOKIE}={pin}" for q in by_name[pinned].requests[1:])
    assert all(not b.requests for b in backends if b.name != pinned)


def test_each_target_has_its_own_opaque_pin(gateway_factory, backend_factory, http):
    backends = [backend_factory(n) for n in ("a", "b", "c")]
    gw = sticky_gateway(gateway_factory, backends)
    pins = {}
    for i in range(3):                       # round robin: three new clients, three targets
        r = get(http, gw, f"/new{i}")
        pins[r.json()["backend"]] = pin_of(r)
    assert sorted(pins) == ["a", "b", "c"]
    assert len(set(pins.values())) == 3
    for name, pin in pins.items():
        assert_opaque(pin, backends)
        for i in range(5):
            assert get(http, gw, f"/{name}{i}", pin).json()["backend"] == name
    for b in backends:
        assert [q.target for q in b.requests][1:] == [f"/{b.name}{i}" for i in range(5)]


def test_unknown_pin_is_replaced_by_a_valid_one(gateway_factory, backend_factory, http):
    backends = [backend_factory(n) for n in ("a", "b")]
    gw = sticky_gateway(gateway_factory, backends)
    r = get(http, gw, "/x", pin="0123456789abcdef")
    pin, name = pin_of(r), r.json()["backend"]
    assert pin != "0123456789abcdef"
    assert {get(http, gw, f"/y{i}", pin).json()["backend"] for i in range(6)} == {name}


@pytest.mark.parametrize("detector", ["health_check", "outlier"])
def test_pinned_target_that_dies_is_replaced_and_the_client_re_pinned(gateway_factory, backend_factory, http,
                                                                     detector):
    backends = [backend_factory(n) for n in ("a", "b", "c")]
    if detector == "health_check":
        extra = {"health_check": {"path": "/healthz", "interval": "200ms", "timeout": "150ms",
                                  "healthy": 2, "unhealthy": 2}, "outlier": "off"}
    else:
        extra = {"outlier": {"consecutive_failures": 2, "ejection_time": "30s"}}
    gw = sticky_gateway(gateway_factory, backends, **extra)
    first = get(http, gw, "/first")
    old_pin, old_name = pin_of(first), first.json()["backend"]
    dead = next(b for b in backends if b.name == old_name)
    assert get(http, gw, "/again", old_pin).json()["backend"] == old_name
    dead.stop()

    if detector == "health_check":
        gw.wait_error_log(f"target {dead.address} is down", timeout=3)
        moved = get(http, gw, "/moved", old_pin)
    else:
        # Requests with the old pin still succeed (the connect failure is retried elsewhere) until
        # the outlier detector ejects the target; from then on the pin is unavailable.
        for i in range(4):
            moved = get(http, gw, f"/moved{i}", old_pin)
            if sets_pin(moved):
                break
    new_name = moved.json()["backend"]
    assert new_name != old_name
    new_pin = pin_of(moved)
    assert new_pin != old_pin
    assert_opaque(new_pin, backends)
    after = [get(http, gw, f"/after{i}", new_pin) for i in range(10)]
    assert {r.json()["backend"] for r in after} == {new_name}
    assert not any(sets_pin(r) for r in after)
    survivor = next(b for b in backends if b.name == new_name)
    assert [q.target for q in survivor.proxied()][-10:] == [f"/after{i}" for i in range(10)]
    assert [q.target for q in dead.proxied()] == ["/first", "/again"]


def test_request_whose_pinned_target_refused_is_re_pinned_to_the_target_that_answered(
        gateway_factory, backend_factory, http):
    """The pinned target refuses the connection and the retry is answered by another: that answer
    must re-pin the client (as NGINX `sticky cookie` and HAProxy `option redispatch` do), or the
    client stays pinned to a dead target while its session now lives elsewhere."""
    backends = [backend_factory(n) for n in ("a", "b", "c")]
    gw = sticky_gateway(gateway_factory, backends)       # outlier default: 5 failures to eject
    first = get(http, gw, "/first")
    old_pin, old_name = pin_of(first), first.json()["backend"]
    dead = next(b for b in backends if b.name == old_name)
    dead.stop()
    moved = get(http, gw, "/moved", old_pin)
    new_name = moved.json()["backend"]
    assert new_name != old_name
    entry = gw.wait_access_log(2)[-1]
    assert entry["request_id"] == moved.headers["x-request-id"]
    assert entry["attempts"] >= 2 and entry["target"] != dead.address   # it was retried elsewhere
    assert sets_pin(moved), (f"GET /moved with Cookie: {COOKIE}={old_pin} (pinned to the stopped "
                             f"{dead.address}) was answered by {new_name} without a new Set-Cookie")
    new_pin = pin_of(moved)
    assert new_pin != old_pin
    assert {get(http, gw, f"/after{i}", new_pin).json()["backend"] for i in range(5)} == {new_name}
