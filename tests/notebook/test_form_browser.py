"""The notebook form in a real Jupyter front end and a real headless Chromium: at 800, 1400 and 1600 px the
form's box never scrolls sideways, no thumbnail has a scrollbar, and each image's actions sit in one row.

It runs the front end the Python can: JupyterLab 4 under ipywidgets 8, the classic Notebook (6.x, with
widgetsnbextension) under ipywidgets 7 (Colab's image: .ci/colab-image.txt pins notebook 6.5.7 and
ipywidgets 7.7.1, whose page the classic Notebook's widget manager draws as Colab's does). The Python is
this interpreter, or the one NBKIT_JUPYTER_PYTHON names (a venv with `pip install jupyterlab`, or
`pip install "notebook<7" "ipywidgets<8"`; its kernel must import this checkout's dependencies).
NBKIT_SCREENSHOTS=<folder> keeps a screenshot at each width; NBKIT_CHROMIUM names another Chromium binary.
"""

from __future__ import annotations

import dataclasses
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


PROBE = """
import importlib.metadata as metadata, json
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
print(json.dumps({name: version(name) for name in ("ipywidgets", "jupyterlab", "notebook")}))
"""


@dataclasses.dataclass(frozen=True)
class FrontEnd:
    """A Jupyter front end as the test drives it: how to start it, and where its page keeps things."""
    name: str
    python: str
    app: tuple[str, ...]          # `python -m jupyter ...` with the options that keep it quiet
    path: str                     # the notebook's page, after the server's address
    ready: str                    # a selector that appears once the kernel is idle
    cell: str                     # the first code cell
    editor: str                   # its editor (clicked before Shift+Enter)
    prompt: str                   # its input prompt: [*] while it runs, [1] when it ran
    input: str                    # its input area, hidden so that the form is in view
    output: str                   # the output area the form must stay inside


