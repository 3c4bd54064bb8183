"""Pure unit tests for restart decisions (supervisor/core/policy.py).

``decide`` is a function of the slot's restart history, its consecutive
backoff count and the config; the daemon bumps ``slot.backoffs`` after a
backoff and resets it once ``stable`` says so. The helpers here play that
part of the daemon so the sequences read like real crash loops.
"""

from __future__ import annotations

import random
from collections import deque

import pytest

from supervisor.config import RestartSection
from supervisor.core.policy import Decision, decide, recent, stable
from supervisor.core.slots import Slot


def policy(**kw: float) -> RestartSection:
    base: dict[str, float] = dict(
        max_restarts=3, period=10.0, backoff_initial=0.5, backoff_max=4.0,
        backoff_jitter=0.0, max_backoffs=5, fatal_cooldown=60.0,
    )
    base.update(kw)
    return RestartSection(**base)  # type: ignore[arg-type]


def record_restart(slot: Slot, now: float, period: float) -> None:
    slot.restarts = deque((*recent(slot.restarts, now, period), now))


def die(slot: Slot, now: float, pol: RestartSection, rng: random.Random | None = None) -> Decision:
    """One worker death, with the Pool's bookkeeping: it applies the
    decision's restart history and counts consecutive backoffs."""
    decision = decide(slot, now, pol, rng or random.Random(0))
    slot.restarts = deque(decision.history)
    if decision.action == "backoff":
        slot.backoffs += 1
    return decision


# --------------------------------------------------------- restart intensity


def test_restarts_within_period_are_immediate_up_to_max_restarts() -> None:
    pol = policy(max_restarts=3)
    slot = Slot(0)
    decisions = [die(slot, 1.0 + i * 0.1, pol) for i in range(3)]
    assert decisions == [Decision("restart")] * 3


def test_one_restart_past_max_restarts_within_period_backs_off() -> None:
    pol = policy(max_restarts=3)
    slot = Slot(0)
    for i in range(3):
        die(slot, 1.0 + i, pol)
    assert die(slot, 4.0, pol).action == "backoff"


def test_max_restarts_zero_backs_off_on_first_death() -> None:
    assert die(Slot(0), 1.0, policy(max_restarts=0)).action == "backoff"


def test_old_restarts_fall_out_of_the_period_window() -> None:
    pol = policy(max_restarts=2, period=10.0)
    slot = Slot(0)
    assert die(slot, 0.0, pol).action == "restart"
    assert die(slot, 1.0, pol).action == "restart"
    # 11 s after the first death: it no longer counts, so this is the
    # second restart in the window, not the third.
    assert die(slot, 11.0, pol).action == "restart"
    assert list(slot.restarts) == [1.0, 11.0]


def test_a_restart_exactly_one_period_old_still_counts() -> None:
    slot = Slot(0)
    record_restart(slot, 0.0, 10.0)
    record_restart(slot, 10.0, 10.0)
    assert list(slot.restarts) == [0.0, 10.0]
    record_restart(slot, 10.5, 10.0)
    assert list(slot.restarts) == [10.0, 10.5]


def test_deaths_spread_wider_than_the_period_always_restart_at_once() -> None:
    pol = policy(max_restarts=1, period=1.0)
    slot = Slot(0)
    assert all(die(slot, t * 2.0, pol).action == "restart" for t in range(50))


# ------------------------------------------------------------------ backoff


def crash_loop(pol: RestartSection, deaths: int, rng: random.Random | None = None) -> list[Decision]:
    """``deaths`` deaths 1 ms apart, after the intensity is already exhausted."""
    slot = Slot(0)
    now = 0.0
    for _ in range(pol.max_restarts):
        die(slot, now, pol)
        now += 0.001
    out = []
    for _ in range(deaths):
        out.append(die(slot, now, pol, rng))
        now += 0.001
    return out


