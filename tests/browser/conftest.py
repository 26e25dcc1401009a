"""Browser tests: the course in JupyterLab, driven by Chromium through Playwright.

Run them with `make test-browser` (it sets COURSE_BROWSER=1, installs Debian's
Chromium when missing and the user is root). A plain `pytest tests` (make test)
does not collect this folder unless COURSE_BROWSER=1 is set or the folder is
named on the command line (`pytest tests/browser`).

Environment:
    COURSE_BROWSER=1        collect these tests within `pytest tests`.
    CHROMIUM=/path          the Chromium binary (default /usr/bin/chromium).
    BROWSER_NB_TIMEOUT=600  seconds allowed for one notebook's "Run All".
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import browser_lab as bl

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NB_TIMEOUT = float(os.environ.get("BROWSER_NB_TIMEOUT", "600"))


def _requested(config) -> bool:
    if os.environ.get("COURSE_BROWSER") == "1":
        return True
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    path = Path(collection_path).resolve()
    if (path == HERE or HERE in path.parents) and not _requested(config):
        return True
    return None


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "notebook(name): the browser test works on this notebook"
    )
    config._browser_latency = []  # rows for the latency table


def _order(item):
    marker = item.get_closest_marker("notebook")
    name = marker.args[0] if marker else "~"
    rank = 0 if item.path.name == "test_notebooks.py" else 1
    return (name, rank)


def pytest_collection_modifyitems(session, config, items):
    # Each notebook runs once: its "run all" check, then the explorer tests that
    # reuse the executed page, then the next notebook.
    # Only this folder's items are reordered.
    mine = [i for i in items if HERE in Path(i.path).parents]
    if mine:
        others = [i for i in items if HERE not in Path(i.path).parents]
        items[:] = others + sorted(mine, key=_order)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = getattr(config, "_browser_latency", [])
    if not rows:
        return
    tr = terminalreporter
    tr.section("browser: input → redrawn chart latency (ms), by interaction")
    head = (
        f"{'explorer':<44}{'input':<7}{'control':<12}{'moves':>6}{'median':>8}"
        f"{'worst':>7}{'best':>6}{'kernel':>8}{'draw':>6}{'canv':>5}  goals"
    )
    tr.write_line(head)
    nan = float("nan")
    for r in rows:
        goals = r.get("meets_goals")
        tr.write_line(
            f"{r['explorer']:<44}{r.get('interaction', 'key'):<7}"
            f"{r['control']:<12}{r['moves']:>6}"
            f"{r['median_ms']:>8.0f}{r['worst_ms']:>7.0f}{r['best_ms']:>6.0f}"
            f"{r.get('kernel_median_ms', nan):>8.0f}"
            f"{r.get('draw_median_ms', nan):>6.0f}"
            f"{r.get('canvases_per_update', nan):>5.0f}  "
            + ("met" if goals else "missed" if goals is not None else "")
        )
    tr.write_line(
        "goals: median ≤ 150 ms and worst ≤ 400 ms per interaction (reported, not "
        "asserted); kernel = input → new output reaches the chart (median); "
        "draw = → new canvas drawn (median); canv = canvases drawn per update"
    )
    tr.write_line(f"screenshots: {bl.ARTIFACTS}")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def artifacts() -> Path:
    if bl.ARTIFACTS.exists():
        shutil.rmtree(bl.ARTIFACTS)
    bl.ARTIFACTS.mkdir(parents=True)
    return bl.ARTIFACTS


@pytest.fixture(scope="session")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser")


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def lab(scratch, request):
    server = bl.LabServer(
        scratch / "lab", extra=[HERE / "explorers.ipynb", HERE / "photo_explainer.ipynb"]
    )
    # A CI timeout's SIGTERM becomes KeyboardInterrupt, so pytest still tears
    # down (server, kernels, browser); atexit is the last resort.
    old_term = signal.signal(signal.SIGTERM, _interrupt)
    atexit.register(server.stop)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, old_term)
        if request.session.testsfailed:
            print(f"\n--- JupyterLab log (last lines) ---\n{server.log_tail(40)}")


@pytest.fixture(scope="session")
def browser(scratch):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}. Install it with "
            "`sudo apt-get install -y chromium` (make test-browser does this as root), "
            "or point CHROMIUM=/path/to/chromium at another build."
        )
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    context = None
    try:
        context = pw.chromium.launch_persistent_context(
            str(scratch / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=bl.CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
            device_scale_factor=1,
        )
        context.set_default_timeout(60_000)
        yield context
    finally:
        if context is not None:
            with contextlib.suppress(Exception):
                context.close()
        pw.stop()


class Runs:
    """Executed notebook pages, one at a time (the previous one is closed)."""

    def __init__(self, lab, browser, artifacts):
        self.lab, self.browser, self.artifacts = lab, browser, artifacts
        self.current: bl.NotebookPage | None = None
        self.failed: dict[str, str] = {}

    def get(self, name: str) -> bl.NotebookPage:
        if self.current is not None and self.current.name == name:
            return self.current
        self.close()
        if name in self.failed:
            pytest.fail(f"{name} could not be run in the browser: {self.failed[name]}")
        nb = bl.NotebookPage(self.lab, self.browser, name)
        self.current = nb
        try:
            nb.wait_ready()
            nb.run_all(timeout=NB_TIMEOUT)
            nb.rendered = nb.wait_rendered()
        except Exception as exc:
            self.failed[name] = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                nb.page.screenshot(
                    path=str(self.artifacts / f"{Path(name).stem}-failed.png")
                )
            raise
        return nb

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


@pytest.fixture(scope="session")
def runs(lab, browser, artifacts):
    r = Runs(lab, browser, artifacts)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(scope="session")
def latency(request):
    rows = request.config._browser_latency

    def record(row: dict) -> None:
        rows.append(row)
        (bl.ARTIFACTS / "latency.json").write_text(json.dumps(rows, indent=1))

    return record
