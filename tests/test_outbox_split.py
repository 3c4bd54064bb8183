"""No reply is larger than the message limit: the results due to one client
in one turn are split (supervisor/daemon/outbox.py), a lone result larger
than the limit travelling alone."""

from __future__ import annotations

import msgspec

from supervisor.daemon.outbox import split
from supervisor.protocol import Result, Results, encoder


def result(i: int, size: int) -> Result:
    return Result(f"id-{i}", "m:f", True, 1, value=msgspec.Raw(encoder.encode(b"x" * size)))


def test_results_over_the_limit_are_split_into_messages_under_it() -> None:
    limit = 64 * 1024
    results = [result(i, 10_000) for i in range(40)]  # ~400 KB together
    parts = split(results, limit)
    assert [r for part in parts for r in part] == results  # nothing lost, order kept
    assert len(parts) > 1
    assert all(len(encoder.encode(Results(part))) <= limit for part in parts)


def test_a_result_larger_than_the_limit_travels_alone() -> None:
    big, small = result(0, 100_000), result(1, 10)
    assert split([small, big, small], 64 * 1024) == [[small], [big], [small]]
