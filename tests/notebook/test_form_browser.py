"""The notebook form in a real JupyterLab and a real headless Chromium: at 800, 1400 and 1600 px the form's
box never scrolls sideways, no thumbnail has a scrollbar, and each image's actions sit in one row.

It needs JupyterLab: the one of this interpreter, or the Python named by NBKIT_JUPYTER_PYTHON (a venv with
`pip install jupyterlab`; its kernel must import this checkout's dependencies). NBKIT_SCREENSHOTS=<folder>
keeps a screenshot at each width; NBKIT_CHROMIUM names another Chromium binary.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import GOLDEN, ROOT

FIXTURES = GOLDEN
CHROMIUM = Path(os.environ.get("NBKIT_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = os.environ.get("NBKIT_SCREENSHOTS")
WIDTHS = (800, 1400, 1600)
TIMEOUT_MS = 240_000     # the kernel starts, loads the tiny models, compiles and draws on a busy machine

CELL = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from nbkit import Pipeline
from nbkit.notebook import ui
pipe = Pipeline.from_pretrained({str(FIXTURES / "dallebart-tiny")!r}, {str(FIXTURES / "vqgan-tiny")!r},
                                dtype="float32", progress=False, max_batch=2)
form = ui.GenerateForm(pipe, load=lambda name: pipe)
form.prompts.value = "a red cube on a long table in a very large and empty room\\nan avocado armchair"
form.negative_prompt.value = "blurry, low quality, text, watermark"
form.n_images.value, form.seed.value = 3, "7"
display(form)
form.generate()
form.wait(600)
print("form-done", form.error)
"""


def jupyter_python() -> str:
    named = os.environ.get("NBKIT_JUPYTER_PYTHON")
    if named:
        return named
    import ipywidgets

    if int(ipywidgets.__version__.split(".")[0]) < 8:    # Colab's leg: ipywidgets 7.7.1
        pytest.skip("ipywidgets 7 has no JupyterLab 4 renderer (jupyterlab_widgets 1 is for JupyterLab 3); "
                    "the form's layout is the same code under ipywidgets 8, which this test checks")
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.skip("JupyterLab is not installed for this Python: set NBKIT_JUPYTER_PYTHON to a Python "
                    "that has it (python -m venv v && v/bin/pip install jupyterlab)")
    return sys.executable


def run_the_cell(page, cell, tries: int = 3) -> None:
    """Shift+Enter in the cell until its prompt says it runs ([*]) or ran ([1]): a key pressed while
    JupyterLab is still settling (a busy machine) can be lost, and then nothing would ever run."""
    for _ in range(tries):
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function("cell => /\\[[*0-9]+\\]/.test(cell.querySelector('.jp-InputPrompt')"
                                   "?.textContent ?? '')", arg=cell.element_handle(), timeout=20_000)
            return
        except Exception:          # playwright's TimeoutError: press again
            continue
    raise AssertionError(f"JupyterLab did not run the cell after {tries} Shift+Enter presses")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.skip(f"No Chromium at {CHROMIUM} (set NBKIT_CHROMIUM to a Chromium binary).")
    python = jupyter_python()
    folder = tmp_path_factory.mktemp("lab")
    notebook = {"cells": [{"cell_type": "code", "metadata": {}, "source": CELL.strip(), "outputs": [],
                           "execution_count": None}],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                            "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (folder / "form.ipynb").write_text(json.dumps(notebook))
    port, token = free_port(), secrets.token_hex(8)
    env = {**os.environ, "JUPYTER_PATH": os.pathsep.join(
        [str(Path(sys.prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH", "")]),
        "JUPYTER_CONFIG_DIR": str(folder / "config"), "JUPYTER_RUNTIME_DIR": str(folder / "runtime")}
    server = subprocess.Popen(
        [python, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5).read()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "JupyterLab did not start"
            time.sleep(1)
    try:
        yield f"{url}/lab/tree/form.ipynb?token={token}"
    finally:
        server.terminate()
        server.wait(30)


def measure(page) -> dict:
    """The form's box against its output area, every scrolling box inside it, each image cell's actions."""
    return page.evaluate("""() => {
        const form = document.querySelector('.nbkit-form');
        const area = form.closest('.jp-OutputArea-output') ?? form.parentElement;
        const scrolls = [...form.querySelectorAll('*')].filter((node) => {
            const style = getComputedStyle(node);
            const x = /(auto|scroll)/.test(style.overflowX) && node.scrollWidth > node.clientWidth + 1;
            const y = /(auto|scroll)/.test(style.overflowY) && node.scrollHeight > node.clientHeight + 1;
            return x || y;
        }).map((node) => node.className);
        const rows = [...form.querySelectorAll('.widget-gridbox > *')].map((cell) => {
            const buttons = [...cell.querySelectorAll('button')].map((b) => b.getBoundingClientRect());
            const tops = new Set(buttons.map((b) => Math.round(b.top)));
            return buttons.length ? [buttons.length, tops.size] : null;
        }).filter(Boolean);
        const right = form.getBoundingClientRect().right;
        const past = [...form.querySelectorAll('*')].filter((node) => node.getClientRects().length
            && node.getBoundingClientRect().right > right + 1).map((node) =>
              `${node.className || node.tagName} +${Math.round(node.getBoundingClientRect().right - right)} `
              + node.textContent.slice(0, 24));
        return {
            past,
            formScroll: form.scrollWidth - form.clientWidth,
            pastArea: form.getBoundingClientRect().right - area.getBoundingClientRect().right,
            pageScroll: document.scrollingElement.scrollWidth - innerWidth,
            scrolls, rows,
            cells: form.querySelectorAll('.widget-gridbox > *').length,
        };
    }""")


def test_the_form_fits_its_cell_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": WIDTHS[0], "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(lab)
        cell = page.locator(".jp-Cell.jp-CodeCell").first
        cell.locator(".jp-InputArea-editor").click()
        page.wait_for_selector("text=/Python 3 \\(ipykernel\\) \\| Idle/")     # the kernel is ready
        run_the_cell(page, cell)
        page.wait_for_selector("text=form-done None")
        page.wait_for_function("document.querySelectorAll('.nbkit-form .widget-gridbox button').length >= 18")
        cell.locator(".jp-InputArea").evaluate("node => node.style.display = 'none'")   # the form in view
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            page.wait_for_timeout(500)                   # JupyterLab relays out on resize
            seen = measure(page)
            if SCREENSHOTS:
                Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(Path(SCREENSHOTS) / f"jupyterlab-form-{width}.png"))
            assert seen["cells"] == 6, seen
            assert seen["past"] == [] and seen["pastArea"] <= 1, (width, seen)     # nothing sideways or cut
            assert seen["formScroll"] <= 0 and seen["pageScroll"] <= 0, (width, seen)
            assert seen["scrolls"] == [], (width, seen)                                # no scrollbars
            assert seen["rows"] == [[3, 1]] * 6, (width, seen)          # Vary, Extend, Upscale: one row
        browser.close()
