"""Selection: the drawing rules, the selector per policy and the choose step (exclusion,
health and panic, cap, spill, over_cap). Seeded random sources, a fake BackendView, no I/O."""

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import pytest

from balancer.balancing.health import BackendHealth
from balancer.balancing.load_report import LoadReport
from balancer.balancing.runtime import Runtime
from balancer.balancing.selection.algorithms import PowerOfTwoChoices, RoundRobin
from balancer.balancing.selection.choose import choose
from balancer.balancing.selection.selectors import (
    BackendView,
    LeastLatencySelector,
    LeastRequestSelector,
    RoundRobinSelector,
    WeightedLeastRequestSelector,
    selector_for,
)
from balancer.balancing.weights import BackendStats, WeightPolicy
from balancer.config.addresses import Address
from balancer.config.model import POLICIES
from balancer.config.parse import parse_config

B = WeightPolicy()
NOW = 100.0


def report(rps: float, utilisation: float) -> LoadReport:
    return LoadReport(cpu_utilization=utilisation, rps=rps)


def settled() -> BackendStats:
    return BackendStats(NOW - 1000)  # long past slow start


class View:
    """A BackendView with settable in-flight counts, stats and health."""

    def __init__(self, runtime: Runtime) -> None:
        addresses = runtime.addresses()
        self.own = dict.fromkeys(addresses, 0)
        self._stats = {a: settled() for a in addresses}
        self._health = {a: BackendHealth() for a in addresses}

    def inflight(self, address: Address) -> int:
        return self.own[address]

    def stats(self, address: Address) -> BackendStats:
        return self._stats[address]

    def health(self, address: Address) -> BackendHealth:
        return self._health[address]

    def eject(self, *addresses: Address) -> None:
        for address in addresses:
            self._health[address].ejected_until = NOW + 10


def runtime(policy: str = "round_robin", other: str = "round_robin", cap: int = 2,
            spill: bool = True, seed: int = 3) -> Runtime:
    """Pool p (policy, three backends, `cap` in flight each) spilling to pool q (two)."""
    return Runtime(parse_config(
        "listen: 127.0.0.1:0\npools:\n"
        f"  p:\n    policy: {policy}\n    max_inflight: {cap}\n"
        + ("    spill_to: [q]\n" if spill else "")
        + "    backends: [http://127.0.0.1:1, http://127.0.0.1:2, http://127.0.0.1:3]\n"
        f"  q:\n    policy: {other}\n    max_inflight: {cap}\n"
        "    backends: [http://127.0.0.1:11, http://127.0.0.1:12]\n"), 1, random.Random(seed))


def picks(rt: Runtime, view: BackendView, count: int, **kwargs: object) -> list[str]:
    """The `count` choices for pool p, each as 'pool:port' (+ '!' if spilled) or None."""
    found = []
    for _ in range(count):
        chosen = rt.choose(rt.pools["p"], view, NOW, **kwargs)  # type: ignore[arg-type]
        found.append("None" if chosen is None else
                     f"{chosen[0].name}:{chosen[1].port}{'!' if chosen[2] else ''}")
    return found


def at_cap(view: View, rt: Runtime, pool: str, cap: int = 2) -> None:
    for address in rt.pools[pool].backends:
        view.own[address] = cap


# -- the drawing rules ---------------------------------------------------------------------------

def test_round_robin_takes_each_in_turn_and_refuses_an_empty_list() -> None:
    robin = RoundRobin()
    assert [robin.select("abc") for _ in range(7)] == list("abcabca")
    assert repr(robin) == "<RoundRobin next=1>"
    assert [robin.select("xy") for _ in range(3)] == list("yxy")  # a shorter list next
    with pytest.raises(LookupError, match=r"^no candidates$"):
        robin.select([])


