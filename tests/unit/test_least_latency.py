"""least_latency: requests in flight and measured latency; fake clock, seeded rng, no I/O."""

import math
import random
from collections import Counter

import pytest

from balancer.balancing.health import BackendHealth
from balancer.balancing.latency import LatencyEstimate, predicted_service
from balancer.balancing.load_report import LoadReport
from balancer.balancing.runtime import Runtime
from balancer.balancing.selection.algorithms import LeastLatency
from balancer.balancing.selection.pool import Pool
from balancer.balancing.weights import BackendStats, WeightPolicy
from balancer.config.addresses import Address
from balancer.config.parse import parse_config

B = WeightPolicy()
NOW = 1000.0


def runtime(policy: str = "least_latency", count: int = 3,
            weights: tuple[float, ...] = (), max_inflight: int = 64) -> Runtime:
    lines = [f"      - {{address: http://127.0.0.1:{i + 1}, weight: {w}}}"
             for i, w in enumerate(weights or (1.0,) * count)]
    text = ("listen: 127.0.0.1:0\npools:\n  p:\n    policy: " + policy +
            f"\n    max_inflight: {max_inflight}\n    backends:\n" + "\n".join(lines) + "\n")
    return Runtime(parse_config(text), 1, random.Random(7))


class View:
    """A BackendView with settable in-flight counts, stats and health."""

    def __init__(self, pool: Pool, now: float = NOW) -> None:
        self.backends = pool.backends
        self.own = dict.fromkeys(pool.backends, 0)
        self._stats = {a: BackendStats(now - 1000) for a in pool.backends}  # past slow start
        self._health = {a: BackendHealth() for a in pool.backends}

    def inflight(self, address: Address) -> int:
        return self.own[address]

    def stats(self, address: Address) -> BackendStats:
        return self._stats[address]

    def health(self, address: Address) -> BackendHealth:
        return self._health[address]


def shares(rt: Runtime, view: View, picks: int = 3000, now: float = NOW,
           request_class: str | None = None) -> list[float]:
    pool = rt.pools["p"]
    counts = Counter(rt.choose(pool, view, now, request_class=request_class)[1]  # type: ignore[index]
                     for _ in range(picks))
    return [counts[a] / picks for a in pool.backends]


def teach(view: View, services: list[float], now: float = NOW,
          request_class: str | None = None, samples: int = 20) -> None:
    """Each backend answered `samples` requests in `services[i]` seconds, alone."""
    for address, seconds in zip(view.backends, services, strict=True):
        for _ in range(samples):
            view.stats(address).observe_latency(seconds, 200, 1, request_class, now, B)


class Simulation:
    """Backends as single-worker FIFO queues (a GIL-bound threaded server): requests
    arrive every `gap` seconds, each backend takes `service[i]` seconds per request; every
    response feeds the balancer its latency, as the proxy does."""

    def __init__(self, policy: str, service: list[float], gap: float) -> None:
        self.rt = runtime(policy, len(service))
        self.pool = self.rt.pools["p"]
        self.view = View(self.pool, now=0.0)
        self.service = list(service)
        self.gap = gap
        self.now = 0.0
        self.free_at = dict.fromkeys(self.pool.backends, 0.0)
        self.pending: list[tuple[float, float, Address]] = []  # (done at, sent at, backend)

    def run(self, requests: int) -> Counter[int]:
        picks: Counter[int] = Counter()
        for _ in range(requests):
            self.now += self.gap
            self._complete_until(self.now)
            _, address, _ = self.rt.choose(self.pool, self.view, self.now)  # type: ignore[misc]
            index = self.pool.backends.index(address)
            done = max(self.now, self.free_at[address]) + self.service[index]
            self.free_at[address] = done
            self.pending.append((done, self.now, address))
            self.view.own[address] += 1
            picks[index] += 1
        return picks

    def _complete_until(self, now: float) -> None:
        self.pending.sort()
        while self.pending and self.pending[0][0] <= now:
            done, sent, address = self.pending.pop(0)
            self.view.stats(address).observe_latency(done - sent, 200, self.view.own[address],
                                                     None, done, B)
            self.view.own[address] -= 1