def test_backoff_delay_doubles_each_consecutive_backoff() -> None:
    pol = policy(backoff_initial=0.5, backoff_max=100.0, max_backoffs=5)
    delays = [d.delay for d in crash_loop(pol, 5)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_backoff_delay_is_capped_by_backoff_max() -> None:
    pol = policy(backoff_initial=0.5, backoff_max=3.0, max_backoffs=6)
    delays = [d.delay for d in crash_loop(pol, 6)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_fatal_after_max_backoffs_consecutive_backoffs_with_cooldown() -> None:
    pol = policy(max_backoffs=3, fatal_cooldown=42.0)
    actions = crash_loop(pol, 5)
    assert [d.action for d in actions] == ["backoff"] * 3 + ["fatal"] * 2
    assert actions[3] == Decision("fatal", 42.0)


def test_huge_max_backoffs_never_overflows_the_delay() -> None:
    """A config that effectively disables FATAL must not crash the daemon
    once 2**backoffs no longer fits in a float."""
    pol = policy(backoff_initial=0.5, backoff_max=4.0, max_backoffs=10**9)
    slot = Slot(0)
    slot.backoffs = 5000
    for i in range(pol.max_restarts):
        record_restart(slot, i * 0.001, pol.period)
    assert decide(slot, 1.0, pol, random.Random(0)) == Decision("backoff", 4.0)


@pytest.mark.parametrize("jitter", [0.1, 0.25, 1.0])
def test_jitter_stays_within_plus_minus_backoff_jitter(jitter: float) -> None:
    pol = policy(backoff_initial=1.0, backoff_max=8.0, backoff_jitter=jitter, max_backoffs=4)
    rng = random.Random(1234)
    for _ in range(200):
        for base, decision in zip([1.0, 2.0, 4.0, 8.0], crash_loop(pol, 4, rng), strict=True):
            assert decision.action == "backoff"
            assert base * (1 - jitter) <= decision.delay <= base * (1 + jitter)


def test_jitter_actually_spreads_delays() -> None:
    pol = policy(backoff_initial=1.0, backoff_jitter=0.25, max_backoffs=1)
    rng = random.Random(7)
    delays = {crash_loop(pol, 1, rng)[0].delay for _ in range(50)}
    assert len(delays) > 40
    assert min(delays) < 0.9 and max(delays) > 1.1


def test_jitter_is_deterministic_for_a_given_seed() -> None:
    pol = policy(backoff_jitter=0.5)
    first = crash_loop(pol, 6, random.Random(99))
    again = crash_loop(pol, 6, random.Random(99))
    other = crash_loop(pol, 6, random.Random(100))
    assert first == again
    assert first != other


def test_delay_is_never_negative() -> None:
    pol = policy(backoff_jitter=1.0)
    rng = random.Random(3)
    for _ in range(100):
        assert all(d.delay >= 0 for d in crash_loop(pol, 6, rng))


# ------------------------------------------------------------------ stable


def test_stable_only_after_running_a_whole_period() -> None:
    pol = policy(period=10.0)
    slot = Slot(0)
    slot.running_since = 100.0
    assert not stable(slot, 109.999, pol)
    assert stable(slot, 110.0, pol)
    assert stable(slot, 500.0, pol)


def test_a_worker_that_never_came_up_is_not_stable() -> None:
    slot = Slot(0)
    assert slot.running_since == 0.0
    assert not stable(slot, 1e9, policy())


def test_stable_reset_of_backoffs_starts_the_delay_sequence_over() -> None:
    """The daemon resets ``backoffs`` once ``stable``; the next backoff is short again."""
    pol = policy(max_restarts=0, backoff_initial=0.5, backoff_max=100.0, period=10.0)
    slot = Slot(0)
    for t in range(3):
        die(slot, float(t), pol)
    assert slot.backoffs == 3
    slot.running_since = 3.0
    now = 20.0
    if stable(slot, now, pol):
        slot.backoffs = 0
    assert die(slot, now, pol) == Decision("backoff", 0.5)
