"""supervisord's XML-RPC API, as much as the stock supervisorctl uses.

Each worker slot is a process ``worker-N`` of one group, ``phalanx``.
Every method is a plain function in ``METHODS``, looked up by its exact
name: no attribute traversal from the wire (supervisord's CVE-2017-11610
was a dotted method name walked with getattr). Each one acts only through
control commands (link.py), so the loop applies them as it applies
phalanxctl's, and waits (start/stop with wait=True) are bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from xmlrpc.client import Fault

from supervisor.daemon.observe.link import ControlLink, ControlRefused

API_VERSION = "3.0"
GROUP = "phalanx"
WAIT_POLL = 0.05


class Faults:  # supervisor.xmlrpc.Faults, the codes supervisorctl knows
    UNKNOWN_METHOD = 1
    INCORRECT_PARAMETERS = 2
    BAD_ARGUMENTS = 3
    SHUTDOWN_STATE = 6
    BAD_NAME = 10
    BAD_SIGNAL = 11
    NO_FILE = 20
    FAILED = 30
    ABNORMAL_TERMINATION = 40
    SPAWN_ERROR = 50
    ALREADY_STARTED = 60
    NOT_RUNNING = 70
    SUCCESS = 80


# Slot states share supervisord's names; these are its numeric codes.
STATE_CODES = {"STOPPED": 0, "STARTING": 10, "RUNNING": 20, "BACKOFF": 30, "STOPPING": 40,
               "EXITED": 100, "FATAL": 200}
STOPPED_STATES = {"STOPPED", "EXITED", "FATAL"}


class Api:
    def __init__(self, link: ControlLink, wait_limit: float) -> None:
        self.link = link
        self.wait_limit = wait_limit  # seconds a start/stop with wait=True may take

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        try:
            return self.link.call(cmd, args)
        except ControlRefused as exc:
            raise Fault(Faults.FAILED, f"{exc.type}: {exc.message}") from None

    def status(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("status")
        return result

    def slot(self, name: Any) -> int:
        if not isinstance(name, str):
            raise Fault(Faults.BAD_NAME, str(name))
        group, _, proc = name.rpartition(":")
        if group not in ("", GROUP) or not proc.startswith("worker-") or not proc[7:].isdigit():
            raise Fault(Faults.BAD_NAME, name)
        index = int(proc[7:])
        if not any(s["slot"] == index for s in self.status()):
            raise Fault(Faults.BAD_NAME, name)
        return index

    def state_of(self, index: int) -> str:
        for s in self.status():
            if s["slot"] == index:
                return str(s["state"])
        raise Fault(Faults.BAD_NAME, f"worker-{index}")

    def wait_for(self, index: int, done: Callable[[str], bool], fail: set[str], fault: int) -> None:
        deadline = time.monotonic() + self.wait_limit
        while True:
            state = self.state_of(index)
            if done(state):
                return
            if state in fail:
                raise Fault(fault, f"worker-{index}: {state}")
            if time.monotonic() >= deadline:
                raise Fault(Faults.FAILED, f"worker-{index}: still {state} after "
                            f"{self.wait_limit:g}s")
            time.sleep(WAIT_POLL)


def _info(s: dict[str, Any], now: float) -> dict[str, Any]:
    state = str(s["state"])
    uptime = float(s.get("uptime") or 0.0)
    if state == "RUNNING" and s.get("pid"):
        h, rest = divmod(int(uptime), 3600)
        description = f"pid {s['pid']}, uptime {h}:{rest // 60:02d}:{rest % 60:02d}"
    else:
        description = str(s.get("last_exit") or "")
    return {
        "name": f"worker-{s['slot']}", "group": GROUP, "description": description,
        "start": int(now - uptime) if s.get("pid") else 0, "stop": 0, "now": int(now),
        "state": STATE_CODES.get(state, 1000), "statename": state, "spawnerr": "",
        "exitstatus": 0, "logfile": "", "stdout_logfile": "", "stderr_logfile": "",
        "pid": int(s.get("pid") or 0),
    }


def _result(index: int, status: int, description: str) -> dict[str, Any]:
    return {"name": f"worker-{index}", "group": GROUP, "status": status,
            "description": description}


# ---------------------------------------------------------------- state
def get_api_version(api: Api) -> str:
    return API_VERSION


def get_supervisor_version(api: Api) -> str:
    return str(api.call("version")["version"])


def get_identification(api: Api) -> str:
    return "phalanxd"


def get_state(api: Api) -> dict[str, Any]:
    stats = api.call("stats")
    if stats.get("draining"):
        return {"statecode": -1, "statename": "SHUTDOWN"}
    return {"statecode": 1, "statename": "RUNNING"}


def get_pid(api: Api) -> int:
    return int(api.call("pid")["pid"])


def get_process_info(api: Api, name: str) -> dict[str, Any]:
    index = api.slot(name)
    now = time.time()
    return next(_info(s, now) for s in api.status() if s["slot"] == index)


def get_all_process_info(api: Api) -> list[dict[str, Any]]:
    now = time.time()
    return [_info(s, now) for s in api.status()]


# --------------------------------------------------------------- control
def start_process(api: Api, name: str, wait: bool = True) -> bool:
    index = api.slot(name)
    if api.state_of(index) in ("RUNNING", "STARTING"):
        raise Fault(Faults.ALREADY_STARTED, name)
    api.call("start", {"slots": [index]})
    if wait:
        api.wait_for(index, lambda st: st == "RUNNING", {"BACKOFF", "FATAL"},
                     Faults.SPAWN_ERROR)
    return True


def stop_process(api: Api, name: str, wait: bool = True) -> bool:
    index = api.slot(name)
    if api.state_of(index) in STOPPED_STATES:
        raise Fault(Faults.NOT_RUNNING, name)
    api.call("stop", {"slots": [index]})
    if wait:
        api.wait_for(index, lambda st: st in STOPPED_STATES, set(), Faults.FAILED)
    return True


def _each(api: Api, fn: Callable[[Api, str, bool], bool], wait: bool) -> list[dict[str, Any]]:
    out = []
    for s in api.status():
        try:
            fn(api, f"{GROUP}:worker-{s['slot']}", wait)
            out.append(_result(s["slot"], Faults.SUCCESS, "OK"))
        except Fault as fault:
            out.append(_result(s["slot"], fault.faultCode, fault.faultString))
    return out


def _group(name: Any) -> None:
    if name != GROUP:
        raise Fault(Faults.BAD_NAME, str(name))


def start_all(api: Api, wait: bool = True) -> list[dict[str, Any]]:
    return _each(api, start_process, wait)


def stop_all(api: Api, wait: bool = True) -> list[dict[str, Any]]:
    return _each(api, stop_process, wait)


def start_group(api: Api, name: str, wait: bool = True) -> list[dict[str, Any]]:
    _group(name)
    return start_all(api, wait)


def stop_group(api: Api, name: str, wait: bool = True) -> list[dict[str, Any]]:
    _group(name)
    return stop_all(api, wait)


def signal_process(api: Api, name: str, signal: Any) -> bool:
    index = api.slot(name)
    if api.state_of(index) in STOPPED_STATES:
        raise Fault(Faults.NOT_RUNNING, name)
    try:
        api.link.call("signal", {"slots": [index], "signal": signal})
    except ControlRefused as exc:
        raise Fault(Faults.BAD_SIGNAL if exc.type == "BadRequest" else Faults.FAILED,
                    exc.message) from None
    return True


def signal_all(api: Api, signal: Any) -> list[dict[str, Any]]:
    return _each(api, lambda a, name, _wait: signal_process(a, name, signal), False)


def signal_group(api: Api, name: str, signal: Any) -> list[dict[str, Any]]:
    _group(name)
    return signal_all(api, signal)


def shutdown(api: Api) -> bool:
    api.call("shutdown")
    return True


def restart(api: Api) -> bool:
    """supervisorctl's ``reload``: here a rolling restart of every worker."""
    api.call("reload")
    return True


