"""phalanxctl, the command-line client of the control socket (see main.py)."""
