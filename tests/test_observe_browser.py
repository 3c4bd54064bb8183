"""The status page in a real headless Chromium, driven by selenium.

It loads under its strict CSP with no console error, shows every worker,
shows work being done, and shows a SIGKILLed worker's restart within 2 s
(snapshots are taken once a second and pushed by server-sent events).
Needs Debian's chromium and chromium-driver (`make browser` installs them;
.ci/run does); elsewhere these tests skip and say why.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import Daemon, StartDaemon, wait_until
from tests.observe_util import http_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]
SHOTS = os.environ.get("PHALANX_SCREENSHOT")  # where to keep the page's picture, if set

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="chromium and chromedriver not installed (run `make browser` as root)")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(10)
    driver_pid = service.process.pid if service.process else None
    tree = psutil.Process(driver_pid).children(recursive=True) if driver_pid else []
    try:
        yield driver
    finally:
        driver.quit()
        # quit() ends chromium; anything it left is killed by pid, not name.
        for proc in tree:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def rows(driver: Any) -> dict[int, dict[str, str]]:
    script = """
    return Array.from(document.querySelectorAll('#workers tbody tr')).map(tr => ({
      slot: tr.dataset.slot, state: tr.querySelector('td.state').textContent,
      pid: tr.querySelector('td.pid').textContent,
      restarts: tr.querySelector('td.restarts').textContent}));"""
    return {int(r["slot"]): r for r in driver.execute_script(script)}


def text(driver: Any, element_id: str) -> str:
    return str(driver.execute_script(f"return document.getElementById('{element_id}').textContent"))


def test_page_shows_workers_work_and_a_restart(start_daemon: StartDaemon, browser: Any,
                                               tmp_path: Path) -> None:
    d: Daemon = start_daemon(observe={"http": "127.0.0.1:0"})
    port = http_port(d)
    browser.get(f"http://127.0.0.1:{port}/")
    slots = d.status()
    expected = {s["slot"]: str(s["pid"]) for s in slots}
    wait_until(lambda: {k: (r["state"], r["pid"]) for k, r in rows(browser).items()}
               == {k: ("RUNNING", pid) for k, pid in expected.items()}, 10, interval=0.1,
               message=lambda: repr(rows(browser)))
    assert text(browser, "conn") == "live"

    client = d.client()
    assert client.map("workers.builtin:echo", range(50)) == list(range(50))
    wait_until(lambda: text(browser, "succeeded") == "50", 5, interval=0.1,
               message=lambda: text(browser, "succeeded"))
    # Both plots were drawn by the vendored uPlot (one canvas each).
    assert browser.execute_script("return document.querySelectorAll('.plot canvas').length") == 2

    victim = slots[0]
    os.kill(victim["pid"], signal.SIGKILL)
    # The promise to an operator watching the page: within 2 s.
    wait_until(lambda: rows(browser)[victim["slot"]]["restarts"] == "1", 2.0, interval=0.05,
               message=lambda: repr(rows(browser)))
    wait_until(lambda: "crash slot 0" in text(browser, "recent"), 5, interval=0.1)
    d.wait_all_running(not_pids={victim["pid"]})
    if SHOTS:
        browser.save_screenshot(SHOTS)

    logs = browser.get_log("browser")
    problems = [e for e in logs if e["level"] == "SEVERE" or "Content Security Policy"
                in e["message"] or "Refused" in e["message"]]
    assert not problems, problems