def test_a_slow_backend_gets_less_than_with_least_request() -> None:
    # two backends of 5 ms and one of 20 ms (4x slower), 160 req/s: about 60% of capacity
    latency = Simulation("least_latency", [0.005, 0.005, 0.020], gap=1 / 160).run(4000)
    plain = Simulation("least_request", [0.005, 0.005, 0.020], gap=1 / 160).run(4000)
    assert latency[2] / 4000 < 0.05, latency
    assert latency[2] < plain[2] / 3, (latency, plain)
    assert abs(latency[0] - latency[1]) < 0.1 * 4000


def test_a_backend_that_turns_slow_loses_its_share_within_a_few_hundred_requests() -> None:
    sim = Simulation("least_latency", [0.005, 0.005, 0.005], gap=1 / 160)
    before = sim.run(2000)
    assert min(before.values()) > 0.25 * 2000, before
    sim.service[0] = 0.020
    sim.run(200)  # adapting
    after = sim.run(2000)
    assert after[0] / 2000 < 0.08, after


@pytest.mark.parametrize(("excess", "expected"), [(0, 1.0), (2, 1 / 3), (6, 0.0)])
def test_a_backend_whose_reports_show_a_growing_queue_gets_less(
        excess: int, expected: float) -> None:
    rt = runtime()
    view = View(rt.pools["p"])
    a, b, c = view.backends
    view.own[a] = view.own[c] = 2                  # this balancer's own requests
    view.stats(b).observe_report(LoadReport(named={"inflight": excess, "queue": excess}),
                                 NOW - 0.5, B, own_inflight=0)  # others' requests on b
    assert shares(rt, view)[1] == pytest.approx(expected, abs=0.05)


def test_a_stale_report_is_ignored() -> None:
    rt = runtime()
    view = View(rt.pools["p"])
    a, b, c = view.backends
    view.own[a] = view.own[c] = 2
    view.stats(b).observe_report(LoadReport(named={"inflight": 6}), NOW - B.rif_ttl - 0.1, B,
                                 own_inflight=0)
    assert shares(rt, view)[1] == 1.0  # as if b had reported nothing: 0 in flight


def test_the_report_counts_only_what_is_beyond_the_balancers_own_requests() -> None:
    stats = BackendStats(0.0)
    stats.observe_report(LoadReport(named={"inflight": 3}), NOW, B, own_inflight=3)
    assert stats.rif.rif(1, NOW, B.rif_ttl) == 1       # all 3 were ours; 2 have finished
    stats.observe_report(LoadReport(named={"inflight": 5}), NOW, B, own_inflight=3)
    assert stats.rif.rif(1, NOW, B.rif_ttl) == 3       # 2 from elsewhere
    stats.observe_report(LoadReport(), NOW + 5, B, own_inflight=3)  # says nothing of RIF
    assert stats.rif.rif(1, NOW + 5, B.rif_ttl) == 1   # and the old one has gone stale


def test_ties_follow_the_static_weights() -> None:
    weights = (1.0, 2.0, 5.0, 2.0)
    rt = runtime(weights=weights)
    view = View(rt.pools["p"])
    got = shares(rt, view, picks=10_000)
    for share, weight in zip(got, weights, strict=True):
        assert share == pytest.approx(weight / sum(weights), rel=0.05)


def test_equal_latency_ties_follow_weights_and_a_slow_backend_loses_anyway() -> None:
    rt = runtime(weights=(1.0, 3.0, 1.0))
    view = View(rt.pools["p"])
    teach(view, [0.005, 0.005, 0.020])
    got = shares(rt, view, picks=8000)
    assert got[2] == 0.0
    assert got[1] == pytest.approx(0.75, abs=0.03)