def test_round_robin_below_a_cap_skips_full_backends_and_goes_on_after_its_pick() -> None:
    robin = RoundRobin()
    load = {"a": 0, "b": 2, "c": 1, "d": 0}
    picked = [robin.select_below("abcd", load.__getitem__, 2) for _ in range(5)]
    assert picked == ["a", "c", "d", "a", "c"]  # b is at the cap
    assert robin.select_below("abcd", load.__getitem__, 1) == "d"  # only a and d are below 1
    assert robin.select_below("abcd", load.__getitem__, 0) is None
    assert robin.select_below("", load.__getitem__, 5) is None


def test_round_robin_below_a_cap_shares_its_turn_with_select() -> None:
    robin = RoundRobin()
    assert robin.select("abc") == "a"
    assert robin.select_below("abc", lambda c: 0, 1) == "b"
    assert robin.select("abc") == "c"


def test_picks_follow_the_weights_within_5_percent_over_10k_picks() -> None:
    chooser = PowerOfTwoChoices(random.Random(42))
    weights = [1.0, 2.0, 5.0, 2.0]
    counts = Counter(chooser.select(range(4), weights, lambda i: 0) for _ in range(10_000))
    for index, weight in enumerate(weights):
        expected = 10_000 * weight / sum(weights)
        assert abs(counts[index] - expected) <= 0.05 * expected, (index, counts[index], expected)


def test_the_colder_of_the_two_draws_wins() -> None:
    chooser = PowerOfTwoChoices(random.Random(1))
    inflight = {0: 5, 1: 0, 2: 0}
    counts = Counter(chooser.select([0, 1, 2], [1.0, 1.0, 1.0], inflight.__getitem__)
                     for _ in range(3000))
    assert counts[0] == 0  # the hot backend never wins against a cold one
    assert abs(counts[1] - counts[2]) < 300
    two = Counter(chooser.select([0, 1], [1.0, 1.0], {0: 1, 1: 0}.__getitem__)
                  for _ in range(100))
    assert two == {1: 100}


class Draws:
    """A random source that returns the given values in turn."""

    def __init__(self, *values: float) -> None:
        self.values = iter(values)

    def random(self) -> float:
        return next(self.values)


def test_a_draw_on_a_boundary_goes_to_the_next_backend() -> None:
    # first draw: 0.5 x 2 = 1.0, exactly past a's share, so b; second (b skipped): a;
    # nothing in flight: the first drawn wins
    assert PowerOfTwoChoices(Draws(0.5, 0.5)).select("ab", [1.0, 1.0], lambda c: 0) == "b"
    # a draw at the very end of the range (rounding) falls to the last candidate
    assert PowerOfTwoChoices(Draws(1.0, 1.0)).select("abc", [0.1, 0.2, 0.3], lambda c: 0) == "c"


def test_a_single_candidate_is_taken_without_drawing() -> None:
    assert PowerOfTwoChoices(Draws()).select(["only"], [3.0], lambda c: 0) == "only"
    assert repr(PowerOfTwoChoices(Draws())) == "<PowerOfTwoChoices p2c>"


# -- one selector per policy, chosen once ---------------------------------------------------------

SELECTOR_OF = {"round_robin": RoundRobinSelector, "least_request": LeastRequestSelector,
               "weighted_least_request": WeightedLeastRequestSelector,
               "least_latency": LeastLatencySelector}


@pytest.mark.parametrize("policy", POLICIES)
def test_each_pool_gets_the_selector_of_its_policy_and_a_selector_of_its_own(
        policy: str) -> None:
    rt = runtime(policy, other=policy)
    p, q = rt.pools["p"], rt.pools["q"]
    assert type(p.selector) is SELECTOR_OF[policy]
    assert type(q.selector) is SELECTOR_OF[policy]
    assert p.selector is not q.selector
    assert type(selector_for(policy, random.Random(1), B)) is SELECTOR_OF[policy]  # type: ignore[arg-type]


class Recording:
    """A selector that records its calls and picks the last backend it is given."""

    reports_in_weights = True

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], int | None]] = []

    def pick(self, backends: Sequence[Address], static: Mapping[Address, float],
             view: BackendView, now: float, cap: int | None,
             request_class: str | None) -> Address | None:
        self.calls.append(([a.port for a in backends], cap))
        return backends[-1] if backends else None


