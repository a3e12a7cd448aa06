"""A real headless Chromium drives the served dashboard: every page draws, the frontier exists.

Starts ``python -m effbench.dashboards.launch`` on a free port over the mini store, waits for
``/_stcore/health``, visits each page with Playwright and saves a screenshot of each under
``tests/artifacts/``. Skips (with the reason) when /usr/bin/chromium or playwright is missing;
Playwright's own browser download is not used.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dash_helpers import mini_store  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
PAGES = {"frontier": "", "runs": "runs", "techniques": "techniques", "linked": "linked",
         "profiles": "profiles"}
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (apt-get install -y chromium)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"dashboard exited early: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
                if r.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = mini_store(tmp_path_factory.mktemp("dash"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "effbench.dashboards.launch", "--results", str(root),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1500})
        yield pg
        browser.close()


def visit(page, url: str, name: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector(IDLE, timeout=30_000)
    page.wait_for_selector("h1", timeout=10_000)


def test_frontier_page_draws_the_frontier(server, page):
    visit(page, server, "frontier")
    page.wait_for_selector(".js-plotly-plot .scatterlayer .point", timeout=20_000)
    roles = page.evaluate(
        "() => document.querySelector('.js-plotly-plot').data"
        ".map(t => [t.meta && t.meta.role, (t.customdata || []).length])"
    )
    front = [n for role, n in roles if role == "frontier"]
    assert front and sum(front) >= 1
    assert any(role == "frontier-line" for role, _ in roles)
    assert page.locator(".js-plotly-plot .scatterlayer .point").count() >= sum(front)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "frontier.png"), full_page=True)


@pytest.mark.parametrize("name", [n for n in PAGES if n != "frontier"])
def test_every_page_renders(server, page, name):
    visit(page, f"{server}/{PAGES[name]}", name)
    assert page.locator("[data-testid='stException']").count() == 0
    if name == "linked":
        page.wait_for_selector(".js-plotly-plot", timeout=20_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
