"""A non-editable install carries the whole tree (as systemd/install.sh
installs it): build a wheel, install it into a fresh venv, import every
module from it and run both console scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def modules() -> list[str]:
    found = []
    for pkg in ("supervisor", "workers"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append(".".join(parts))
    return found


@pytest.mark.slow
def test_wheel_installs_every_module_and_both_scripts(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(ROOT)], check=True, timeout=300)
    (wheel,) = wheels.glob("phalanx-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    # The dependencies (pyzmq, msgspec, ...) come from the test venv's
    # site-packages, appended by a .pth; the project itself only from the
    # wheel (the editable install's own .pth is not read from there).
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = subprocess.run([sys.executable, "-c",
                           "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "test-deps.pth").write_text(deps + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(wheel)],
                   check=True, timeout=300)
    names = modules()
    probe = (
        "import importlib, sys\n"
        f"names = {names!r}\n"
        "for n in names:\n"
        "    m = importlib.import_module(n)\n"
        "    assert 'site-packages' in (m.__file__ or ''), (n, m.__file__)\n"
        "print(len(names))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(py), "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(names) > 40
    for script in ("phalanxd", "phalanxctl"):
        run = subprocess.run([str(venv / "bin" / script), "--version"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and run.stdout.strip(), (script, run.stdout, run.stderr)
