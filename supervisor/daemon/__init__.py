"""phalanxd, the daemon (see daemon.py for the data flow)."""