def test_choose_asks_the_pools_own_selector_and_no_other() -> None:
    rt = runtime()
    view = View(rt)
    mine, theirs = Recording(), Recording()
    rt.pools["p"].selector, rt.pools["q"].selector = mine, theirs
    assert picks(rt, view, 1) == ["p:3"]
    assert mine.calls == [([1, 2, 3], 2)] and theirs.calls == []


def test_a_round_robin_pool_takes_its_backends_in_turn() -> None:
    rt = runtime("round_robin")
    assert picks(rt, View(rt), 4) == ["p:1", "p:2", "p:3", "p:1"]


def test_plain_least_request_ignores_reported_weights() -> None:
    for policy, expected_share in (("least_request", 0.5), ("weighted_least_request", 0.8)):
        rt = Runtime(parse_config(
            "listen: 127.0.0.1:0\npools:\n  p:\n    policy: " + policy +
            "\n    backends: [http://127.0.0.1:1, http://127.0.0.1:2]\n"), 1, random.Random(3))
        view = View(rt)
        first, second = rt.pools["p"].backends
        view.stats(first).observe_report(report(100, 0.1), NOW, B)
        view.stats(second).observe_report(report(100, 0.4), NOW, B)  # 4:1
        share = picks(rt, view, 4000).count("p:1") / 4000
        assert abs(share - expected_share) < 0.04, (policy, share)


@pytest.mark.parametrize("policy", POLICIES)
def test_the_weights_shown_include_load_reports_except_for_least_latency(policy: str) -> None:
    rt = runtime(policy)
    view = View(rt)
    first, second, third = rt.pools["p"].backends
    view.stats(first).observe_report(report(100, 0.1), NOW, B)
    view.stats(second).observe_report(report(100, 0.4), NOW, B)
    view.stats(third).observe_report(report(100, 0.4), NOW, B)
    weights = rt.weights(rt.pools["p"], view, NOW)
    expected = 1.0 if policy == "least_latency" else 4.0
    assert weights[0] / weights[1] == pytest.approx(expected)


# -- the choose step ------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", POLICIES)
def test_backends_at_their_cap_are_passed_over(policy: str) -> None:
    rt = runtime(policy)
    view = View(rt)
    first, second, third = rt.pools["p"].backends
    view.own[first] = view.own[third] = 2
    for address, seconds in ((first, 0.001), (second, 1.0), (third, 0.001)):  # the free one
        for _ in range(5):                                                    # is slow
            view.stats(address).observe_latency(seconds, 200, 1, None, NOW, B)
    assert set(picks(rt, view, 20)) == {"p:2"}


@pytest.mark.parametrize("policy", POLICIES)
def test_a_full_pool_spills_to_the_first_spill_pool_with_room_then_queues(policy: str) -> None:
    rt = runtime(policy, other=policy)
    view = View(rt)
    at_cap(view, rt, "p")
    assert set(picks(rt, view, 20)) == {"q:11!", "q:12!"}
    at_cap(view, rt, "q")  # no room anywhere: past the cap in its own pool, not spilled
    assert set(picks(rt, view, 40)) == {"p:1", "p:2", "p:3"}
    assert picks(rt, view, 1, over_cap=False) == ["None"]  # or wait in the queue


def test_without_spill_to_a_full_pool_keeps_its_requests() -> None:
    rt = runtime(spill=False)
    view = View(rt)
    at_cap(view, rt, "p")
    assert picks(rt, view, 3) == ["p:1", "p:2", "p:3"]
    assert picks(rt, view, 1, over_cap=False) == ["None"]


def test_a_pool_with_room_is_used_whatever_over_cap_says() -> None:
    rt = runtime()
    view = View(rt)
    assert picks(rt, view, 2, over_cap=False) == ["p:1", "p:2"]


@pytest.mark.parametrize("policy", POLICIES)
def test_excluded_backends_are_never_chosen(policy: str) -> None:
    rt = runtime(policy)
    view = View(rt)
    first, _, third = rt.pools["p"].backends
    assert set(picks(rt, view, 20, exclude=[first, third])) == {"p:2"}