def test_latency_is_compared_per_request_class() -> None:
    rt = runtime(count=2)
    view = View(rt.pools["p"])
    teach(view, [0.005, 0.050], request_class="heavy_cpu")   # b is slow at heavy work
    teach(view, [0.005, 0.002], request_class="io")          # and quick at io
    assert shares(rt, view, request_class="heavy_cpu") == [1.0, 0.0]
    assert shares(rt, view, request_class="io") == [0.0, 1.0]
    # a class only one backend has served: overall estimates for both
    view.stats(view.backends[1]).observe_latency(0.0001, 200, 1, "light_cpu", NOW, B)
    overall = [view.stats(a).latency.get(None) or 0.0 for a in view.backends]
    assert overall[1] > overall[0] * 1.2
    assert shares(rt, view, request_class="light_cpu") == [1.0, 0.0]


def test_a_slow_backend_left_alone_is_tried_again_later() -> None:
    rt = runtime(count=2)
    view = View(rt.pools["p"])
    teach(view, [0.005, 0.020])
    a, _ = view.backends
    view.own[a] = 1                      # a has one in flight: expects 10 ms, b 20 ms
    assert shares(rt, view, picks=100) == [1.0, 0.0]
    later = NOW + 5 * B.latency_idle     # no response from b since: its estimate fades
    view.stats(a).observe_latency(0.005, 200, 1, None, later, B)
    assert shares(rt, view, picks=100, now=later) == [0.0, 1.0]


def test_failed_responses_give_no_latency_sample() -> None:
    stats = BackendStats(0.0)
    stats.observe_latency(0.010, 200, 1, None, NOW, B)
    for status in (500, 503, 429):
        stats.observe_latency(0.0001, status, 1, None, NOW, B)  # fails fast: not fast
    assert stats.latency.get(None) == pytest.approx(0.010)


def test_latency_is_normalised_by_the_requests_in_flight() -> None:
    estimate = LatencyEstimate()
    estimate.observe(0.030, 2, None, NOW, rise=1.0, fall=1.0)  # 2 ahead of it: 10 ms each
    assert estimate.get(None) == pytest.approx(0.010)
    assert predicted_service([estimate, LatencyEstimate()], None, NOW, 2.0) == \
        pytest.approx([0.010, 0.010])                          # unknown: the best known


def test_when_every_backend_is_hot_the_lowest_rif_wins() -> None:
    rt = runtime(count=2, max_inflight=2)
    view = View(rt.pools["p"])
    teach(view, [0.005, 0.050])
    a, b = view.backends
    view.own[a], view.own[b] = 4, 2      # both at or over their cap of 2
    assert shares(rt, view, picks=100) == [0.0, 1.0]
    view.own[a], view.own[b] = 1, 2      # a has room: it is the only cold one
    assert shares(rt, view, picks=100) == [1.0, 0.0]


def test_slow_start_ramps_the_share_at_any_load_and_errors_lower_the_weight() -> None:
    rt = runtime()
    view = View(rt.pools["p"])
    a, b, c = view.backends
    view.own[a] = view.own[c] = 2                # expect 3 units of wait on a and c
    view.stats(b).restart(NOW)                   # b just joined: 10% of its weight
    assert shares(rt, view)[1] == pytest.approx(0.1, abs=0.03)   # probed 10% of the time
    assert shares(rt, view, now=NOW + B.slow_start / 2)[1] == pytest.approx(0.55, abs=0.05)
    late = NOW + B.slow_start                    # ramped up: the idle one wins
    assert shares(rt, view, now=late)[1] == 1.0
    view.own[a] = view.own[c] = 0                # all idle: a tie
    assert shares(rt, view, now=late)[1] == pytest.approx(1 / 3, abs=0.05)
    for _ in range(5):
        view.stats(b).observe_outcome(True, B)   # b fails: weight / (1 + 10 x rate)
    assert 0.01 < shares(rt, view, now=late)[1] < 0.15  # less, but still tried


