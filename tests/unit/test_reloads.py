"""Reloads (balancer.ops.reloads): one at a time, each timed, the last KEPT kept; an outcome
serialised one way for `/status` and one for POST /reload (the single process's and the
supervisor's alike)."""

import asyncio

from balancer.ops.reloads import KEPT, ReloadOutcome, Reloads


async def test_only_the_last_kept_outcomes_are_listed() -> None:
    reloads = Reloads()
    for generation in range(1, KEPT + 6):
        async def attempt(generation: int = generation) -> ReloadOutcome:
            return ReloadOutcome(True, generation, f"d{generation}")
        await reloads.run(attempt)
    assert [r.generation for r in reloads] == list(range(6, KEPT + 6))
    assert len(reloads) == KEPT == 20


async def test_one_reload_at_a_time_in_arrival_order() -> None:
    reloads = Reloads()
    running: list[int] = []
    overlaps: list[list[int]] = []

    async def attempt(generation: int) -> ReloadOutcome:
        running.append(generation)
        overlaps.append(list(running))
        await asyncio.sleep(0)  # let the others try to start
        await asyncio.sleep(0)
        running.remove(generation)
        return ReloadOutcome(True, generation, "d")

    await asyncio.gather(*(reloads.run(lambda g=g: attempt(g)) for g in (1, 2, 3)))
    assert overlaps == [[1], [2], [3]]
    assert [r.generation for r in reloads] == [1, 2, 3]


async def test_an_outcome_is_stamped_with_when_it_ended_and_how_long_it_took() -> None:
    async def attempt() -> ReloadOutcome:
        return ReloadOutcome(False, 3, "abc", ("bad",))
    outcome = await Reloads().run(attempt)
    assert outcome.at > 0 and outcome.seconds >= 0
    assert (outcome.ok, outcome.generation, outcome.digest, outcome.errors) == (
        False, 3, "abc", ("bad",))


def test_status_lists_an_outcome_with_its_timing_reload_answers_without() -> None:
    outcome = ReloadOutcome(False, 4, "d1", ("a.yaml:1:1: bad",), at=1700000000.5,
                            seconds=0.0123456)
    assert list(outcome.as_dict().items()) == [  # the key order /status has always had
        ("ok", False), ("generation", 4), ("digest", "d1"), ("at", 1700000000.5),
        ("ms", 12.346), ("errors", ["a.yaml:1:1: bad"])]
    assert list(outcome.answer().items()) == [
        ("ok", False), ("generation", 4), ("digest", "d1"), ("errors", ["a.yaml:1:1: bad"])]
