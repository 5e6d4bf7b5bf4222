"""The page of `python -m nbkit serve` in a real headless Chromium (Debian's package), against the real
server with the tiny fixture models. The server runs behind a token, so every URL the page uses must stay
under /t/<token>/.

NBKIT_SCREENSHOTS=<folder> keeps screenshots (desktop and phone, during progress and with a gallery);
NBKIT_CHROMIUM names another Chromium binary.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from server_process import GOLDEN, running_server

CHROMIUM = Path(os.environ.get("NBKIT_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = os.environ.get("NBKIT_SCREENSHOTS")
TOKEN = "page-test-token"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 90_000  # a generation with its first compile, on a busy machine
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
expect.set_options(timeout=TIMEOUT_MS)


def chromium() -> str:
    if CHROMIUM.is_file():
        return str(CHROMIUM)
    if shutil.which("apt-get"):
        pytest.fail(f"No Chromium at {CHROMIUM}: `bash setup_colab.sh --test` installs it as root "
                    "(apt-get install chromium), or set NBKIT_CHROMIUM to a Chromium binary.")
    pytest.skip(f"No Chromium at {CHROMIUM} and no apt-get to install it: these tests drive Debian's "
                "chromium package (or set NBKIT_CHROMIUM to a Chromium binary).")


def api(server, path: str, body: dict | None = None, timeout: float = 30) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def finished(server, job: dict) -> dict:
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while (status := api(server, f"api/jobs/{job['id']}"))["state"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"the job did not finish: {status}"
        time.sleep(0.2)
    assert status["state"] == "done", status
    return status


def blocker(server) -> dict:
    """A job that keeps the worker busy for a while, with other settings than the page's (so that they
    cannot share a batch): the page's next job waits in the queue, and is watched from its start."""
    return api(server, "api/jobs", {"prompts": ["a long queue"], "n_images": 8, "temperature": 0.9})


def screenshot(page: Page, name: str):
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        whole = not page.locator("dialog[open]").count()  # a modal shows in the window only
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=whole)


def overflow(page: Page) -> int:
    """How many pixels the page is wider than the window (0: nothing scrolls sideways)."""
    return page.evaluate("document.scrollingElement.scrollWidth - innerWidth")


def loaded_images(tiles) -> list[int]:
    """The natural width of each tile's image (0: not loaded)."""
    return tiles.locator("img").evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")


def translator_cache(cache: Path) -> Path:
    """A model cache holding translate-zh as the tiny Marian fixture, downloaded from a stand-in hub
    (the server then finds it cached, as after `nbkit download translate-zh`)."""
    from hub_server import MockHub

    from nbkit.weights import hub, registry

    repo = registry.MODELS["translate-zh"].repo
    saved = {name: os.environ.pop(name, None) for name in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "NBKIT_OFFLINE")}
    try:
        with MockHub({repo: GOLDEN / "marian-tiny"}) as stand_in:
            os.environ["HF_ENDPOINT"] = stand_in.url
            hub.fetch("translate-zh", cache, progress=False)
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
    return cache


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cache = translator_cache(tmp_path_factory.mktemp("models"))
    with contextlib.ExitStack() as stack:
        before = os.environ.get("NBKIT_CACHE")
        os.environ["NBKIT_CACHE"] = str(cache)           # the server's model cache (only its process's)
        try:
            server = stack.enter_context(running_server(tmp_path_factory.mktemp("serve"), "--token", TOKEN))
        finally:
            os.environ.pop("NBKIT_CACHE")
            if before is not None:
                os.environ["NBKIT_CACHE"] = before
        assert server.url.endswith(f"/t/{TOKEN}/"), server.url
        yield server


@pytest.fixture(scope="module")
def info(server) -> dict:
    return api(server, "api/info")


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def saved_run(server) -> dict:
    """A finished job made through the API (two prompts × two images), for the tests that start from a
    saved run."""
    job = api(server, "api/jobs", {"prompts": ["a blue house", "a red boat"], "n_images": 2, "seed": 7})
    return finished(server, job)