def test_with_every_backend_excluded_a_retry_goes_to_a_spill_pool_with_room_or_nowhere() -> None:
    rt = runtime()
    view = View(rt)
    tried = list(rt.pools["p"].backends)
    assert picks(rt, view, 2, exclude=tried) == ["q:11!", "q:12!"]
    at_cap(view, rt, "q")  # not past the cap there, and nothing left here
    assert picks(rt, view, 1, exclude=tried) == ["None"]
    alone = runtime(spill=False)
    assert picks(alone, View(alone), 1, exclude=list(alone.pools["p"].backends)) == ["None"]


@pytest.mark.parametrize("policy", POLICIES)
def test_ejected_backends_are_left_out_until_all_are_ejected_then_all_are_used(
        policy: str) -> None:
    rt = runtime(policy)
    view = View(rt)
    first, second, third = rt.pools["p"].backends
    view.eject(first, second)
    assert set(picks(rt, view, 20)) == {"p:3"}
    view.eject(third)  # panic: an ejected backend is a guess, a 503 a certainty
    assert set(picks(rt, view, 60)) == {"p:1", "p:2", "p:3"}


def test_an_excluded_backend_stays_excluded_in_a_panic() -> None:
    rt = runtime()
    view = View(rt)
    first, second, third = rt.pools["p"].backends
    view.eject(first, second)
    assert set(picks(rt, view, 6, exclude=[third])) == {"p:1", "p:2"}


def test_spill_pools_are_wired_once_to_the_snapshots_own_pools() -> None:
    rt = runtime()
    p, q = rt.pools["p"], rt.pools["q"]
    assert p.spill == (q,) and p.spill[0] is q and q.spill == ()
    view = View(rt)
    at_cap(view, rt, "p")
    assert choose(p, view, NOW) == (q, q.backends[0], True)


# -- mutation run after the redesign (bench/results/mutation.md) ---------------------------------

def one_pool(policy: str, backends: int, cap: int = 2, seed: int = 3) -> Runtime:
    """Pool p alone: `backends` backends (ports 1..), `cap` in flight each."""
    listed = ", ".join(f"http://127.0.0.1:{port}" for port in range(1, backends + 1))
    return Runtime(parse_config(
        f"listen: 127.0.0.1:0\npools:\n  p:\n    policy: {policy}\n    max_inflight: {cap}\n"
        f"    backends: [{listed}]\n"), 1, random.Random(seed))


@pytest.mark.parametrize("policy", POLICIES)
def test_a_lone_backend_is_used_below_its_cap_and_past_it_only_with_over_cap(policy: str) -> None:
    rt = one_pool(policy, 1)
    view = View(rt)
    (only,) = rt.pools["p"].backends
    view.own[only] = 1
    assert picks(rt, view, 1, over_cap=False) == ["p:1"]
    view.own[only] = 2  # at the cap: it waits, or queues there
    assert picks(rt, view, 1, over_cap=False) == ["None"]
    assert picks(rt, view, 1) == ["p:1"]


def test_a_retry_that_spilled_is_not_sent_to_the_spill_backend_it_tried() -> None:
    rt = runtime()
    view = View(rt)
    at_cap(view, rt, "p")
    tried = [rt.pools["q"].backends[0]]
    assert picks(rt, view, 4, exclude=tried) == ["q:12!"] * 4


def test_a_spilled_request_is_compared_by_its_own_class_latency() -> None:
    rt = runtime("round_robin", other="least_latency")
    view = View(rt)
    at_cap(view, rt, "p")
    fast_for_a, fast_for_b = rt.pools["q"].backends
    for address, a_seconds, b_seconds in ((fast_for_a, 0.01, 1.0), (fast_for_b, 1.0, 0.01)):
        for _ in range(5):
            view.stats(address).observe_latency(a_seconds, 200, 1, "a", NOW, B)
            view.stats(address).observe_latency(b_seconds, 200, 1, "b", NOW, B)
    assert set(picks(rt, view, 20, request_class="a")) == {"q:11!"}
    assert set(picks(rt, view, 20, request_class="b")) == {"q:12!"}


