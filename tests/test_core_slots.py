"""Pure unit tests for worker slots (supervisor/core/slots.py): the state machine
and the adaptive prefetch window."""

from __future__ import annotations

import itertools

import pytest

from supervisor.core.slots import (
    TARGET_HOLD,
    TRANSITIONS,
    IllegalTransition,
    Slot,
    SlotState,
)

S = SlotState

# The legal transitions, written out independently of the module's table so
# an accidental edit to the table is caught here.
LEGAL = {
    (S.STOPPED, S.STARTING),
    (S.STARTING, S.RUNNING),
    (S.STARTING, S.EXITED),
    (S.STARTING, S.STOPPING),
    (S.RUNNING, S.EXITED),
    (S.RUNNING, S.STOPPING),
    (S.STOPPING, S.STOPPED),
    (S.STOPPING, S.EXITED),
    (S.EXITED, S.STARTING),
    (S.EXITED, S.BACKOFF),
    (S.EXITED, S.FATAL),
    (S.EXITED, S.STOPPED),
    (S.BACKOFF, S.STARTING),
    (S.BACKOFF, S.STOPPED),
    (S.FATAL, S.STARTING),
    (S.FATAL, S.STOPPED),
}
ALL_PAIRS = list(itertools.product(SlotState, SlotState))


def slot_in(state: SlotState, **kw: object) -> Slot:
    return Slot(0, state=state, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------ state machine


def test_transition_table_covers_every_state_and_matches_the_documented_graph() -> None:
    assert set(TRANSITIONS) == set(SlotState)
    table_pairs = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table_pairs == LEGAL


@pytest.mark.parametrize(("old", "new"), sorted(LEGAL, key=str), ids=lambda s: s.name)
def test_every_legal_transition_is_allowed(old: SlotState, new: SlotState) -> None:
    slot = slot_in(old)
    assert slot.move(new) is old
    assert slot.state is new


def test_every_illegal_transition_raises_and_leaves_state_unchanged() -> None:
    illegal = [(a, b) for a, b in ALL_PAIRS if (a, b) not in LEGAL]
    assert len(illegal) == len(ALL_PAIRS) - len(LEGAL)
    for old, new in illegal:
        slot = slot_in(old)
        with pytest.raises(IllegalTransition, match=f"{old.name} -> {new.name}"):
            slot.move(new)
        assert slot.state is old, (old, new)


def test_no_state_may_transition_to_itself() -> None:
    for state in SlotState:
        with pytest.raises(IllegalTransition):
            slot_in(state).move(state)


def test_new_slot_starts_stopped_and_can_only_start() -> None:
    slot = Slot(7)
    assert slot.state is S.STOPPED
    assert TRANSITIONS[S.STOPPED] == {S.STARTING}


def test_illegal_transition_message_names_the_slot() -> None:
    with pytest.raises(IllegalTransition, match="slot 7"):
        Slot(7).move(S.RUNNING)


def test_a_full_crash_and_backoff_cycle_is_legal() -> None:
    slot = Slot(0)
    for state in (S.STARTING, S.RUNNING, S.EXITED, S.BACKOFF, S.STARTING, S.RUNNING,
                  S.EXITED, S.FATAL, S.STARTING, S.RUNNING, S.STOPPING, S.STOPPED):
        slot.move(state)
    assert slot.state is S.STOPPED


# ---------------------------------------------------------- prefetch window


def test_window_starts_at_one() -> None:
    assert Slot(0).window == 1
    assert slot_in(S.RUNNING).free == 1


def test_fast_results_grow_window_up_to_max_window() -> None:
    slot = slot_in(S.RUNNING, max_window=64)
    now = 100.0
    windows = [slot.window]
    for _ in range(40):
        slot.head_since = now
        now += 1e-6  # each result a microsecond after the last
        slot.observe(now, 1)
        windows.append(slot.window)
    assert windows == sorted(windows), "fast results never shrink the window"
    assert windows[-1] == 64
    assert windows[3] > 1  # it opens within a few fast results


def test_window_growth_is_gradual_not_a_jump() -> None:
    """Each fast sample moves the estimate only by EWMA: the window grows, not leaps."""
    slot = slot_in(S.RUNNING, max_window=256)
    slot.head_since = 0.0
    for _ in range(3):
        slot.observe(0.0, 1)
    assert 1 < slot.window < 256


def test_one_slow_task_drops_window_to_one() -> None:
    slot = slot_in(S.RUNNING, max_window=256)
    slot.service_estimate = 1e-9
    assert slot.window == 256
    slot.head_since = 10.0
    slot.observe(11.0, 1)  # one task that took a whole second
    assert slot.window == 1


def test_many_results_in_one_batch_count_as_a_fast_sample() -> None:
    """Elapsed time is shared over the results in the batch."""
    one = slot_in(S.RUNNING)
    many = slot_in(S.RUNNING)
    one.head_since = many.head_since = 0.0
    one.observe(0.01, 1)
    many.observe(0.01, 1000)
    assert many.service_estimate < one.service_estimate
    assert many.window >= one.window


def test_clock_before_head_since_counts_as_zero_elapsed() -> None:
    slot = slot_in(S.RUNNING)
    slot.head_since = 5.0
    before = slot.service_estimate
    slot.observe(4.0, 1)
    assert 0 <= slot.service_estimate < before


def test_observe_of_an_empty_batch_changes_nothing() -> None:
    """An empty result batch carries no timing information (and must not divide by 0)."""
    slot = slot_in(S.RUNNING)
    before = slot.service_estimate
    slot.observe(1.0, 0)
    assert slot.service_estimate == before


def test_window_is_never_below_one_nor_above_max_window() -> None:
    for estimate in (1e-12, TARGET_HOLD / 3, TARGET_HOLD, 1.0, 1e9, 0.0):
        slot = slot_in(S.RUNNING, max_window=8)
        slot.service_estimate = estimate
        assert 1 <= slot.window <= 8, estimate


# --------------------------------------------------------------------- free


@pytest.mark.parametrize("state", [s for s in SlotState if s is not S.RUNNING],
                         ids=lambda s: s.name)
def test_free_is_zero_unless_running(state: SlotState) -> None:
    slot = slot_in(state)
    slot.service_estimate = 1e-9
    assert slot.window > 1
    assert slot.free == 0


def test_free_is_window_minus_tasks_held_and_never_negative() -> None:
    slot = slot_in(S.RUNNING, max_window=4)
    slot.service_estimate = 1e-9
    assert slot.free == 4
    slot.inflight.extend([object()] * 3)  # type: ignore[list-item]
    assert slot.free == 1
    slot.service_estimate = 1.0  # window fell to 1 while it held 3
    assert slot.free == 0


@pytest.mark.parametrize("flag", ["retire", "recycle"])
def test_free_is_zero_for_a_running_slot_marked_to_retire_or_recycle(flag: str) -> None:
    """A slot about to be stopped takes no new work, so it can drain."""
    slot = slot_in(S.RUNNING)
    slot.service_estimate = 1e-9
    setattr(slot, flag, True)
    assert slot.free == 0
