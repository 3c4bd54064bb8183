"""The stock supervisorctl, from the ``supervisor`` distribution on PyPI.

Its import name (``supervisor``) is ours too, so it lives in a venv of its
own, cached in the project's .venv directory (``make supervisorctl`` makes
it ahead of time; the first test run makes it otherwise).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parent.parent / ".venv" / "supervisorctl"
SUPERVISORCTL = VENV / "bin" / "supervisorctl"
PYTHON = VENV / "bin" / "python"
INSTALL_TIMEOUT = 300.0


def ensure() -> Path:
    """The supervisorctl script, installing it on first use; raises
    RuntimeError naming what failed."""
    if SUPERVISORCTL.exists():
        return SUPERVISORCTL
    steps = [[sys.executable, "-m", "venv", str(VENV)],
             [str(PYTHON), "-m", "pip", "install", "--quiet", "supervisor>=4.2,<5"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        if done.returncode:
            raise RuntimeError(f"{' '.join(step)} failed:\n{done.stderr}")
    return SUPERVISORCTL


if __name__ == "__main__":
    print(ensure())
