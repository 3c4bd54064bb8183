"""The README's opening snippet runs as shown (the seed's code on
supervisor.Pool, a worker SIGKILLed mid-map) and prints what it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_readme_opens_with_the_seed_code_and_it_runs(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    first = re.search(r"```python\n(.*?)```", readme, re.S)
    assert first is not None
    code = first.group(1)
    assert readme.index("```python") < readme.index("## ")  # it opens the README
    assert "from supervisor import Pool" in code
    assert "pool.apply_async(function_name, args=(arg1, arg2))" in code  # the seed's lines
    assert "pool.map(function_name, [arg1, arg2, arg3])" in code
    script = tmp_path / "seed.py"
    script.write_text(code)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["6 [2, 3, 4]", "True"], run.stdout + run.stderr
    assert "worker_died" in run.stderr or "SIGKILL" in run.stderr  # the kill really landed
