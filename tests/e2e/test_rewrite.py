"""Route `rewrite` (SPEC section 2): the path the backend sees, with the query string kept."""

import pytest

from conftest import proxy_config


def start(gateway_factory, backend, path, rewrite):
    return gateway_factory(proxy_config(
        {"app": [backend]}, [{"match": {"path": path}, "upstream": "app", "rewrite": rewrite}]))


@pytest.mark.parametrize("sent, seen", [
    ("/api/users/1?x=1", "/users/1?x=1"),
    ("/api/", "/"),
    ("/api", "/"),
])
def test_strip_prefix_removes_the_matched_prefix_before_forwarding(gateway_factory, backend, http, sent, seen):
    gw = start(gateway_factory, backend, "/api", {"strip_prefix": True})
    r = http.get(gw.url(sent))
    assert r.status_code == 200
    assert r.json()["target"] == seen
    assert backend.last.target == seen


def test_prefix_is_prepended_to_the_path(gateway_factory, backend, http):
    gw = start(gateway_factory, backend, "/", {"prefix": "/v1"})
    r = http.get(gw.url("/users/7?active=true"))
    assert r.status_code == 200
    assert backend.last.target == "/v1/users/7?active=true"


def test_regex_rewrite_substitutes_capture_groups(gateway_factory, backend, http):
    gw = start(gateway_factory, backend, "/old", {"regex": "^/old/([a-z]+)/(\\d+)$", "replace": "/new/\\2/\\1"})
    r = http.get(gw.url("/old/item/42?q=a"))
    assert r.status_code == 200
    assert backend.last.target == "/new/42/item?q=a"


def test_regex_rewrite_that_does_not_match_leaves_the_path_alone(gateway_factory, backend, http):
    gw = start(gateway_factory, backend, "/old", {"regex": "^/old/([a-z]+)/(\\d+)$", "replace": "/new/\\2/\\1"})
    r = http.get(gw.url("/old/other"))
    assert r.status_code == 200
    assert backend.last.target == "/old/other"