@pytest.fixture
def open_page(browser, server):
    """Opens the page in a new browser context; the test fails if the page raised an error."""
    contexts, errors = [], []

    def open_(viewport=DESKTOP, scheme="dark", **options) -> Page:
        context = browser.new_context(viewport=viewport, color_scheme=scheme, **options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url)
        expect(page.locator("#server-info")).to_have_class(re.compile(r"\bonline\b"))
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"the page raised: {errors}"


def open_saved_run(page: Page, run: str):
    """Opens a run from the saved runs list; returns its section."""
    page.locator(f'#runs li[data-run="{run}"] button').click()
    section = page.locator(f'.run[data-run="{run}"]')
    expect(section).to_be_visible()
    return section


def test_enter_generates_shift_enter_adds_a_line_and_the_gallery_fills(open_page, server):
    page = open_page()
    prompts = page.locator("#prompts")
    prompts.press_sequentially("a red apple")
    prompts.press("Shift+Enter")
    prompts.press_sequentially("a green pear")
    assert prompts.input_value() == "a red apple\na green pear"
    expect(page.locator(".run")).to_have_count(0)  # Shift+Enter only starts a new line
    page.fill("#n_images", "2")
    prompts.press("Enter")

    run = page.locator(".run")
    expect(run).to_have_count(1)
    expect(run.locator(".tile")).to_have_count(4)  # a place for each image at once
    expect(run).to_have_attribute("data-state", "done")
    states = run.get_attribute("data-states").split()
    assert "running" in states and states[-1] == "done", states

    expect(run.locator(".group h4")).to_have_text(["a red apple", "a green pear"])
    tiles = run.locator(".tile:not(.pending)")
    expect(tiles).to_have_count(4)
    page.wait_for_function("[...document.querySelectorAll('.tile img')].every(i => i.complete)")
    assert loaded_images(tiles) == [256] * 4
    for src in tiles.locator("img").evaluate_all("imgs => imgs.map(i => i.src)"):
        assert src.startswith(f"{server.url}api/images/") and src.endswith(".png"), src
    name = run.get_attribute("data-run")
    expect(page.locator(f'#runs li[data-run="{name}"]')).to_contain_text("a red apple")
    screenshot(page, "desktop-gallery")


def test_the_generate_button_shows_the_place_in_the_queue_then_progress_with_previews(open_page, server):
    page = open_page()
    page.fill("#prompts", "a yellow kite")
    page.fill("#n_images", "2")
    ahead = blocker(server)
    page.get_by_role("button", name="Generate").click()
    run = page.locator(".run")
    expect(run.locator(".state-text")).to_have_text(re.compile(r"^In the queue: (next up|position \d+)$"))
    page.evaluate("""() => {       // every text the status line shows, in order
        const text = document.querySelector('.run .state-text');
        window.shownTexts = [text.textContent];
        new MutationObserver(() => window.shownTexts.push(text.textContent))
            .observe(text, {childList: true, characterData: true, subtree: true});
    }""")
    assert run.locator(".bar").is_visible()
    page.wait_for_function("document.querySelector('.run').dataset.previews > 0")
    assert 0 < int(run.locator(".bar").get_attribute("aria-valuenow")) <= 100
    expect(run.locator(".tile.previewing img").first).to_have_attribute("src", re.compile("^data:image/jpeg"))
    screenshot(page, "desktop-progress")
    expect(run).to_have_attribute("data-state", "done")
    assert run.get_attribute("data-states").split() == ["queued", "running", "done"]
    shown = [text for text in page.evaluate("window.shownTexts") if not text.startswith("In the queue")]
    stages = ("Compiling (first time for this size)", "Drawing", "Decoding pixels", "Saving")
    assert shown and all(text.startswith(stages) for text in shown), shown     # never "Starting… 0 of 2"
    assert any(text.startswith("Decoding pixels") for text in shown), shown
    assert any(re.match(r"Drawing · 0 of 2 images · \d+ of 512 tokens", text) for text in shown), shown
    expect(run.locator(".tile:not(.pending)")).to_have_count(2)
    expect(run.locator(".tile.previewing")).to_have_count(0)
    assert finished(server, ahead)["images_done"] == 8


