"""The observe counters and the metric families built from a snapshot (pure)."""

from __future__ import annotations

import msgspec
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from supervisor.daemon.observe import counters as cmod
from supervisor.daemon.observe.counters import BOUNDS, OTHER, Counters, restart_reason
from supervisor.daemon.observe.metrics import families
from supervisor.daemon.observe.snapshot import Hist, Snapshot, Summary, TaskCounts, Worker


class _T:
    def __init__(self, accepted_at: float) -> None:
        self.accepted_at = accepted_at


def test_histograms_bucket_sum_and_count() -> None:
    c = Counters()
    c.dispatched([_T(0.0), _T(0.9), _T(1.0 - 1e-5)], now=1.0)  # waits 1.0, 0.1, 1e-5
    h = c.queue_wait
    assert h.count == 3 and abs(h.sum - 1.10001) < 1e-9
    assert h.buckets[BOUNDS.index(1.0)] == 1  # le=1.0 is inclusive
    assert h.buckets[BOUNDS.index(0.1)] == 1
    assert h.buckets[0] == 1
    c.ran({"a:f": 3, "b:g": 1}, 0.002)
    assert c.duration["a:f"].count == 3 and c.duration["b:g"].count == 1
    assert c.duration["a:f"].buckets[BOUNDS.index(0.0025)] == 3


def test_task_names_beyond_the_bound_fold_into_other(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(cmod, "MAX_TASK_NAMES", 2)
    c = Counters()
    for name in ["a:x", "b:y", "c:z", "d:w", "a:x"]:
        c.accepted(name)
    assert c.submitted == {"a:x": 2, "b:y": 1, OTHER: 2}
    c.ran({"a:x": 1, "b:y": 1, "c:z": 1, "d:w": 1}, 0.01)
    assert {k: h.count for k, h in c.duration.items()} == {"a:x": 1, "b:y": 1, OTHER: 2}


def test_restart_reasons_and_recent_list_are_bounded() -> None:
    assert restart_reason(-9, False) == "signal"
    assert restart_reason(13, False) == "exit"
    assert restart_reason(-9, True) == "timeout"
    assert restart_reason(None, False) == "unknown"
    c = Counters()
    for i in range(cmod.RECENT + 10):
        c.restarted("signal", i % 2, f"worker {i}")
    c.restarted("recycle", 0, "recycled")  # a recycle is not a crash
    assert len(c.recent) == cmod.RECENT and c.recent[-1][4] == f"worker {cmod.RECENT + 9}"
    assert c.restarts == {"signal": cmod.RECENT + 10, "recycle": 1}


def _snapshot() -> Snapshot:
    zero = Hist([0] * (len(BOUNDS) + 1), 0.0, 0)
    two = Hist([0] * len(BOUNDS) + [2], 700.0, 2)  # two tasks over the last bound
    return Snapshot(
        taken_at=1.0, version="9.9", python="3.11", boot="b", pid=1, uptime=5.0, paused=False,
        draining=False, queued=4, in_flight=1, accepted=7, succeeded=1, failed=1, retried=1,
        quarantined=0, latency_p50=None, latency_p99=None,
        tasks={"m:f": TaskCounts(7, 1, 1)}, retries={"WorkerCrashed": 1},
        restarts={"signal": 2}, refusals={"Overloaded": 3}, bounds=list(BOUNDS),
        duration={"m:f": two}, queue_wait=zero,
        workers=[Worker(0, "RUNNING", 10, 1.0, 2, 1, 1, 1, 1000, 1.0, None),
                 Worker(1, "BACKOFF", None, 0.0, 0, 0, 0, 0, None, None, "exit 1")],
        recent=[], config=msgspec.convert({"workers": 2, "start_method": "forkserver",
                                           "intake": "", "publisher": "", "allow": [],
                                           "timeout": 0.0, "max_attempts": 3,
                                           "max_pending": 1, "max_prefetch": 1,
                                           "source": ""}, Summary))


def test_families_render_and_parse_back() -> None:
    snap = _snapshot()

    class One(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            return families(snap)

    reg = CollectorRegistry(auto_describe=False)
    reg.register(One())
    parsed = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for fam in text_string_to_metric_families(generate_latest(reg).decode())
              for s in fam.samples}
    assert parsed[("phalanx_tasks_submitted_total", (("task", "m:f"),))] == 7
    assert parsed[("phalanx_queue_depth", ())] == 4
    assert parsed[("phalanx_workers", (("state", "BACKOFF"),))] == 1
    assert parsed[("phalanx_worker_restarts_total", (("reason", "signal"),))] == 2
    assert parsed[("phalanx_worker_restarts_total", (("reason", "exit"),))] == 0
    assert parsed[("phalanx_intake_refusals_total", (("reason", "Overloaded"),))] == 3
    assert ("phalanx_worker_resident_memory_bytes", (("slot", "1"),)) not in parsed
    inf = ("phalanx_task_duration_seconds_bucket", (("le", "+Inf"), ("task", "m:f")))
    last = ("phalanx_task_duration_seconds_bucket", (("le", "300.0"), ("task", "m:f")))
    assert (parsed[inf], parsed[last]) == (2, 0)
    assert parsed[("phalanx_task_duration_seconds_sum", (("task", "m:f"),))] == 700.0