def least_latency_share(policy: WeightPolicy, prepare: Callable[[View, Address, Address], None],
                        count: int = 4000) -> float:
    """The share of p:1's picks in a least_latency pool of two, prepared by `prepare`."""
    rt = one_pool("least_latency", 2, cap=1000)
    view = View(rt)
    first, second = rt.pools["p"].backends
    prepare(view, first, second)
    selector = LeastLatencySelector(random.Random(5), policy)
    chosen = [selector.pick((first, second), rt.pools["p"].static_weight, view, NOW, 1000, None)
              for _ in range(count)]
    return chosen.count(first) / count


def latencies(first_seconds: float, second_seconds: float) -> Callable[[View, Address, Address],
                                                                        None]:
    def prepare(view: View, first: Address, second: Address) -> None:
        for _ in range(5):
            view.stats(first).observe_latency(first_seconds, 200, 1, None, NOW, B)
            view.stats(second).observe_latency(second_seconds, 200, 1, None, NOW, B)
    return prepare


def test_least_latency_latencies_within_the_tolerance_are_a_tie_and_outside_it_are_not() -> None:
    # 1.15 s is within 20 % of 1.0 s: a tie, the picks follow the (equal) weights
    assert least_latency_share(B, latencies(1.15, 1.0)) == pytest.approx(0.5, abs=0.04)
    # with no tolerance the faster always wins
    exact = WeightPolicy(latency_tolerance=0.0)
    assert least_latency_share(exact, latencies(1.15, 1.0)) == 0.0


def test_least_latency_leaves_load_reports_out_of_its_weights() -> None:
    def reports(view: View, first: Address, second: Address) -> None:
        view.stats(first).observe_report(report(100, 0.1), NOW, B)   # 4:1 for the weighted
        view.stats(second).observe_report(report(100, 0.4), NOW, B)  # policies
    assert least_latency_share(B, reports) == pytest.approx(0.5, abs=0.04)


def test_least_latency_applies_slow_start_once_not_squared() -> None:
    # halfway through slow start: 0.1 + 0.9 x 0.5 = 0.55 of its weight; with nothing to tell
    # them apart it is drawn first half the time and stays a probe 55 % of those: 27.5 %
    # (applied in the weights too it would be 0.55 / 1.55 x 0.55: 19.5 %)
    def restarted(view: View, first: Address, second: Address) -> None:
        view._stats[first] = BackendStats(NOW - B.slow_start / 2)
    assert least_latency_share(B, restarted) == pytest.approx(0.275, abs=0.03)


def test_a_backend_at_most_5_percent_of_the_ramp_behind_is_judged_by_its_latency() -> None:
    # 95 % through slow start (the others done): its 2 s against 1 s count, it loses every
    # tie-free comparison; further behind, its latency would not count yet (a tie)
    def slow_and_nearly_ramped(view: View, first: Address, second: Address) -> None:
        view._stats[first] = BackendStats(NOW - B.slow_start * 0.95)
        latencies(2.0, 1.0)(view, first, second)
    assert least_latency_share(B, slow_and_nearly_ramped) == 0.0

    def slow_and_ramping(view: View, first: Address, second: Address) -> None:
        view._stats[first] = BackendStats(NOW - B.slow_start * 0.9)
        latencies(2.0, 1.0)(view, first, second)
    assert least_latency_share(B, slow_and_ramping) > 0.3


def test_each_selector_names_its_policy_in_its_repr() -> None:
    rng = random.Random(1)
    assert repr(LeastRequestSelector(rng)) == "<LeastRequestSelector>"
    assert repr(WeightedLeastRequestSelector(rng, B)) == "<WeightedLeastRequestSelector>"
    assert repr(RoundRobinSelector()) == "<RoundRobinSelector <RoundRobin next=0>>"
