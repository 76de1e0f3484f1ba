"""A real browser: Voila serves ``03_live_dashboard.ipynb`` on 127.0.0.1 and headless Chromium clicks it.

Needs Debian's Chromium at ``/usr/bin/chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it)
and the ``browser`` extra (voila, playwright). Playwright drives the system Chromium through
``executable_path``; ``playwright install`` is never needed. The screenshot is written to
``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "03_live_dashboard.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, server: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"voila exited with status {server.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):   # listening is enough: a GET of the page would run the notebook
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.25)
    raise AssertionError(f"voila did not listen on 127.0.0.1:{port} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def voila(tmp_path: Path) -> Iterator[str]:
    """Voila serving the notebook on 127.0.0.1 (and only there); stopped after the test."""
    pytest.importorskip("voila", reason="pip install -e '.[browser]'")
    port = _free_port()
    log = tmp_path / "voila.log"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "run"),
           "JUPYTER_PLATFORM_DIRS": "1"}
    command = [sys.executable, "-m", "voila", str(ROOT / "notebooks" / NOTEBOOK), "--no-browser",
               f"--port={port}", "--Voila.ip=127.0.0.1", "--Voila.port_retries=0",
               "--VoilaConfiguration.show_tracebacks=True"]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT / "notebooks")
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_listening(port, server, log, timeout=60)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


def _rows(page) -> int:
    return int(re.sub(r"\D", "", page.inner_text(".sl-status .sl-rows")) or 0)


def _wait_rows(page, at_least: int, timeout_ms: int = 30_000) -> int:
    page.wait_for_function(
        "n => { const e = document.querySelector('.sl-status .sl-rows');"
        " return e && parseInt(e.textContent.replace(/\\D/g, '')) >= n; }",
        arg=at_least, timeout=timeout_ms)
    return _rows(page)


def test_step_play_and_reset_in_a_real_browser(voila: str) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[browser]'")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # Voila runs the whole notebook (a bounded run of 80 batches) before it sends the page.
            page.goto(voila, timeout=120_000)
            page.wait_for_selector(".sl-dashboard .sl-play", state="visible", timeout=60_000)
            page.wait_for_selector(".sl-plot", state="visible", timeout=30_000)
            before = _wait_rows(page, 1)
            assert "paused" in page.inner_text(".sl-status")

            page.click(".sl-step")
            after_step = _wait_rows(page, before + 1)
            per_batch = after_step - before
            assert per_batch == 12, f"one Step feeds one batch of 12 sensors, got {per_batch} rows"

            plot_before = page.get_attribute(".sl-plot", "src") or page.inner_html(".sl-plot")
            page.click(".sl-play")
            page.wait_for_function("() => document.querySelector('.sl-status').textContent.includes('playing')",
                                   timeout=15_000)
            playing = _wait_rows(page, after_step + 10 * per_batch)
            page.click(".sl-reset")
            page.wait_for_function("() => document.querySelector('.sl-status').textContent.includes('reset')",
                                   timeout=15_000)
            _wait_rows(page, playing + 10 * per_batch)     # the stream recovers after its reset
            page.click(".sl-play")                          # pause
            page.wait_for_function("() => document.querySelector('.sl-status').textContent.includes('paused')",
                                   timeout=15_000)
            page.wait_for_timeout(600)                      # the last redraw lands
            assert (page.get_attribute(".sl-plot", "src") or page.inner_html(".sl-plot")) != plot_before
            assert "none" in page.inner_text(".sl-status .sl-last-error")
            page.locator(".sl-dashboard").screenshot(path=str(ARTIFACTS / "dashboard.png"))
            page.screenshot(path=str(ARTIFACTS / "dashboard-page.png"))
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            browser.close()
