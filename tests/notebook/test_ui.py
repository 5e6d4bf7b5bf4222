"""The prompt form, driven as a user would: set values, click, read state and output; and the plain
HTML views (images, rankings), which must stay in a saved notebook, so must not be widgets."""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import re

import numpy as np
import pytest
from conftest import GOLDEN, tiny_pipeline
from PIL import Image

from nbkit.generation.device import DeviceInfo
from nbkit.generation.events import Batch, Progress
from nbkit.generation.stream import KINDS, show
from nbkit.notebook import ui
from nbkit.png import read_png_metadata

FIXTURES = GOLDEN
PROMPTS = "a red cube\n\n  an avocado armchair  \n"


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(max_batch=1)


def form_for(pipe, n_images=2, **kwargs) -> ui.GenerateForm:
    form = ui.GenerateForm(pipe, progress_every=64, decode_every=128, **kwargs)
    form.prompts.value = PROMPTS
    form.n_images.value, form.seed.value, form.top_k.value = n_images, "17", 20
    return form


def run(form: ui.GenerateForm) -> ui.GenerateForm:
    form.generate_button.click()
    form.wait(300)
    assert not form.running
    return form


def on_event(form: ui.GenerateForm, action) -> None:
    """Calls `action(event)` after the form has shown each event of its run (in the run's thread), before
    the view is asked whether to stop."""
    make_view = form._view

    def then_act(callback):
        return lambda event: (callback(event), action(event))[0]

    def view_then_act(made, doing):
        view = make_view(made, doing)
        return dataclasses.replace(view, **{kind: then_act(getattr(view, kind)) for kind in KINDS})
    form._view = view_then_act


def gallery_pngs(form: ui.GenerateForm) -> list[bytes]:
    return [bytes(cell.children[0].value) for cell in form.gallery.children]


def shown_html(monkeypatch) -> list[dict]:
    """What IPython's display() is given, from here on."""
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objects, **kwargs: shown.extend(objects))
    return shown


def status(form: ui.GenerateForm) -> str:
    """The status line as text."""
    return html.unescape(re.sub(r"<[^>]+>", "", form.status.value))


