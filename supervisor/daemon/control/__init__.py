"""The control socket: dispatch.py reads requests, commands.py answers them."""