def test_a_waiting_job_can_be_cancelled(open_page, server):
    page = open_page()
    page.fill("#prompts", "a job to cancel")
    ahead = blocker(server)
    page.locator("#prompts").press("Enter")
    run = page.locator(".run")
    expect(run.locator(".state-text")).to_contain_text("In the queue")
    run.get_by_role("button", name="Cancel").click()
    expect(run).to_have_attribute("data-state", "cancelled")
    expect(run.locator(".run-notice")).to_have_text("Cancelled.")
    expect(run.locator(".status")).to_be_hidden()
    expect(run.locator(".tile")).to_have_count(0)
    api(server, f"api/jobs/{ahead['id']}/cancel", {})


def test_the_saved_runs_list_a_run_and_open_it_into_the_gallery(open_page, saved_run):
    page = open_page()
    item = page.locator(f'#runs li[data-run="{saved_run["run"]}"]')
    expect(item).to_contain_text("a blue house")
    expect(item).to_contain_text("4 images")
    section = open_saved_run(page, saved_run["run"])
    tiles = section.locator(".tile")
    expect(tiles).to_have_count(4)
    page.wait_for_function("[...document.querySelectorAll('.tile img')].every(i => i.complete)")
    assert loaded_images(tiles) == [256] * 4


def test_an_image_enlarges_downloads_as_png_and_makes_variations(open_page, saved_run):
    page = open_page()
    section = open_saved_run(page, saved_run["run"])
    first = section.locator(".tile").first
    src = first.locator("img").get_attribute("src")
    file = first.locator("a[download]").get_attribute("download")
    first.locator(".thumb").click()
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    assert page.locator("#viewer-img").get_attribute("src") == src
    expect(page.locator("#viewer-title")).to_have_text("a blue house")

    download = page.locator("#viewer-download")
    href = download.evaluate("a => a.href")
    assert href == first.locator("a[download]").evaluate("a => a.href")
    assert re.search(rf"/t/{TOKEN}/api/images/{re.escape(saved_run['run'])}/[^/]+\.png$", href), href
    assert download.get_attribute("download").endswith(".png")
    png = page.request.get(href)
    assert png.ok and png.headers["content-type"].startswith("image/png")
    assert png.body().startswith(PNG_SIGNATURE)

    page.locator("#viewer-vary").click()
    page.locator("#keep_rows").fill("4")
    expect(page.locator("#keep_rows-out")).to_have_text("4")
    page.fill("#edit_n_images", "2")
    screenshot(page, "desktop-lightbox")
    with page.expect_request(lambda r: r.url.endswith("/api/jobs") and r.method == "POST") as sent:
        page.get_by_role("button", name="Make variations").click()
    assert sent.value.post_data_json["vary"] == {"image": f"{saved_run['run']}/{file}", "keep_rows": 4}
    expect(viewer).to_be_hidden()
    varied = page.locator(".run").first
    expect(varied).to_contain_text("Variations")
    expect(varied).to_have_attribute("data-state", "done")
    assert varied.get_attribute("data-run") != saved_run["run"]
    expect(varied.locator(".tile:not(.pending)")).to_have_count(2)
    expect(varied.locator(".group h4").first).to_have_text("a blue house")


