"""phalanxctl's interactive shell: ``phalanx> `` with history and completion.

Like supervisorctl it shows the status on entry, runs each line as a
one-shot command would (same parser, same output), completes command
names, slot numbers, ``all``, streams and signal names, and keeps readline
history in ~/.phalanxctl_history when that file can be written. Lines go
through ``COMMANDS`` (ctl_commands), never through cmd.Cmd's ``do_*``
lookup, so the shell and one-shot mode cannot drift apart.
"""

from __future__ import annotations

import cmd
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from supervisor.ctl.commands import COMMANDS
from supervisor.ctl.core import EXIT_OK, Ctl, CtlFailure

RunCommand = Callable[[Ctl, str, list[str], str], int]

readline: ModuleType | None
try:
    import readline
except ImportError:  # pragma: no cover - not on every platform
    readline = None

HISTORY = Path("~/.phalanxctl_history")
HISTORY_LENGTH = 1000
LEAVE = ("quit", "exit")
SIGNALS = ("HUP", "INT", "QUIT", "KILL", "USR1", "USR2", "TERM", "STOP", "CONT")
SLOT_CACHE_SECONDS = 2.0


class Shell(cmd.Cmd):
    def __init__(self, ctl: Ctl, run_command: RunCommand) -> None:
        super().__init__(completekey="tab")
        self.ctl = ctl
        self._run_command = run_command  # ctl.run_command, passed in: no import cycle
        self.prompt = "phalanx> " if sys.stdin.isatty() else ""
        self.last_code = EXIT_OK
        self._slots: tuple[float, list[str]] = (0.0, [])

    # -------------------------------------------------------------- loop
    def run(self) -> int:
        history = self._load_history()
        self._run_command(self.ctl, "status", [], "status")
        try:
            while True:
                try:
                    self.cmdloop()
                    return EXIT_OK
                except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line
                    print("^C", file=self.stdout)
        finally:
            self._save_history(history)

    def onecmd(self, line: str) -> bool:
        if line == "EOF":
            print(file=self.stdout)
            return True
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.ctl.warn(str(exc))
            return False
        if not words:
            return False
        name, args = words[0], words[1:]
        if name in LEAVE:
            return True
        if name not in COMMANDS:
            print(f"*** Unknown syntax: {line.strip()} (try 'help')", file=self.stdout)
            return False
        try:
            self.last_code = self._run_command(self.ctl, name, args, name)
        except KeyboardInterrupt:  # a command interrupted: back to the prompt
            print(file=self.stdout)
        return False

    def emptyline(self) -> bool:
        return False  # cmd.Cmd would repeat the last command: surprising with `stop`

    # --------------------------------------------------------- completion
    def completenames(self, text: str, *ignored: object) -> list[str]:
        return [n for n in (*COMMANDS, *LEAVE) if n.startswith(text)]

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line[:begidx].split()
        if not words:
            return self.completenames(text)
        command = COMMANDS.get(words[0])
        if command is None:
            return []
        if command.name == "help":
            return self.completenames(text) if len(words) == 1 else []
        position = len([w for w in words[1:] if not w.startswith("-")])
        options: list[str]
        if command.completes == "slots":
            options = [*self.slot_numbers(), "all"]
        elif command.completes == "slot":
            options = self.slot_numbers() if position == 0 else (
                ["stdout", "stderr"] if position == 1 else [])
        elif command.completes == "signal":
            options = list(SIGNALS) if position == 0 else [*self.slot_numbers(), "all"]
        else:
            options = []
        return [o for o in options if o.startswith(text)]

    def slot_numbers(self) -> list[str]:
        """The daemon's slots, asked at most every couple of seconds."""
        when, cached = self._slots
        if time.monotonic() - when < SLOT_CACHE_SECONDS:
            return cached
        try:
            slots = [str(s["slot"]) for s in self.ctl.call("status", {}, timeout=0.5)]
        except (CtlFailure, KeyError, TypeError):
            slots = []
        self._slots = (time.monotonic(), slots)
        return slots

    # ------------------------------------------------------------ history
    def _load_history(self) -> Path | None:
        if readline is None or not sys.stdin.isatty():
            return None
        path = HISTORY.expanduser()
        try:
            readline.read_history_file(path)
        except OSError:
            pass
        readline.set_history_length(HISTORY_LENGTH)
        return path

    def _save_history(self, path: Path | None) -> None:
        if readline is None or path is None:
            return
        try:
            readline.write_history_file(path)
        except OSError:
            pass  # not writable: history is a convenience, never an error
