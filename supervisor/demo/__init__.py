"""``make demo``: a real phalanxd losing nothing while workers die (see flow.py)."""