def test_extend_to_the_right_from_an_image(open_page, saved_run):
    page = open_page()
    page.fill("#seed", "42")                     # the form's settings: its seed too
    page.fill("#negative_prompt", "fog")
    section = open_saved_run(page, saved_run["run"])
    section.locator(".tile").nth(1).get_by_role("button", name=re.compile("^Extend")).click()
    expect(page.locator("#viewer")).to_be_visible()
    expect(page.get_by_label("Right")).to_be_checked()         # the notebook form's default too
    page.get_by_label("Right").check()
    page.locator("#rows").fill("4")
    page.fill("#edit_n_images", "1")
    with page.expect_request(lambda r: r.url.endswith("/api/jobs") and r.method == "POST") as sent:
        page.locator("#edit-submit").click()
    body = sent.value.post_data_json
    extend = body["extend"]
    assert (extend["direction"], extend["rows"]) == ("right", 4)
    assert (body["seed"], body["negative_prompt"]) == (42, "fog")
    extended = page.locator(".run").first
    expect(extended).to_contain_text("Extended right")
    expect(extended).to_have_attribute("data-state", "done")
    expect(extended.locator(".tile:not(.pending)")).to_have_count(1)
    joined = extended.locator(".tile .joined.right")            # shown joined to the image it continues
    expect(joined.locator("img")).to_have_count(2)
    box = joined.bounding_box()
    assert box["width"] / box["height"] == pytest.approx((16 + 4) / 16, abs=0.02)
    expect(extended.locator(".run-meta img.source-thumb")).to_have_count(1)
    screenshot(page, "desktop-extended")
    source = joined.locator("img.joined-source").get_attribute("src")

    # Reopened later from the saved runs list (a page that never saw the extension made): joined the same.
    run = extended.get_attribute("data-run")
    later = open_page()
    listed = later.locator(f'#runs li[data-run="{run}"] .thumbs .joined.right')   # the list's thumbnail too
    expect(listed.locator("img")).to_have_count(2)
    assert listed.locator("img.joined-source").get_attribute("src") == source
    box = listed.bounding_box()
    assert box["width"] / box["height"] == pytest.approx((16 + 4) / 16, abs=0.05)    # 50 px: ±1 px
    assert box["width"] <= later.locator(f'#runs li[data-run="{run}"] .thumbs').bounding_box()["width"] + 0.5
    screenshot(later, "desktop-runs-list-extension")
    reopened = open_saved_run(later, run)
    expect(reopened).to_contain_text("Extended right · 4 new rows")
    joined = reopened.locator(".tile .joined.right")
    expect(joined).to_have_count(1)
    expect(joined.locator("img")).to_have_count(2)
    assert joined.locator("img.joined-source").get_attribute("src") == source
    later.wait_for_function("[...document.querySelectorAll('.joined img')].every(i => i.complete)")
    assert loaded_images(joined) == [256, 256]           # both images there: the source and the piece
    box = joined.bounding_box()
    assert box["width"] / box["height"] == pytest.approx((16 + 4) / 16, abs=0.02)
    expect(reopened.locator(".run-meta img.source-thumb")).to_have_attribute("src", source)
    screenshot(later, "desktop-extended-reopened")


def test_rerank_with_clip_shows_the_scores_best_first(open_page, saved_run):
    page = open_page()
    section = open_saved_run(page, saved_run["run"])
    section.get_by_role("button", name="Rerank with CLIP").click()
    expect(section.locator(".rank-note")).to_be_visible()
    for group in section.locator(".group").all():
        scores = [float(text) for text in group.locator(".score").all_inner_texts()]
        assert len(scores) == 2 and scores == sorted(scores, reverse=True), scores
        assert group.locator(".tile").first.get_attribute("data-rank") == "1"
        expect(group.locator(".tile.best")).to_have_count(1)
    screenshot(page, "desktop-reranked")


