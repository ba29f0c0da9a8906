"""Passive health, active checks, panic and the retry budget (balancer.balancing.health), pure:
no sockets, the clock passed in. Failover end to end: tests/integration/test_health.py."""

from balancer.balancing.health import (
    EJECTED,
    RESTORED,
    BackendHealth,
    HealthPolicy,
    RetryBudget,
    available,
    may_eject,
)

POLICY = HealthPolicy(consecutive_failures=3, ejection=10, max_ejection=25)


def test_consecutive_failures_eject_and_the_time_grows_with_each_ejection() -> None:
    health = BackendHealth()
    assert [health.observe(True, 0.0, POLICY) for _ in range(3)] == [None, None, EJECTED]
    assert health.is_ejected(9.9) and not health.is_ejected(10.0)
    assert health.poll(5.0) is None and health.poll(10.0) is RESTORED and health.poll(11) is None
    health.ejections = 2                 # as if ejected before and not yet forgiven
    health.observe(False, 15.0, POLICY)  # it served (forgiven: 1 left), then fails again
    for _ in range(3):
        transition = health.observe(True, 20.0, POLICY)
    assert transition is EJECTED and health.ejected_until == 20.0 + 20  # 2 x 10 s
    health.poll(40.0)
    health.ejections = 3
    health.observe(False, 45.0, POLICY)
    for _ in range(3):
        health.observe(True, 50.0, POLICY)
    assert health.ejected_until == 50.0 + 25  # capped at max_ejection


def test_a_backend_still_down_after_its_ejection_is_ejected_for_the_base_time_again() -> None:
    """The bench's failover: down for 6 s with a 2 s ejection, it was ejected for 2, 4 and
    then 6 s (each trial after an ejection failed), out for 6 s more once it was back."""
    health = BackendHealth()
    now = 0.0
    for _ in range(4):                   # tried at the end of each ejection: still down
        for _ in range(3):
            health.observe(True, now, POLICY)
        assert health.ejected_until == now + 10
        now = health.ejected_until
        assert health.poll(now) is RESTORED
    assert health.ejections == 4


def test_a_success_resets_the_count() -> None:
    health = BackendHealth()
    for failed in (True, True, False, True, True):
        assert health.observe(failed, 0.0, POLICY) is None
    assert not health.is_ejected(0.0)


def test_at_most_the_configured_share_is_ejected() -> None:
    healths = [BackendHealth() for _ in range(4)]
    policy = HealthPolicy(consecutive_failures=1, max_ejected_share=0.5)
    ejected = 0
    for health in healths:
        if health.observe(True, 0.0, policy, may_eject(healths, 0.0, policy)) is EJECTED:
            ejected += 1
    assert ejected == 2


def test_panic_uses_every_backend_when_none_is_available() -> None:
    healths = {name: BackendHealth() for name in "abc"}
    policy = HealthPolicy(consecutive_failures=1)
    healths["a"].observe(True, 0.0, policy)
    assert list(available("abc", healths.__getitem__, 1.0)) == ["b", "c"]
    for name in "bc":
        healths[name].observe(True, 0.0, policy)
    assert list(available("abc", healths.__getitem__, 1.0)) == ["a", "b", "c"]


def test_retries_stay_within_20_percent_of_requests() -> None:
    policy = HealthPolicy(retry_budget=0.2, retry_burst=10)
    budget = RetryBudget(policy)
    granted = 0
    for _ in range(1000):
        budget.on_request(policy)
        granted += budget.try_retry()  # every request wants a retry
    assert granted <= 0.2 * 1000 + 10
    assert budget.exhausted >= 1000 - granted - 1


def test_an_ejection_is_forgiven_one_success_at_a_time_once_it_is_over() -> None:
    health = BackendHealth()
    for now in (0.0, 10.0):  # two ejections: until 10 s, then (still down) until 20 s
        for _ in range(3):
            health.observe(True, now, POLICY)
    assert health.ejections == 2 and health.ejected_until == 20.0
    health.ejected_until = 30.0
    assert health.observe(False, 29.0, POLICY) is None
    assert health.ejections == 2  # still ejected: nothing forgiven yet
    health.observe(False, 30.0, POLICY)  # over at exactly ejected_until
    assert health.ejections == 1
    health.observe(False, 31.0, POLICY)
    assert health.ejections == 0
    health.observe(False, 32.0, POLICY)
    assert health.ejections == 0 and health.failures == 0


def test_a_passing_check_resets_the_failed_count_and_down_is_a_bool() -> None:
    health = BackendHealth()
    policy = HealthPolicy(fall=3, rise=2)
    assert health.down is False
    assert health.observe_check(True, policy) is None  # a first check that passes
    for ok in (False, False, True, False, False):
        assert health.observe_check(ok, policy) is None
    assert health.down is False
    assert health.observe_check(False, policy) is EJECTED and health.down is True
    assert health.observe_check(True, policy) is None
    assert health.observe_check(True, policy) is RESTORED and health.down is False


def test_the_retry_budget_counts_tokens_exactly() -> None:
    policy = HealthPolicy(retry_budget=0.5, retry_burst=1)
    budget = RetryBudget(policy)
    assert (budget.tokens, budget.exhausted) == (1, 0)
    assert budget.try_retry() and budget.tokens == 0
    assert not budget.try_retry() and budget.exhausted == 1
    budget.on_request(policy)
    assert budget.tokens == 0.5 and not budget.try_retry() and budget.exhausted == 2
    budget.on_request(policy)
    assert budget.tokens == 1.0 and budget.try_retry() and budget.tokens == 0.0
    for _ in range(5):
        budget.on_request(policy)
    assert budget.tokens == 1  # never more than the burst


# -- end to end ---------------------------------------------------------------------------------


def test_active_checks_take_a_backend_out_after_fall_and_back_after_rise() -> None:
    policy = HealthPolicy(rise=2, fall=3)
    health = BackendHealth()
    assert [health.observe_check(False, policy) for _ in range(3)] == [None, None, EJECTED]
    assert health.is_ejected(0.0)
    assert health.observe_check(True, policy) is None
    assert health.observe_check(False, policy) is None  # a pass then a fail: still down
    assert [health.observe_check(True, policy) for _ in range(2)] == [None, RESTORED]
    assert not health.is_ejected(0.0)