def test_an_ejected_backend_is_never_chosen() -> None:
    rt = runtime()
    view = View(rt.pools["p"])
    teach(view, [0.010, 0.002, 0.010])
    view.health(view.backends[1]).ejected_until = NOW + 10
    assert shares(rt, view)[1] == 0.0


def test_one_candidate_and_the_probe_count() -> None:
    chooser = LeastLatency(random.Random(1), probes=1)   # one probe: picks follow weights
    counts = Counter(chooser.select("abc", [1.0, 1.0, 2.0], [0, 0, 9], [1.0, 1.0, 1.0])
                     for _ in range(4000))
    assert counts["c"] == pytest.approx(2000, rel=0.1)
    assert LeastLatency(random.Random(1)).select(["only"], [1.0], [5], [1.0]) == "only"


def test_a_restarted_backend_forgets_its_errors_and_its_cold_latency_while_it_ramps() -> None:
    """After an outage its error rate held it at the exploration floor (no traffic, so
    nothing decayed it), and its first response as a cold process (30 ms against 3 ms)
    kept it out until the estimate faded."""
    rt = runtime(count=2)
    view = View(rt.pools["p"])
    a, b = view.backends
    teach(view, [0.003, 0.003])
    for _ in range(10):
        view.stats(a).observe_outcome(True, B)       # refused while it was down
    view.stats(a).restart(NOW)
    assert view.stats(a).error_rate == 0.0
    view.stats(a).observe_latency(0.030, 200, 1, None, NOW + 0.1, B)  # cold
    view.own[b] = 1                                   # b busy: a cheaper while it ramps
    at = NOW + 0.2
    assert shares(rt, view, picks=2000, now=at)[0] == pytest.approx(0.1, abs=0.03)
    half = NOW + B.slow_start / 2                     # half way: half its probes kept
    assert shares(rt, view, picks=2000, now=half)[0] == pytest.approx(0.55, abs=0.05)


def test_backends_that_all_just_started_are_judged_by_their_latency() -> None:
    rt = runtime()
    view = View(rt.pools["p"])
    view._stats = {a: BackendStats(NOW) for a in view.backends}  # a balancer just started
    teach(view, [0.005, 0.005, 0.020], now=NOW + 0.5)
    assert shares(rt, view, now=NOW + 0.5)[2] == 0.0
# -- mutation testing, after merging round 3 (bench/results/mutation.md) ---------------------