# ------------------------------------------------------------------ logs
def _read(api: Api, cmd: str, args: dict[str, Any], offset: Any, length: Any) -> str:
    if not isinstance(offset, int) or not isinstance(length, int):
        raise Fault(Faults.BAD_ARGUMENTS, "offset and length must be integers")
    if offset < 0:
        args["bytes"] = -offset
    else:
        args["offset"] = offset
    data = str(api.call(cmd, args)["data"])
    return data[:length] if offset >= 0 and length > 0 else data


def read_log(api: Api, offset: int, length: int) -> str:
    return _read(api, "maintail", {}, offset, length)


def read_stdout(api: Api, name: str, offset: int, length: int) -> str:
    return _read(api, "tail", {"slot": api.slot(name), "stream": "stdout"}, offset, length)


def read_stderr(api: Api, name: str, offset: int, length: int) -> str:
    return _read(api, "tail", {"slot": api.slot(name), "stream": "stderr"}, offset, length)


def clear_logs(api: Api, name: str) -> bool:
    api.call("clear", {"slots": [api.slot(name)]})
    return True


def clear_all_logs(api: Api) -> list[dict[str, Any]]:
    api.call("clear", {"slots": "all"})
    return [_result(s["slot"], Faults.SUCCESS, "OK") for s in api.status()]


Method = Callable[..., Any]
METHODS: dict[str, Method] = {
    "supervisor.getAPIVersion": get_api_version,
    "supervisor.getVersion": get_api_version,
    "supervisor.getSupervisorVersion": get_supervisor_version,
    "supervisor.getIdentification": get_identification,
    "supervisor.getState": get_state,
    "supervisor.getPID": get_pid,
    "supervisor.getProcessInfo": get_process_info,
    "supervisor.getAllProcessInfo": get_all_process_info,
    "supervisor.startProcess": start_process,
    "supervisor.stopProcess": stop_process,
    "supervisor.startAllProcesses": start_all,
    "supervisor.stopAllProcesses": stop_all,
    "supervisor.startProcessGroup": start_group,
    "supervisor.stopProcessGroup": stop_group,
    "supervisor.signalProcess": signal_process,
    "supervisor.signalProcessGroup": signal_group,
    "supervisor.signalAllProcesses": signal_all,
    "supervisor.shutdown": shutdown,
    "supervisor.restart": restart,
    "supervisor.readLog": read_log,
    "supervisor.readMainLog": read_log,
    "supervisor.readProcessStdoutLog": read_stdout,
    "supervisor.readProcessLog": read_stdout,
    "supervisor.readProcessStderrLog": read_stderr,
    "supervisor.clearProcessLogs": clear_logs,
    "supervisor.clearAllProcessLogs": clear_all_logs,
}
