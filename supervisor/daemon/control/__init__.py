"""The control socket: dispatch.py reads requests and finds each command's
handler in commands.COMMANDS; the handlers live by subject (slots.py,
output.py, info.py, admin.py), their argument parsing in args.py."""
