"""The pure core: decisions with no sockets, processes, os or signals.

tasks.py (the task table: accept -> queue -> slot -> result), slots.py (the
worker-slot state machine, one transition table), policy.py (restart
intensity and backoff), stats.py (rate and latency meters).
tests/test_core_purity.py keeps it pure.
"""
