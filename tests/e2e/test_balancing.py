"""Weighted round robin (SPEC section 2 `balance: round_robin`, the default). With one worker the
balancer is one sequence, so every full cycle distributes exactly by weight."""

from collections import Counter

from conftest import proxy_config


def test_weighted_round_robin_gives_each_target_its_weight_per_cycle(gateway_factory, backend_factory, http):
    a, b, c = backend_factory("a"), backend_factory("b"), backend_factory("c")
    gw = gateway_factory(proxy_config(
        {"app": {"targets": [{"address": a.address, "weight": 1},
                             {"address": b.address, "weight": 2},
                             {"address": c.address, "weight": 3}]}},
        [{"match": {"path": "/"}, "upstream": "app"}]))
    per_cycle = []
    for cycle in range(3):
        answered = Counter()
        for i in range(6):
            r = http.get(gw.url(f"/r{cycle}-{i}"))
            assert r.status_code == 200
            answered[r.json()["backend"]] += 1
        per_cycle.append(answered)
    for answered in per_cycle:
        assert answered == {"a": 1, "b": 2, "c": 3}
    # the backends saw the same thing, every request exactly once
    assert (len(a.requests), len(b.requests), len(c.requests)) == (3, 6, 9)
    targets = sorted(r.target for r in a.requests + b.requests + c.requests)
    assert targets == sorted(f"/r{cy}-{i}" for cy in range(3) for i in range(6))


def test_equal_weights_alternate_between_targets(gateway_factory, backend_factory, http):
    a, b = backend_factory("a"), backend_factory("b")
    gw = gateway_factory(proxy_config({"app": [a, b]}, [{"match": {"path": "/"}, "upstream": "app"}]))
    order = [http.get(gw.url("/")).json()["backend"] for _ in range(6)]
    assert all(order[i] != order[i + 1] for i in range(5)), order
    assert len(a.requests) == len(b.requests) == 3
