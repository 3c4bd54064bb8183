"""Resident memory: phalanxd alone and its whole tree, against supervisord.

RSS counts shared pages (the interpreter, libraries) in every process that
maps them, so a tree's RSS sum over-counts; PSS shares them out and USS is
what a process holds alone. We report all three where the kernel gives them.

supervisord is measured for real when it can be installed into a throwaway
virtualenv with pip (idle, 2 programs, the control socket enabled, as a
supervisorctl user would run it); otherwise we fall back to the issue's
reference figure of about 25 MiB and say so.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.harness import WORKERS, PhalanxUnderTest, say

MIB = 1024 * 1024
SUPERVISORD_REFERENCE_MIB = 25.0

SUPERVISORD_CONF = """\
[supervisord]
nodaemon = true
logfile = %(here)s/supervisord.log
pidfile = %(here)s/supervisord.pid
childlogdir = %(here)s

[unix_http_server]
file = %(here)s/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:worker]
command = {python} -c "import time; time.sleep(3600)"
numprocs = {workers}
process_name = %(program_name)s_%(process_num)d
"""


def _mem(p: psutil.Process) -> dict[str, float]:
    try:
        full = p.memory_full_info()
        return {"rss": full.rss / MIB, "pss": getattr(full, "pss", 0.0) / MIB, "uss": full.uss / MIB}
    except psutil.AccessDenied:
        return {"rss": p.memory_info().rss / MIB}


def tree_memory(root: psutil.Process) -> dict[str, Any]:
    """Memory of ``root`` alone and summed over it and its descendants (MiB)."""
    procs = [root, *root.children(recursive=True)]
    each = []
    total: dict[str, float] = {}
    for p in procs:
        try:
            m = _mem(p)
            name = " ".join(p.cmdline()[:3])[:80]
        except psutil.Error:
            continue
        each.append({"pid": p.pid, "cmd": name, **{k: round(v, 2) for k, v in m.items()}})
        for k, v in m.items():
            total[k] = total.get(k, 0.0) + v
    return {
        "process": {k: round(v, 2) for k, v in _mem(root).items()},
        "tree": {k: round(v, 2) for k, v in total.items()},
        "tree_processes": len(each),
        "each": each,
    }


def phalanx(d: PhalanxUnderTest) -> dict[str, Any]:
    return tree_memory(d.process())


def supervisord() -> dict[str, Any]:
    """Install supervisor into a temporary venv and measure supervisord idle."""
    tmp = Path(tempfile.mkdtemp(prefix="phalanx-bench-supervisord-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        venv = tmp / "venv"
        say("supervisord: creating a throwaway virtualenv and pip-installing supervisor")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
        py = venv / "bin" / "python"
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "supervisor"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=300)
        version = subprocess.run([str(venv / "bin" / "supervisord"), "--version"], check=True,
                                 capture_output=True, text=True, timeout=30).stdout.strip()
        conf = tmp / "supervisord.conf"
        conf.write_text(SUPERVISORD_CONF.format(python=sys.executable, workers=WORKERS))
        proc = subprocess.Popen([str(venv / "bin" / "supervisord"), "-c", str(conf)], cwd=tmp,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        root = psutil.Process(proc.pid)
        deadline = time.perf_counter() + 20.0
        while len(root.children()) < WORKERS:
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError("supervisord did not start its programs")
            time.sleep(0.05)
        time.sleep(2.0)  # idle, as the reference figure is
        m = tree_memory(root)
        m.update({"source": "measured", "version": version,
                  "note": f"supervisord {version} idle with {WORKERS} programs (python sleeping), "
                          "unix_http_server enabled; installed into a throwaway venv"})
        return m
    except Exception as exc:  # noqa: BLE001 - any failure here means: fall back to the reference
        say(f"supervisord: not measured ({type(exc).__name__}: {exc}); using the reference figure")
        return reference(f"not measured here ({type(exc).__name__}: {exc})")
    finally:
        if proc is not None:
            try:
                leftovers = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                leftovers = []
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    proc.wait(timeout=5.0)
                    break
                except subprocess.TimeoutExpired:
                    continue
            for child in leftovers:
                try:
                    if child.is_running():
                        child.kill()
                except psutil.Error:
                    pass
        shutil.rmtree(tmp, ignore_errors=True)


def reference(why: str) -> dict[str, Any]:
    return {
        "source": "reference",
        "process": {"rss": SUPERVISORD_REFERENCE_MIB},
        "note": f"supervisord is not installed here; {SUPERVISORD_REFERENCE_MIB:g} MiB is the "
                f"issue's reference figure ({why})",
    }