def front_end() -> FrontEnd:
    """The front end that the Python (NBKIT_JUPYTER_PYTHON, else this one) has, or a skip saying what to
    install."""
    python = os.environ.get("NBKIT_JUPYTER_PYTHON") or sys.executable
    found = json.loads(subprocess.run([python, "-c", PROBE], capture_output=True, text=True,
                                      check=True).stdout)
    major = lambda name: int(found[name].split(".")[0]) if found[name] else None
    if major("ipywidgets") is None:
        pytest.skip(f"{python} has no ipywidgets")
    if major("ipywidgets") >= 8 and found["jupyterlab"]:
        return FrontEnd("jupyterlab", python, (
            "lab", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"),
            "/lab/tree/form.ipynb", "text=/Python 3 \\(ipykernel\\) \\| Idle/", ".jp-Cell.jp-CodeCell",
            ".jp-InputArea-editor", ".jp-InputPrompt", ".jp-InputArea", ".jp-OutputArea-output")
    if major("ipywidgets") < 8 and major("notebook") is not None and major("notebook") < 7:
        return FrontEnd("classic", python, ("notebook",), "/notebooks/form.ipynb",
                        "#kernel_indicator_icon.kernel_idle_icon", ".cell.code_cell", ".CodeMirror",
                        ".input_prompt", ".input", ".output_subarea")
    pytest.skip(f"{python} has ipywidgets {found['ipywidgets']}, JupyterLab {found['jupyterlab']} and "
                f"Notebook {found['notebook']}: the form's widgets need JupyterLab 4 with ipywidgets 8, or "
                "the classic Notebook (<7) with ipywidgets 7; install one (or set NBKIT_JUPYTER_PYTHON)")


def run_the_cell(page, front: FrontEnd, cell, tries: int = 3) -> None:
    """Shift+Enter in the cell until its prompt says it runs ([*]) or ran ([1]): a key pressed while
    the page is still settling (a busy machine) can be lost, and then nothing would ever run."""
    for _ in range(tries):
        cell.locator(front.editor).first.click()
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function("([cell, prompt]) => /\\[[*0-9]+\\]/.test(cell.querySelector(prompt)"
                                   "?.textContent ?? '')", arg=[cell.element_handle(), front.prompt],
                                   timeout=20_000)
            return
        except Exception:          # playwright's TimeoutError: press again
            continue
    raise AssertionError(f"{front.name} did not run the cell after {tries} Shift+Enter presses")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.skip(f"No Chromium at {CHROMIUM} (set NBKIT_CHROMIUM to a Chromium binary).")
    front = front_end()
    folder = tmp_path_factory.mktemp("jupyter")
    notebook = {"cells": [{"cell_type": "code", "metadata": {}, "source": CELL.strip(), "outputs": [],
                           "execution_count": None}],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                            "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (folder / "form.ipynb").write_text(json.dumps(notebook))
    port, token = free_port(), secrets.token_hex(8)
    prefix = subprocess.run([front.python, "-c", "import sys; print(sys.prefix)"], capture_output=True,
                            text=True, check=True).stdout.strip()
    env = {**os.environ, "JUPYTER_PATH": os.pathsep.join(
        [str(Path(prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH", "")]),
        "JUPYTER_CONFIG_DIR": str(folder / "config"), "JUPYTER_RUNTIME_DIR": str(folder / "runtime")}
    token_option = ("--NotebookApp.token=" if front.name == "classic" else "--IdentityProvider.token=")
    root_option = ("--NotebookApp.notebook_dir=" if front.name == "classic" else "--ServerApp.root_dir=")
    server = subprocess.Popen(
        [front.python, "-m", "jupyter", *front.app[:1], "--no-browser", "--allow-root", f"--port={port}",
         "--ip=127.0.0.1", f"{token_option}{token}", f"{root_option}{folder}", *front.app[1:]],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5).read()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, f"{front.name} did not start"
            time.sleep(1)
    try:
        yield front, f"{url}{front.path}?token={token}"
    finally:
        server.terminate()
        server.wait(30)


def measure(page, front: FrontEnd) -> dict:
    """The form's box against its output area, every scrolling box inside it, each image cell's actions."""
    return page.evaluate("""(output) => {
        const form = document.querySelector('.nbkit-form');
        const area = form.closest(output) ?? form.parentElement;
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
    }""", front.output)


def test_the_form_fits_its_cell(jupyter):
    from playwright.sync_api import sync_playwright

    front, address = jupyter
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": WIDTHS[0], "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(address)
        cell = page.locator(front.cell).first
        cell.locator(front.editor).first.click()
        page.wait_for_selector(front.ready)                     # the kernel is ready
        run_the_cell(page, front, cell)
        page.wait_for_selector("text=form-done None")
        page.wait_for_function("document.querySelectorAll('.nbkit-form .widget-gridbox button').length >= 18")
        cell.locator(front.input).first.evaluate("node => node.style.display = 'none'")   # the form in view
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            page.wait_for_timeout(500)                   # the page relays out on resize
            seen = measure(page, front)
            if SCREENSHOTS:
                Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(Path(SCREENSHOTS) / f"{front.name}-form-{width}.png"))
                page.set_viewport_size({"width": width, "height": 2400})     # the whole form, its gallery too
                page.wait_for_timeout(500)
                page.locator(".nbkit-form").screenshot(
                    path=str(Path(SCREENSHOTS) / f"{front.name}-form-{width}-whole.png"))
                page.set_viewport_size({"width": width, "height": 900})
            assert seen["cells"] == 6, seen
            assert seen["past"] == [] and seen["pastArea"] <= 1, (width, seen)     # nothing sideways or cut
            assert seen["formScroll"] <= 0 and seen["pageScroll"] <= 0, (width, seen)
            assert seen["scrolls"] == [], (width, seen)                                # no scrollbars
            assert seen["rows"] == [[3, 1]] * 6, (width, seen)          # Vary, Extend, Upscale: one row
        browser.close()