def inlined_pngs(markup: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', markup)]


# ---------------------------------------------------------------- a run


def test_generate_fills_the_gallery_and_saves(pipe, tmp_path):
    form = form_for(pipe, out=tmp_path)
    form.generate_button.click()
    assert form.generate_button.disabled and not form.stop_button.disabled
    form.wait(300)
    assert form.error is None, form.error
    assert len(form.result.images) == 4 and form.result.seed == 17
    assert not form.generate_button.disabled and form.stop_button.disabled
    assert form.progress.value == form.progress.max == 4 * 256
    assert re.fullmatch(r"done · 4 images · \d+\.\d s", form.progress_label.value)
    pngs = gallery_pngs(form)
    assert len(pngs) == 4 and all(png[:4] == b"\x89PNG" and png != ui.placeholder_png() for png in pngs)
    assert "seed <b>17</b>" in form.status.value and str(form.folder.path) in form.status.value
    saved = sorted(p for p in form.folder.path.glob("*.png") if "_grid" not in p.name)
    assert len(saved) == 4 and read_png_metadata(saved[0])["settings"]["top_k"] == 20
    assert read_png_metadata(saved[0])["prompt"] == "a red cube"


def test_a_double_click_starts_one_run(pipe, monkeypatch):
    calls = []
    original = pipe.stream
    monkeypatch.setattr(pipe, "stream", lambda *a, **k: calls.append(1) or original(*a, **k))
    form = form_for(pipe, n_images=1)
    form.generate_button.click()
    form.generate_button.click()
    form.generate()
    form.wait(300)
    assert len(calls) == 1 and len(form.result.images) == 2


def test_a_random_seed_is_drawn_and_shown(pipe):
    form = form_for(pipe, n_images=1)
    form.seed.value, form.prompts.value = "", "a red cube"
    run(form)
    assert isinstance(form.seed_used, int) and f"seed <b>{form.seed_used}</b>" in form.status.value


# ---------------------------------------------------------------- Stop, and the buttons


def test_stop_keeps_the_finished_images_and_drops_the_empty_slots(pipe, tmp_path):
    form = form_for(pipe, n_images=3, out=tmp_path)
    on_event(form, lambda event: isinstance(event, Batch) and form.stop_button.click())  # after 1 image
    run(form)
    assert form.stopped and 1 <= len(form.result.images) < 6
    assert status(form).startswith(f"Stopped: kept {len(form.result.images)} of 6")
    assert form.progress_label.value == f"stopped · {len(form.result.images)} of 6 images"    # no time left
    assert len(form.folder.entries()) == len(form.result.images)
    pngs = gallery_pngs(form)                # no grey (or broken) slot is left for the images never made
    assert len(pngs) == len(form.result.images) and ui.placeholder_png() not in pngs


def test_stop_while_idle_does_nothing(pipe):
    form = form_for(pipe, n_images=1)
    form.stop_button.click()
    assert form.status.value == ""
    run(form)
    final = form.status.value
    form.stop_button.click()
    form.stop()
    assert form.status.value == final and status(form).startswith("Done:")


def test_the_buttons_come_back_only_when_the_run_has_ended(pipe):
    form = form_for(pipe, n_images=1)
    seen = []
    form.generate_button.observe(lambda change: seen.append((change["new"], form.running)), names="disabled")
    run(form)
    assert seen == [(True, True), (False, False)]      # re-enabled only once the run is over
    form.prompts.value = "a blue cube"
    run(form)                                           # and then a click starts the next run
    assert form.result.prompts == ("a blue cube",)


def test_a_stop_clicked_as_the_run_ends_leaves_the_final_message(pipe):
    form = form_for(pipe, n_images=1)
    on_event(form, lambda event: event.__class__.__name__ == "Done" and form.stop())   # too late to stop
    run(form)
    assert status(form).startswith("Done:") and not form.stopped
    form = form_for(pipe, n_images=1)
    final = lambda change: ">Done:" in change["new"] and form.stop()   # Stop just as "Done" shows
    form.status.observe(final, names="value")
    run(form)
    assert status(form).startswith("Done:")


# ---------------------------------------------------------------- checking what was typed


def test_the_seed_takes_only_the_digits_0_to_9():
    assert ui.read_form("a", 1, " 12 ", 1.0, 50, 1.0, 10.0).seed == 12
    for seed in ["²", "١٢", "1²", "12.0", "-3", "4294967296"]:        # str.isdigit() is true for "²" and "١٢"
        with pytest.raises(ValueError, match="seed must be a whole number"):
            ui.read_form("a", 1, seed, 1.0, 50, 1.0, 10.0)


def test_read_form_checks_every_setting():
    values = ui.read_form("a\n b \n", 3, " 5 ", 0.8, 10, 0.9, 3.0)
    assert values.prompts == ["a", "b"] and values.seed == 5 and values.sampling["top_k"] == 10
    assert ui.read_form("a", 1, "", 1.0, 50, 1.0, 10.0).seed is None
    with pytest.raises(ValueError, match="temperature"):
        ui.read_form("a", 1, "", 0.0, 50, 1.0, 10.0)
    with pytest.raises(ValueError, match="top_p"):
        ui.read_form("a", 1, "", 1.0, 50, 1.5, 10.0)
    with pytest.raises(ValueError, match="Images per prompt"):
        ui.read_form("a", 0, "", 1.0, 50, 1.0, 10.0)


@pytest.mark.parametrize("field, value, message", [
    ("prompts", " \n  \n", "at least one prompt"),
    ("seed", "twelve", "seed must be a whole number"),
    ("seed", "²", "seed must be a whole number"),
    ("top_k", 0, "top_k must be a whole number ≥ 1"),          # a bounded field would make it 1, silently
    ("top_p", 5.0, "top_p must be in (0, 1]"),                  # … and this 1.0
    ("temperature", 0.0, "temperature must be a number &gt; 0"),
    ("condition_scale", -1.0, "condition_scale must be a number ≥ 0"),
    ("n_images", 0, "Images per prompt must be a whole number ≥ 1"),
])
def test_bad_input_is_a_message_in_the_form(pipe, field, value, message):
    form = form_for(pipe)
    getattr(form, field).value = value
    assert getattr(form, field).value == value                  # kept as typed, not clamped
    run(form)
    assert isinstance(form.error, ValueError) and message in form.status.value
    assert "Traceback" not in form.status.value and not form.generate_button.disabled


# ---------------------------------------------------------------- what the gallery shows


def test_slots_not_yet_made_show_a_grey_placeholder_not_a_broken_image(pipe):
    form = form_for(pipe, n_images=1)
    at_start = []
    on_event(form, lambda event: not at_start and at_start.extend(gallery_pngs(form)))
    run(form)
    assert len(at_start) == 2 and all(png == ui.placeholder_png() for png in at_start)
    with Image.open(io.BytesIO(ui.placeholder_png())) as placeholder:
        assert placeholder.getpixel((0, 0)) == (232, 232, 232)


def test_a_wrong_field_keeps_what_is_on_show_and_every_wrong_field_is_named(pipe):
    form = form_for(pipe, n_images=1)
    run(form)
    shown, results = form.gallery.children, form.results_html()
    assert len(shown) == 2 and not form.seamless_button.disabled
    form.seed.value, form.top_k.value, form.temperature.value = "-5", 0, 0.0
    run(form)
    assert isinstance(form.error, ui.FormErrors) and len(form.error.messages) == 3
    for message in ("seed must be a whole number", "top_k must be", "temperature must be"):
        assert message in status(form)
    assert form.gallery.children == shown and form.results_html() == results      # nothing was cleared
    assert not form.seamless_button.disabled and not form.generate_button.disabled
    form.seed.value, form.top_k.value, form.temperature.value = "3", 20, 1.0
    run(form)                                                    # a run that starts clears the old one
    assert form.error is None and form.gallery.children != shown and form.seed_used == 3


def test_an_error_mid_run_keeps_the_finished_images_and_resets_the_bar(pipe, monkeypatch):
    form = form_for(pipe, n_images=2)
    stream = pipe.stream

    def failing_after_one_image(request, progress_every=None):
        for event in stream(request, progress_every):
            yield event
            if isinstance(event, Batch):
                raise RuntimeError("the accelerator went away")
    monkeypatch.setattr(pipe, "stream", failing_after_one_image)
    run(form)
    assert "the accelerator went away" in status(form) and "Kept 1 finished image(s)" in status(form)
    assert form.progress.value == 0 and form.progress_label.value == "" and form.bar.layout.display == "none"
    assert len(gallery_pngs(form)) == 1 and ui.placeholder_png() not in gallery_pngs(form)


def test_a_run_starts_with_an_empty_gallery_and_bar(pipe):
    form = form_for(pipe, n_images=1, load=lambda name: pipe)
    run(form)
    assert form.gallery.children and form.progress.value > 0
    seen = []
    loading = lambda change: ">Loading" in change["new"] and seen.append(
        (form.gallery.children, form.progress.value, form.progress_label.value))
    form.status.observe(loading, names="value")
    form.model.value = "mini"                       # a model to load first: the old images must not stay
    run(form)
    assert seen == [((), 0, "loading models")] and form.error is None


@pytest.mark.filterwarnings("ignore:.*longer than the model")  # the tiny model reads 16 tokens
def test_captions_keep_the_image_number_and_the_whole_prompt_on_hover(pipe):
    long_prompt = "an armchair in the shape of an avocado, on a beach at sunset, oil painting"
    form = form_for(pipe, n_images=2)
    form.prompts.value = long_prompt
    run(form)
    captions = [cell.children[1].value for cell in form.gallery.children]
    assert "<b>#2</b>" in captions[1] and f'title="#2 {long_prompt}"' in captions[1]
    assert long_prompt in captions[1] and "text-overflow: ellipsis" in captions[1]
    assert "auto-fill" in form.gallery.layout.grid_template_columns     # wraps in a narrow window


def test_the_progress_label_speaks_the_stage_vocabulary_and_tells_of_cut_prompts(pipe):
    form = form_for(pipe, n_images=1)
    form._clear()
    form._slots = {}
    view = form._view([], "Generating")
    step = lambda done, stage, left=None, timed=False, cut=(): show(
        Progress(done, 1024, done // 256, 4, 1.0, stage == "compiling", done % 256, stage=stage,
                 seconds_left=left, decode_timed=timed, cut=cut), view)
    step(0, "compiling")
    assert form.progress_label.value == ("compiling (first time for this size) · 0 of 4 images · "
                                         "0 of 1024 tokens")
    step(64, "drawing", 14.2)
    assert form.progress_label.value == ("drawing · 0 of 4 images · 64 of 1024 tokens · about 15 s left "
                                         "(+ decoding, not yet timed)")
    step(256, "decoding", 3.0, True, cut=("a prompt far too long",))
    assert html.unescape(form.progress_label.value).startswith("decoding pixels · 1 of 4 images · about 3 s")
    assert "longer than the model" in form.notice.value and "a prompt far too long" in form.notice.value
    show(Batch([], 1, 4, 2.0), view)
    assert form.progress_label.value == "saving · 1 of 4 images"


@pytest.mark.filterwarnings("ignore:.*longer than the model")
def test_a_cut_prompt_is_told_in_the_form_and_previews_can_be_asked_for_on_a_cpu(pipe):
    form = form_for(pipe, n_images=1)
    assert not form.previews.value and "each preview costs a VQGAN decode" in form.previews_note.value
    form.prompts.value = "a red cube, " * 10
    previews = []
    on_event(form, lambda event: isinstance(event, Progress) and previews.append(
        bytes(form.gallery.children[0].children[0].value)))
    run(form)
    assert "longer than the model" in form.notice.value and "a red cube" in form.notice.value
    assert set(previews) == {ui.placeholder_png()}             # off on a CPU: no preview decoded
    assert re.search(r"about \d+\.\d s each, measured", form.previews_note.value)
    form.previews.value = True
    previews.clear()
    run(form)
    assert len(set(previews) - {ui.placeholder_png()}) >= 1      # asked for: partial images shown


def test_running_an_already_finished_batch_says_where_it_is(pipe, tmp_path):
    form = run(form_for(pipe, n_images=1, out=tmp_path))
    first = form.folder.path
    run(form)
    assert form.already_complete and "Already complete" in form.status.value
    assert str(first) in form.status.value and "0.0 s" not in form.status.value
    pngs = gallery_pngs(form)                                 # the saved images, shown again
    assert len(pngs) == 2 and all(read_png_metadata(png)["seed"] == 17 for png in pngs)


# ---------------------------------------------------------------- plain output, which a saved notebook keeps


def test_show_results_displays_plain_images(pipe, monkeypatch, capsys):
    shown = shown_html(monkeypatch)
    form = form_for(pipe, n_images=1)
    form.show_results()
    assert "click Generate" in capsys.readouterr().out and not shown
    run(form)
    form.show_results()
    [bundle] = shown
    assert set(bundle) == {"text/html", "text/plain"}            # no widget in it
    assert len(inlined_pngs(bundle["text/html"])) == 2 and "seed 17" in bundle["text/html"]
    assert "<b>#1</b> a red cube" in bundle["text/html"]


def test_show_images_is_plain_html_that_wraps(monkeypatch, tmp_path):
    shown = shown_html(monkeypatch)
    path = tmp_path / "one.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    images = [np.full((8, 8, 3), value, np.uint8) for value in (0, 128)] + [path]
    assert ui.show_images(images, captions=["a", "b & c", "d"], numbers=[1, 2, 3]) is None
    [bundle] = shown
    markup = bundle["text/html"]
    assert "flex-wrap: wrap" in markup and "<b>#2</b> b &amp; c" in markup
    pngs = inlined_pngs(markup)
    assert len(pngs) == 3 and pngs[2] == path.read_bytes()
    assert np.asarray(Image.open(io.BytesIO(pngs[1])))[0, 0, 0] == 128


def test_show_ranking_gives_numbers_scores_that_differ_and_the_saved_grid(monkeypatch, tmp_path):
    shown = shown_html(monkeypatch)
    for name in ["a_0.png", "a_1.png", "a_2.png", "grid.png"]:
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    ranking = [{"prompt_index": 0, "prompt": "a <red> cube", "grid": "grid.png", "images": [
        {"file": "a_2.png", "image_index": 2, "score": 25.12344},
        {"file": "a_0.png", "image_index": 0, "score": 25.12341},
        {"file": "a_1.png", "image_index": 1, "score": 19.5}]}]
    ui.show_ranking(ranking, tmp_path)
    [bundle] = shown
    markup, text = bundle["text/html"], bundle["text/plain"]
    assert "<h4" in markup and "a &lt;red&gt; cube" in markup
    assert re.findall(r"<b>#(\d)</b> score ([\d.]+)", markup) == [("3", "25.12344"), ("1", "25.12341"),
                                                                  ("2", "19.50000")]
    assert "grid.png" in markup and len(inlined_pngs(markup)) == 4
    assert text == "a <red> cube: #3 25.12344, #1 25.12341, #2 19.50000"
    assert ui.score_digits([19.5, 25.25]) == 4


# ---------------------------------------------------------------- the model picker


def test_a_device_of_unknown_memory_says_so_in_the_model_picker():
    device = DeviceInfo("gpu", "Some GPU", 1, 1, None, 64 << 30, False, "9.0")
    choices = ui.model_choices(device)
    assert choices and all(choice.fits is None for choice in choices)
    for choice in choices:
        assert "memory unknown" in choice.label
        assert "fits" not in choice.label and "too big" not in choice.label
    picker = ui.ModelPicker(device)
    assert picker.value == choices[0].name


def test_the_form_leaves_its_last_images_as_plain_output_under_itself(pipe, monkeypatch):
    class Handle:
        def __init__(self):
            self.updates = []

        def update(self, bundle, raw=False):
            self.updates.append(bundle)

    shown, handle = [], Handle()
    fake_display = lambda obj, **kwargs: shown.append(obj) or (handle if kwargs.get("display_id") else None)
    monkeypatch.setattr("IPython.display.display", fake_display)
    form = form_for(pipe, n_images=1)
    monkeypatch.setattr(type(form.widget), "_repr_mimebundle_", None, raising=False)   # as ipywidgets 7
    form._ipython_display_()                  # display(form) in a notebook
    widget_view = shown[0]["application/vnd.jupyter.widget-view+json"]
    assert widget_view["model_id"] == form.widget.model_id and len(shown) == 2
    assert "prompt form" in shown[0]["text/plain"]                   # not "VBox(children=…" on GitHub
    run(form)
    markup = handle.updates[-1]["text/html"]
    assert "<details>" in markup and len(inlined_pngs(markup)) == 2 and "<b>#1</b> a red cube" in markup
    form.seed.value = "²"
    run(form)                                 # a wrong field: the plain output stays as it was
    assert handle.updates[-1]["text/html"] == markup
    form.seed.value = "3"
    form.prompts.value = "a red cube"
    on_event(form, lambda event: isinstance(event, Batch) and 1 / 0)     # an error mid-run
    run(form)
    assert "division by zero" in status(form) and form.bar.layout.display == "none"


def test_the_form_and_the_picker_display_and_run_on_the_installed_ipywidgets(pipe, recwarn):
    """ipywidgets 7.7.1 in CI's Colab leg (Colab's own), 8 in the others: the same display data through
    IPython's own formatter, no argument the installed version ignores, and a click makes the images."""
    import ipywidgets
    from IPython.core.formatters import DisplayFormatter

    form = form_for(pipe, n_images=1)
    picker = ui.ModelPicker(DeviceInfo("cpu", "cpu", 1, 1, 8 << 30, 8 << 30, False))
    ignored = [str(w.message) for w in recwarn if "ipywidgets" in w.filename or "traitlets" in w.filename]
    assert not ignored, (ipywidgets.__version__, ignored)
    assert form.keep_rows.get_state().get("tooltip" if form.keep_rows.has_trait("tooltip")
                                          else "description_tooltip", "").startswith("Variations keep")
    data, _ = DisplayFormatter().format(picker)        # what display(picker) shows; errors would print
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == picker.widget.model_id
    data, _ = DisplayFormatter().mimebundle_formatter(form)   # display(form) itself: the test below
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == form.widget.model_id
    run(form)
    assert form.error is None and len(gallery_pngs(form)) == 2 and status(form).startswith("Done")


def test_with_keep_click_open_the_click_returns_when_the_run_has_ended(pipe, tmp_path):
    """Colab's setting (colab.widget_updates_need_an_open_request): the click waits for its run, so
    that the run's widget updates are sent while the click is still being handled."""
    form = form_for(pipe, n_images=1, out=tmp_path)
    form.keep_click_open = True
    form.generate_button.click()
    assert not form.running and len(gallery_pngs(form)) == 2 and status(form).startswith("Done")


def test_with_keep_click_open_an_interrupt_stops_the_run_and_keeps_what_is_finished(pipe, tmp_path):
    """Colab's stop button interrupts the kernel: the waiting click gets KeyboardInterrupt, and the run
    stops after its current step, as the form's Stop does (whose click waits behind this one)."""
    import signal
    import threading

    form = form_for(pipe, n_images=2, out=tmp_path)
    form.keep_click_open = True
    interrupted = []

    def interrupt_after_the_first_batch(event):
        if isinstance(event, Batch) and not interrupted:
            interrupted.append(True)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)    # as the kernel's interrupt
    on_event(form, interrupt_after_the_first_batch)
    form.generate_button.click()            # returns (no KeyboardInterrupt escapes) when the run has ended
    assert interrupted and not form.running and form.stopped
    assert 1 <= len(gallery_pngs(form)) < 4 and status(form).startswith("Stopped")