class Script:
    """A RandomSource that returns the given values in turn and counts the calls."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)
        self.calls = 0

    def random(self) -> float:
        self.calls += 1
        return self.values.pop(0) if self.values else 0.0


def test_latency_estimate_rises_fast_and_falls_slowly_per_class_and_overall() -> None:
    est = LatencyEstimate()
    est.observe(1.0, 0, "a", 0.0, rise=0.5, fall=0.1)
    est.observe(3.0, 0, "a", 1.0, rise=0.5, fall=0.1)
    assert est.overall == 2.0 and est.per_class["a"] == 2.0  # up: rise
    est.observe(1.0, 0, "a", 2.0, rise=0.5, fall=0.1)
    assert est.per_class["a"] == pytest.approx(1.9) and est.overall == pytest.approx(1.9)
    est.observe(0.5, 0, "b", 3.0, rise=0.5, fall=0.1)
    assert est.get("a") == pytest.approx(1.9) and est.get("b") == 0.5
    assert est.get("c") == est.overall == est.get(None)
    assert est.at == 3.0


def test_latency_estimate_repr() -> None:
    est = LatencyEstimate()
    assert repr(est) == "<LatencyEstimate none classes=0>"
    est.observe(0.0123, 0, "a", 0.0, rise=0.5, fall=0.1)
    assert repr(est) == "<LatencyEstimate 12.30ms classes=1>"


def test_a_report_counts_until_exactly_rif_ttl_after_it_came() -> None:
    from balancer.balancing.latency import RifEstimate
    rif = RifEstimate()
    rif.observe(LoadReport(named={"inflight": 7.0}), own=2, now=10.0)
    assert rif.rif(1, 11.0, ttl=1.0) == 6.0
    assert rif.rif(1, 11.5, ttl=1.0) == 1.0


def test_predicted_service_fades_towards_the_best_with_idle_time() -> None:
    fast, slow = LatencyEstimate(), LatencyEstimate()
    fast.observe(1.0, 0, None, 10.0, rise=1.0, fall=1.0)
    slow.observe(3.0, 0, None, 8.0, rise=1.0, fall=1.0)
    assert predicted_service([fast, slow], None, 10.0, idle=2.0) == [
        1.0, pytest.approx(1.0 + 2.0 * math.exp(-1.0))]
    assert predicted_service([fast, slow], None, 8.5, idle=0.5) == [
        1.0, pytest.approx(1.0 + 2.0 * math.exp(-1.0))]  # fast's age is negative: as is
    assert predicted_service([fast, slow], None, 10.0, idle=0.0) == [1.0, 3.0]  # no fading
    assert predicted_service([LatencyEstimate(), LatencyEstimate()], "a", 0.0, 1.0) == [1.0, 1.0]


def test_least_latency_defaults_three_probes_and_a_twenty_percent_tie() -> None:
    assert repr(LeastLatency(Script())) == "<LeastLatency probes=3>"
    # drawn in order 0 then 1; 1 is 30 % cheaper: past the tie, so it wins
    chosen = LeastLatency(Script(0.0, 0.0)).select(["a", "b"], [1, 1], [0, 0], [1.3, 1.0])
    assert chosen == "b"
    # not hot unless told: the service estimate counts, not only the requests in flight
    assert LeastLatency(Script(0.0, 0.0)).select(["a", "b"], [1, 1], [0, 0], [2.0, 1.0]) == "b"


def test_least_latency_counts_the_request_itself_in_the_load() -> None:
    # costs service x (RIF + 1): a 1.0 x 1 = 1.0, b 0.3 x 3 = 0.9: a tie, the first drawn
    chosen = LeastLatency(Script(0.0, 0.0)).select(["a", "b"], [1, 1], [0, 2], [1.0, 0.3])
    assert chosen == "a"


def test_equal_costs_with_no_tolerance_go_to_the_first_drawn() -> None:
    chosen = LeastLatency(Script(0.0, 0.0), tolerance=0.0).select(
        ["a", "b"], [1, 1], [0, 0], [1.0, 1.0])
    assert chosen == "a"


def test_slow_start_scale_draws_only_below_one_and_falls_back_to_the_first_drawn() -> None:
    rng = Script()
    LeastLatency(rng).select(["a", "b", "c"], [1, 1, 1], [0, 0, 0], [1, 1, 1],
                             scale=[1.0, 1.0, 1.0])
    assert rng.calls == 3  # the three draws; a full scale costs no draw
    # a draw equal to the scale drops the probe
    rng = Script(0.0, 0.0, 0.5, 0.0)
    assert LeastLatency(rng, probes=2).select(["a", "b"], [1, 1], [0, 0], [1.0, 5.0],
                                              scale=[0.5, 1.0]) == "b"
    # nobody kept: only the first drawn, even when another is cheaper
    rng = Script(0.0, 0.0, 0.5, 0.5)
    assert LeastLatency(rng, probes=2).select(["a", "b"], [1, 1], [0, 0], [5.0, 1.0],
                                              scale=[0.0, 0.0]) == "a"


def test_weighted_sample_boundaries() -> None:
    from balancer.balancing.selection.algorithms import weighted_sample
    # a point that lands exactly at the end of a weight belongs to the next one
    assert weighted_sample(Script(0.5), [1.0, 1.0], 1) == [1]
    # rounding that leaves the point past every weight takes the last one left
    assert weighted_sample(Script(1.0), [1.0, 1.0, 1.0], 1) == [2]