def test_bad_input_shows_a_readable_error_next_to_its_field(open_page, info):
    page = open_page()
    page.fill("#prompts", "a small cat")
    page.fill("#n_images", str(info["max_images"] + 1))
    page.get_by_role("button", name="Generate").click()
    box = page.locator('.field[data-field="n_images"]')
    expect(box).to_have_class(re.compile(r"\binvalid\b"))
    expect(box.locator(".field-error")).to_contain_text(
        re.compile(rf"^Images per prompt must be .*{info['max_images']}"))
    expect(page.locator("#n_images")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#n_images")).to_be_focused()
    screenshot(page, "desktop-error")
    page.fill("#n_images", "1")  # editing the field clears its error
    expect(box).not_to_have_class(re.compile(r"\binvalid\b"))

    page.fill("#prompts", "a very long prompt " * (info["max_prompt_chars"] // 10))
    page.locator("#prompts").press("Enter")
    prompts = page.locator('.field[data-field="prompts"]')
    expect(prompts).to_have_class(re.compile(r"\binvalid\b"))
    expect(prompts.locator(".field-error")).to_contain_text(
        re.compile(rf"^Prompt 1 is \d+ characters long.*{info['max_prompt_chars']}"))

    page.fill("#prompts", "a small cat")
    page.locator("#advanced summary").click()
    page.fill("#temperature", "0")
    page.locator("#advanced summary").click()  # closed again: the error must open it
    page.get_by_role("button", name="Generate").click()
    temperature = page.locator('.field[data-field="temperature"]')
    expect(temperature.locator(".field-error")).to_contain_text(re.compile("^Temperature must be"))
    expect(page.locator("#temperature")).to_be_visible()
    expect(page.locator(".run")).to_have_count(0)


def test_several_wrong_fields_are_shown_at_once_and_the_gallery_stays(open_page, saved_run):
    page = open_page()
    section = open_saved_run(page, saved_run["run"])
    page.fill("#prompts", "")
    page.fill("#seed", "-5")
    page.locator("#advanced summary").click()
    page.fill("#top_k", "0")
    page.get_by_role("button", name="Generate").click()
    for field in ("prompts", "seed", "top_k"):                    # found by the page, all at once
        expect(page.locator(f'.field[data-field="{field}"]')).to_have_class(re.compile(r"\binvalid\b"))
    expect(page.locator("#seed-error")).to_contain_text("Seed must be at least 0")
    page.fill("#prompts", "a cat")
    page.fill("#seed", "3")
    page.fill("#top_k", "")
    page.fill("#temperature", "0")
    page.fill("#top_p", "0")
    page.get_by_role("button", name="Generate").click()
    for field in ("temperature", "top_p"):                        # found by the server, all at once
        expect(page.locator(f'.field[data-field="{field}"] .field-error')).to_contain_text("must be")
    expect(section.locator(".tile:not(.pending)")).to_have_count(4)      # what was on screen stays
    expect(page.locator(".run")).to_have_count(1)
    screenshot(page, "desktop-errors")


def test_the_tagline_names_the_model_served_and_the_runs_list_is_live(open_page, server, info):
    page = open_page()
    expect(page.locator("#tagline")).to_have_text(info["model"].rstrip("/").split("/")[-1])
    job = api(server, "api/jobs", {"prompts": ["made by another client"], "n_images": 1, "seed": 3})
    finished(server, job)
    expect(page.locator(f'#runs li[data-run="{job["run"]}"]')).to_contain_text("made by another client")


def test_on_a_touch_screen_the_actions_have_words(open_page, saved_run):
    page = open_page(PHONE, scheme="light", has_touch=True, is_mobile=True)
    section = open_saved_run(page, saved_run["run"])
    bar = section.locator(".tile").first.locator(".tile-bar")
    expect(bar.locator(".action-word")).to_have_text(["PNG", "Vary", "Extend", "4×"])
    boxes = bar.locator(".icon-button").evaluate_all(
        "bs => bs.map(b => [b.getBoundingClientRect().top, b.getBoundingClientRect().bottom])")
    assert max(top for top, _ in boxes) < min(bottom for _, bottom in boxes), boxes   # one row
    assert overflow(page) <= 0
    if SCREENSHOTS:             # of the window: a full-page shot drops the touch emulation
        section.screenshot(path=str(Path(SCREENSHOTS) / "phone-touch-actions.png"))


def test_at_desktop_width_nothing_overflows_sideways_and_the_arrows_leave_the_image_free(open_page,
                                                                                        saved_run):
    page = open_page(DESKTOP)
    section = open_saved_run(page, saved_run["run"])
    page.wait_for_function("[...document.querySelectorAll('.tile img')].every(i => i.complete)")
    assert overflow(page) <= 0
    section.locator(".tile .thumb").nth(1).click()
    image = page.locator("#viewer-img").bounding_box()
    for arrow in ("#viewer-prev", "#viewer-next"):
        box = page.locator(arrow).bounding_box()
        assert box["x"] + box["width"] <= image["x"] or box["x"] >= image["x"] + image["width"], arrow
    screenshot(page, "desktop-lightbox")


def test_at_phone_width_nothing_overflows_sideways(open_page, server, saved_run):
    page = open_page(PHONE, scheme="light")
    assert overflow(page) <= 0
    section = open_saved_run(page, saved_run["run"])
    expect(section.locator(".tile")).to_have_count(4)
    page.wait_for_function("[...document.querySelectorAll('.tile img')].every(i => i.complete)")
    assert overflow(page) <= 0
    screenshot(page, "phone-gallery")
    section.locator(".tile .thumb").first.click()
    page.locator("#viewer-extend").click()
    assert overflow(page) <= 0
    assert page.locator("#viewer").evaluate("d => d.getBoundingClientRect().right") <= PHONE["width"]
    screenshot(page, "phone-lightbox")
    page.keyboard.press("Escape")

    page.fill("#prompts", "a lighthouse at night\na paper boat")
    page.fill("#n_images", "2")
    blocker(server)
    page.locator("#prompts").press("Enter")
    run = page.locator(".run").first
    page.wait_for_function("document.querySelector('.run').dataset.previews > 0")
    screenshot(page, "phone-progress")
    assert overflow(page) <= 0
    expect(run).to_have_attribute("data-state", "done")
    assert overflow(page) <= 0


def test_without_a_token_the_page_works_at_the_root(browser, tmp_path):
    with running_server(tmp_path) as server:
        assert "/t/" not in server.url, server.url
        context = browser.new_context(viewport=DESKTOP)
        context.set_default_timeout(TIMEOUT_MS)
        errors = []
        try:
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server.url)
            page.fill("#prompts", "a tree at the root")
            page.fill("#n_images", "1")
            page.locator("#prompts").press("Enter")
            run = page.locator(".run")
            expect(run).to_have_attribute("data-state", "done")
            page.wait_for_function("[...document.querySelectorAll('.tile img')].every(i => i.complete)")
            assert loaded_images(run.locator(".tile")) == [256]
            assert run.locator("img").evaluate("i => i.src").startswith(f"{server.url}api/images/")
        finally:
            context.close()
    assert not errors, f"the page raised: {errors}"


def test_upscale_from_the_gallery_and_the_lightbox_with_progress_and_the_result(open_page, server, saved_run):
    run, first = saved_run["run"], saved_run["images"][0]["file"]
    page = open_page()
    section = open_saved_run(page, run)
    page.evaluate("""section => {                     // every text the status line shows, in order
        window.statusTexts = [];
        const line = document.querySelector(`.run[data-run="${section}"] .state-text`);
        new MutationObserver(() => window.statusTexts.push(line.textContent))
            .observe(line, {childList: true, characterData: true, subtree: true});
    }""", run)
    ahead = blocker(server)                                    # the upscale waits its turn in the queue
    with page.expect_request(lambda r: r.url.endswith("/api/upscale") and r.method == "POST") as sent:
        section.locator(".tile").first.get_by_role("button", name=re.compile("^Upscale")).click()
    assert sent.value.post_data_json == {"run": run, "file": first}
    expect(section).to_have_attribute("data-states", re.compile(r"\bqueued\b"))
    screenshot(page, "upscale-queued-desktop")
    upscaled = section.locator(".tile.upscaled:not(.pending)")
    expect(upscaled).to_have_count(1)
    expect(section).to_have_attribute("data-state", "done")
    expect(upscaled.locator(".size-badge")).to_have_text("1024×1024")
    expect(section.locator(".tile").first.locator("button[title^='Upscale'] svg")).to_have_count(1)
    expect(page.locator(f'#runs li[data-run="{run}"]')).to_contain_text("4 images · 1 upscaled")
    texts = page.evaluate("window.statusTexts")
    assert any(text.startswith("In the queue") for text in texts), texts
    assert any(re.match(r"Upscaling \d+% · \d+ of \d+ tiles", text) for text in texts), texts
    # beside its source, and downloadable as the PNG the server saved
    keys = section.locator(".tile").evaluate_all("tiles => tiles.map(t => t.dataset.key)")
    assert keys[:2] == ["0-0", "0-0-up"], keys
    href = upscaled.locator("a.icon-button").get_attribute("href")
    with urllib.request.urlopen(href, timeout=30) as response:
        png = response.read()
    assert png.startswith(PNG_SIGNATURE)
    from PIL import Image

    from nbkit.png import read_png_metadata
    assert Image.open(io.BytesIO(png)).size == (1024, 1024)
    assert read_png_metadata(png)["upscaled_from"]["file"] == first
    screenshot(page, "upscaled-desktop")
    upscaled.locator(".thumb").click()                          # enlarged: no upscale of an upscale
    expect(page.locator("#viewer-meta")).to_contain_text(f"upscaled from {first}")
    expect(page.locator("#viewer-upscale")).to_be_hidden()
    expect(page.locator("#viewer-vary")).to_be_hidden()
    page.locator("#viewer-close").click()
    finished(server, ahead)

    phone = open_page(PHONE)                                    # the lightbox's button, at phone width
    section = open_saved_run(phone, run)
    expect(section.locator(".tile.upscaled")).to_have_count(1)  # listed with the run
    section.locator(".tile").nth(2).locator(".thumb").click()  # image 2 of the first prompt
    expect(phone.locator("#viewer-upscale")).to_be_visible()
    phone.locator("#viewer-upscale").click()
    expect(phone.locator("#viewer")).to_be_hidden()
    expect(section.locator(".tile.upscaled:not(.pending)")).to_have_count(2)
    expect(section.locator('.tile[data-key="0-1-up"] .size-badge')).to_have_text("1024×1024")
    section.locator('.tile[data-key="0-1-up"]').scroll_into_view_if_needed()
    assert overflow(phone) == 0
    screenshot(phone, "upscaled-phone")


def test_a_chinese_prompt_shows_its_english_to_edit_then_draws_it_and_records_both(open_page, server):
    from nbkit.png import read_png_metadata

    page = open_page()
    typed = "一只穿着宇航服的猫"
    machine = api(server, "api/translate", {"prompts": [typed]},         # what the translator gives
                  timeout=TIMEOUT_MS / 1000)                          # (loaded and compiled first)
    assert machine["translations"][0]["translator"] == "translate-zh" and machine["english_prompts"][0]
    assert page.locator("#translate option").all_inner_texts()[-1].startswith("translate-")
    expect(page.locator("#translate")).to_have_value("auto")
    page.fill("#prompts", typed)
    page.fill("#n_images", "1")
    page.fill("#seed", "11")
    english = page.locator("#english_prompts")
    expect(english).to_be_hidden()
    page.locator("#prompts").press("Enter")                     # first Generate: the English, not a job
    expect(english).to_be_visible()
    expect(english).to_have_value(machine["english_prompts"][0])
    expect(page.locator("#translate-note")).to_contain_text("translate-zh")
    expect(page.locator(".run")).to_have_count(0)
    screenshot(page, "translate-preview")
    english.fill("a cat in a spacesuit")                        # the person edits the English
    page.get_by_role("button", name="Generate").click()         # second Generate draws it
    run = page.locator(".run")
    expect(run).to_have_attribute("data-state", "done")
    expect(run.locator(".tile:not(.pending)")).to_have_count(1)
    src = run.locator(".tile img").first.get_attribute("src")
    with urllib.request.urlopen(src, timeout=30) as response:
        metadata = read_png_metadata(response.read())
    assert metadata["prompt"] == "a cat in a spacesuit"
    assert metadata["translation"] == {"typed_prompt": typed, "translator": "translate-zh",
                                       "translator_revision": "main", "english_edited": "yes",
                                       "translator_english": machine["english_prompts"][0]}

    page.fill("#prompts", "кошка")                              # Translate: off draws it as typed
    page.select_option("#translate", "off")
    expect(english).to_be_hidden()
    page.locator("#prompts").press("Enter")
    expect(page.locator(".run")).to_have_count(2)
    expect(page.locator(".run").first).to_have_attribute("data-state", "done")


def test_the_translate_route_checks_its_input_naming_the_field(server):
    def refused(path: str, body: dict) -> tuple[int, str]:
        request = urllib.request.Request(server.url + path, json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as error:
            answer = json.load(error)
            return error.code, answer["field"]
        raise AssertionError(f"{body} was accepted")

    for body, field in [({"prompts": ["猫"], "translate": "/etc"}, "translate"),
                        ({"prompts": ["猫"], "translate": 3}, "translate"),
                        ({"translate": "auto"}, "prompts"),
                        ({"prompts": ["猫"], "seed": 1}, "seed"),
                        ({"prompts": ["a" * 10_000]}, "prompts[0]")]:
        assert refused("api/translate", body) == (400, field), body
    english = api(server, "api/translate", {"prompts": ["a red cube"]})       # English: no translator
    assert english["english_prompts"] == ["a red cube"] and english["translations"] == [None]
    auto = {"prompts": ["猫"], "translate": "auto"}
    for body, field in [({"prompts": ["猫"], "english_prompts": ["a cat"]}, "english_prompts"),    # off
                        ({**auto, "english_prompts": ["a", "b"]}, "english_prompts"),
                        ({**auto, "english_prompts": [" "]}, "english_prompts[0]")]:
        assert refused("api/jobs", body) == (400, field), body