def iopub_until_idle(client, request_id: str) -> list[tuple[dict, str]]:
    """The kernel's broadcasts until `request_id` has been handled, each with the request's state when it
    came ("busy" between its start and its end). The kernel sends them all down one socket, in order."""
    seen, state = [], "waiting"
    while state != "idle":
        msg = client.get_iopub_msg(timeout=300)
        if msg["msg_type"] == "status" and msg["parent_header"].get("msg_id") == request_id:
            state = msg["content"]["execution_state"]
        else:
            seen.append((msg, state))
    return seen


def test_in_a_kernel_a_kept_open_click_sends_all_its_runs_widget_updates_before_it_ends(tmp_path):
    """What Colab needs (colabtools#3373: it drops widget updates that come after their request has
    ended), checked on the wire of a real kernel: a Generate click (a comm message, as a page sends it)
    stays busy until the run has ended, every widget update of the run comes between its busy and its
    idle with the click as parent, the last says Done, and none comes after."""
    from jupyter_client.manager import start_new_kernel

    setup = f"""
from nbkit.generation.pipeline import Pipeline
from nbkit.notebook import ui
pipe = Pipeline.from_pretrained({str(FIXTURES / "dallebart-tiny")!r}, {str(FIXTURES / "vqgan-tiny")!r},
                                dtype="float32", progress=False, max_batch=1)
form = ui.GenerateForm(pipe, out={str(tmp_path)!r}, progress_every=64, decode_every=128)
form.prompts.value, form.n_images.value, form.seed.value = "a red cube", 1, "17"
form.keep_click_open = True
display(form)
print(form.generate_button.model_id, form.status.model_id)
"""
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        printed = []
        reply = client.execute_interactive(setup, timeout=300, output_hook=lambda msg: printed.append(
            msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None)
        assert reply["content"]["status"] == "ok", reply["content"]
        button, status_widget = "".join(printed).split()
        click = client.session.msg("comm_msg", {"comm_id": button,
                                                "data": {"method": "custom", "content": {"event": "click"}}})
        client.shell_channel.send(click)
        during = iopub_until_idle(client, click["header"]["msg_id"])
        after = iopub_until_idle(client, client.execute("form.wait(300)"))   # the run's end, if still on
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    updates = [(msg["parent_header"].get("msg_id"), busy, msg["content"]) for msg, busy in during + after
               if msg["msg_type"] == "comm_msg" and msg["content"]["data"].get("method") == "update"]
    assert len(updates) > 5                          # the gallery, the bar, the images, the status
    outside = [update for update in updates if update[:2] != (click["header"]["msg_id"], "busy")]
    assert not outside, outside[:3]
    statuses = [content["data"]["state"]["value"] for _, _, content in updates
                if content["comm_id"] == status_widget and "value" in content["data"]["state"]]
    assert "Done" in statuses[-1]


def test_variations_of_a_gallery_image_keep_its_first_rows_and_use_the_negative_prompt(pipe, tmp_path):
    form = form_for(pipe, n_images=1, out=tmp_path)
    form.negative_prompt.value = "  blue fog "
    run(form)
    source = {(i.prompt_index, i.image_index): i for i in form.result.images}[(1, 0)]
    assert source.negative_prompt == "blue fog"
    buttons = [cell.children[2].children[0] for cell in form.gallery.children]
    assert [b.description for b in buttons] == ["Vary", "Vary"]
    form.keep_rows.value, form.n_images.value = 5, 2
    source_png = gallery_pngs(form)[1]
    buttons[1].click()                       # the avocado armchair's image
    form.wait(300)
    assert "first 5 of 16 rows kept" in status(form) and form.error is None
    varied = form.result.images
    assert len(varied) == 2 and all(image.prompt == "an avocado armchair" for image in varied)
    for image in varied:
        assert image.tokens[:80].tolist() == source.tokens[:80].tolist()
        assert image.negative_prompt == "blue fog"
    saved = read_png_metadata(next(form.folder.path.glob("*_001.png")))
    assert saved["source"]["keep_rows"] == 5 and saved["negative_prompt"] == "blue fog"
    pngs = gallery_pngs(form)                                    # the source first, its variations beside it
    assert len(pngs) == 3 and pngs[0] == source_png
    assert "the source: its first 5 of 16 rows" in form.gallery.children[0].children[1].value


def test_the_seamless_button_decodes_each_prompts_images_as_one_picture_and_saves_it(pipe, tmp_path):
    form = form_for(pipe, n_images=2, out=tmp_path)
    assert form.seamless_button.disabled
    run(form)
    assert not form.seamless_button.disabled
    form.seamless_button.click()
    pictures = form.seamless(None)
    assert [picture.shape for picture in pictures] == [(256, 512, 3)] * 2          # 2 images: one row
    by_prompt = {p: [i for i in form.result.images if i.prompt_index == p] for p in (0, 1)}
    expected = pipe.seamless(by_prompt[1], columns=2)
    np.testing.assert_array_equal(pictures[1], expected)
    saved = sorted(form.folder.path.glob("*_seamless*.png"))
    assert len(saved) == 4 and read_png_metadata(saved[0])["kind"] == "seamless"     # two clicks, two each
    assert len(form.seamless_view.children) == 2
    run(form)                                                     # a new run clears the pictures
    assert form.seamless_view.children == ()


def test_extend_continues_a_gallery_image_and_shows_it_joined_to_the_source(pipe, tmp_path):
    form = form_for(pipe, n_images=1, out=tmp_path)
    run(form)
    source = form.result.images[0]
    form.extend_direction.value, form.extend_rows.value, form.n_images.value = "down", 5, 1
    form.gallery.children[0].children[2].children[1].click()          # its "Extend" button
    form.wait(300)
    assert form.error is None and "extension(s), down by 5" in status(form)
    [extended] = form.result.images
    assert extended.tokens[:11 * 16].tolist() == source.tokens[5 * 16:].tolist()
    assert "continued down by 5" in form.gallery.children[0].children[1].value    # the source, first
    [joined] = form.seamless_view.children
    picture = np.asarray(Image.open(io.BytesIO(bytes(joined.children[0].value))))
    assert picture.shape == ((16 + 5) * 16, 256, 3)
    saved = read_png_metadata(next(form.folder.path.glob("*_000.png")))
    assert saved["source"]["edit"] == "extend" and saved["source"]["rows"] == 5


TINY_UPSCALER = FIXTURES / "esrgan-tiny-x4" / "model.safetensors"


def test_upscale_shows_a_gallery_image_4x_larger_and_saves_it_beside_the_original(pipe, tmp_path):
    from nbkit.generation.upscale import Upscaler

    upscaler = Upscaler(TINY_UPSCALER, progress=False)
    form = form_for(pipe, n_images=2, out=tmp_path, upscaler=upscaler)
    run(form)
    assert not upscaler.loaded                                   # generating never loads it
    original = sorted(form.folder.path.glob("*_s17_001.png"))[0]
    before = original.read_bytes()
    form.gallery.children[1].children[2].children[2].click()      # image 2's "Upscale" button
    form.wait(300)
    assert form.error is None and not form.running and not form.generate_button.disabled
    path = form.upscaled[0, 1]
    assert path.parent == form.folder.path and path != original and original.read_bytes() == before
    assert "Saved as" in status(form) and html.escape(str(path)) in status(form)
    [shown] = form.upscaled_view.children
    picture = np.asarray(Image.open(io.BytesIO(bytes(shown.children[0].value))))
    assert picture.shape == (1024, 1024, 3)
    np.testing.assert_array_equal(picture, np.asarray(Image.open(path)))
    assert read_png_metadata(path)["upscaled_from"]["file"] == original.name
    listed = [e["file"] for e in form.folder.entries(upscaled=True) if "upscaled_from" in e]
    assert listed == [path.name]

    loaded, run_windows = upscaler._loaded, upscaler._run

    def windows_then_stop(windows):                               # Stop clicked while the next one runs
        result = run_windows(windows)
        form.stop_button.click()
        return result
    upscaler._run = windows_then_stop
    form.upscale((1, 0))
    form.wait(300)
    assert "Stopped upscaling" in status(form) and upscaler._loaded is loaded     # loaded once per form
    assert sorted(form.folder.path.glob("*.esrgan-x4.png")) == [path]


def test_upscale_without_an_output_folder_shows_the_result_unsaved(pipe):
    form = form_for(pipe, n_images=1, upscaler=TINY_UPSCALER)
    run(form)
    form.upscale((0, 0))
    form.wait(300)
    assert form.error is None and "no output folder" in status(form)
    assert form.upscaled[0, 0].shape == (1024, 1024, 3)


# ---------------------------------------------------------------- prompts in other languages


MARIAN = FIXTURES / "marian-tiny"


def tiny_translators(loaded: list):
    """Every translator name → the tiny Marian fixture (random weights: its English is a word mix)."""
    from nbkit.text.translate import Translator

    def load(name, cache=None):
        loaded.append(name)
        return Translator(MARIAN, name=name, revision="main", beam=False)
    return load


@pytest.mark.filterwarnings("ignore:.*longer than the model")  # the tiny model reads 16 tokens
def test_a_translated_prompt_is_shown_in_english_edited_and_drawn_with_both_recorded(pipe, tmp_path):
    from nbkit.text.translate import Translator

    loaded = []
    form = form_for(pipe, n_images=1, out=tmp_path, translators=tiny_translators(loaded))
    typed = "一只穿着宇航服的猫"
    form.prompts.value = f"{typed}\na red cube"
    assert form.translate.choice.value == "auto" and form.translate.english.layout.display == "none"
    run(form)                                  # first click: the English is shown, nothing is drawn
    machine = Translator(MARIAN, beam=False).translate([typed])[0].english
    assert loaded == ["translate-zh"] and form.error is None and form.result is None
    assert form.gallery.children == () and "Check the English" in status(form)
    assert form.translate.english.layout.display == "" and "translate-zh" in form.translate.note.value
    assert form.translate.english.value.splitlines() == [machine, "a red cube"]
    form.translate.english.value = "a cat in a spacesuit\na red cube"          # the person edits it
    run(form)                                  # second click: the edited English is drawn
    assert form.error is None, form.error
    assert [image.prompt for image in form.result.images] == ["a cat in a spacesuit", "a red cube"]
    assert loaded == ["translate-zh"]          # loaded once, not again
    saved = {entry["prompt_index"]: form.folder.image_path(entry) for entry in form.folder.entries()}
    first = read_png_metadata(saved[0])
    assert first["prompt"] == "a cat in a spacesuit"
    assert first["translation"] == {"typed_prompt": typed, "translator": "translate-zh",
                                    "translator_revision": "main", "english_edited": "yes",
                                    "translator_english": machine}
    assert "translation" not in read_png_metadata(saved[1])
    manifest = form.folder.entries()
    assert {entry["prompt_index"]: entry.get("translation", {}).get("typed_prompt") for entry in manifest} \
        == {0: typed, 1: None}

    cell = next(c for c in form.gallery.children if "spacesuit" in c.children[1].value)
    cell.children[2].children[0].click()       # Variations of the translated image keep what was typed
    form.wait(300)
    assert form.error is None, form.error
    varied = read_png_metadata(form.folder.image_path(form.folder.entries()[0]))
    assert varied["prompt"] == "a cat in a spacesuit" and varied["translation"]["typed_prompt"] == typed
    assert varied["translation"]["english_edited"] == "yes" and varied["source"]["edit"] == "vary"


def test_an_english_prompt_loads_no_translator_and_off_draws_as_typed(pipe):
    loaded = []
    form = form_for(pipe, n_images=1, translators=tiny_translators(loaded))
    form.prompts.value = "a red cube"
    run(form)                                  # auto, English: drawn at once, nothing loaded or shown
    assert loaded == [] and form.error is None and len(form.result.images) == 1
    assert form.result.request.translations == (None,) and form.translate.english.layout.display == "none"
    form.prompts.value, form.translate.choice.value = "кошка", "off"
    run(form)
    assert loaded == [] and [image.prompt for image in form.result.images] == ["кошка"]


def test_the_translator_can_be_a_folder_and_a_bad_choice_is_a_message(pipe):
    form = form_for(pipe, n_images=1)
    form.prompts.value = "кошка"
    form.translate.choice.value = "folder"
    assert form.translate.folder.layout.display == ""
    run(form)
    assert "Type the translator's folder" in status(form) and form.result is None
    form.translate.folder.value = str(MARIAN)
    run(form)                                  # the English is shown, its translator the folder
    assert form.error is None and str(MARIAN) in form.translate.note.value
    form.translate.english.value = ""           # emptied: no line for the prompt
    run(form)
    assert "1 prompt(s)" in status(form) and form.result is None
