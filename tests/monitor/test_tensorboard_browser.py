"""TensorBoard as a researcher sees it, in a real headless browser: the HParams table of a real
two-key ``dim-train -m`` sweep and the Custom Scalars dashboard.  Slow (a 4-run sweep and a
TensorBoard server): make test-slow.

Needs playwright (``pip install -e '.[browser]'``) and a Chromium it can drive: the first of
``$DIM_BROWSER``, ``chromium-headless-shell`` (Debian: ``apt-get install
chromium-headless-shell``), ``chromium``, ``google-chrome`` on the PATH; skipped without them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from dim.monitor.records import DASHBOARD, DASHBOARD_CATEGORY

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    given = os.environ.get("DIM_BROWSER")
    if given:
        return given if Path(given).is_file() else None
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tensorboard(logdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    exe = Path(sys.executable).with_name("tensorboard")
    proc = subprocess.Popen(
        [str(exe), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    pytest.fail("TensorBoard did not answer within two minutes")


@pytest.mark.slow
def test_hparams_table_and_dim_dashboard_in_a_browser(tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip(
            "no headless Chromium: apt-get install chromium-headless-shell, or set DIM_BROWSER "
            "to a Chromium executable"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[browser]'"
    )
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "dim-train", "-m", *TINY, "callbacks.projector.num_images=0", "bound=jsd,infonce",
        "optim.lr=1e-4,2e-4", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    server, url = start_tensorboard(sweep)
    try:
        with sync_api.sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
            page = chromium.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(url + "#hparams")
            headers = page.locator("div.table-header.table-cell")
            page.wait_for_selector("div.table-header.table-cell:has-text('val/probe/acc_y')")
            columns = [t.strip() for t in headers.all_inner_texts()]
            page.goto(url + "#custom_scalars")
            page.wait_for_selector(".category-name")
            category = page.locator(".category-name").first.inner_text().strip()
            titles = [t.strip() for t in page.locator("div.heading-label.name").all_inner_texts()]
            chromium.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    # Trial ID, Show Metrics, then the two swept keys, three constants, the final metrics
    assert columns[:2] == ["Trial ID", "Show Metrics"], columns
    assert columns[2:4] == ["bound.name", "optim.lr"], columns
    assert columns[7:10] == ["val/probe/acc_y", "val/knn/acc_y", "val/mi/local"], columns
    assert category == DASHBOARD_CATEGORY and titles == list(DASHBOARD)
