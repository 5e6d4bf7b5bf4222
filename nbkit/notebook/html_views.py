"""Plain HTML views of images, run folders and rankings. Widgets live only while the kernel does (a saved
notebook shows "Error displaying widget"), so whatever should stay in the saved notebook is shown as
plain HTML output, built here.
"""

from __future__ import annotations

import base64
import functools
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def png_of(image) -> bytes:
    """PNG bytes of a uint8 array, a PIL image, PNG bytes or a PNG file's path."""
    from PIL import Image

    if isinstance(image, bytes):
        return image
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))).save(buffer, "PNG")
    return buffer.getvalue()


@functools.cache
def placeholder_png() -> bytes:
    """A light grey square for an image still to come (an empty image shows as a broken one)."""
    from PIL import Image

    return png_of(Image.new("RGB", (256, 256), (232, 232, 232)))


IMAGE_STYLE = "display: block; width: 100%; height: auto"
CAPTION_STYLE = ("font: 12px/1.5 system-ui, sans-serif; color: #333; overflow: hidden; "
                  "text-overflow: ellipsis; white-space: nowrap")


def caption_html(number: int | None, text: str) -> str:
    """A one-line caption: the image's number always shows, the text ends in … when too long and is
    whole on hover."""
    label = f"#{number} {text}" if number is not None else text
    number_part = f"<b>#{number}</b> " if number is not None else ""
    return (f'<div title="{html.escape(label)}" style="{CAPTION_STYLE}">'
            f"{number_part}{html.escape(text)}</div>")


def _tile(png: bytes, caption: str, size: int) -> str:
    source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    width = f"width: {size}px; max-width: 100%; width: min({size}px, calc(50% - 4px))"  # 2 a row on a phone
    return (f'<figure style="margin: 0; {width}">'
            f'<img src="{source}" alt="" style="{IMAGE_STYLE}; border-radius: 2px">'
            f"<figcaption>{caption}</figcaption></figure>")


def _wrapping(tiles: Sequence[str]) -> str:
    return f'<div style="display: flex; flex-wrap: wrap; gap: 10px 8px">{"".join(tiles)}</div>'


def images_html(images: Sequence, captions: Sequence[str] | None = None, size: int = 192,
                numbers: Sequence[int] | None = None) -> str:
    """The images as one HTML block of <img> tiles (PNG data inlined) that wrap to the page's width."""
    captions = list(captions) if captions is not None else [""] * len(images)
    numbers = list(numbers) if numbers is not None else [None] * len(images)
    if not len(captions) == len(numbers) == len(images):
        raise ValueError(f"{len(images)} image(s), {len(captions)} caption(s), {len(numbers)} number(s).")
    tiles = []
    for image, caption, number in zip(images, captions, numbers, strict=True):
        labelled = caption or number is not None
        tiles.append(_tile(png_of(image), caption_html(number, caption) if labelled else "", size))
    return _wrapping(tiles)


def show_html(markup: str, text: str) -> None:
    """Displays HTML as plain output (with a text version), which a saved notebook keeps."""
    from IPython.display import display

    display({"text/html": markup, "text/plain": text}, raw=True)


def show_images(images: Sequence, captions: Sequence[str] | None = None, size: int = 192,
                numbers: Sequence[int] | None = None) -> None:
    """Shows images (uint8 arrays, PIL images, PNG bytes or paths) as plain output, with optional
    captions and image numbers (#n, kept when a caption is cut): it stays in the saved notebook."""
    markup = images_html(images, captions, size, numbers)
    show_html(markup, f"{len(images)} image(s)" + (": " + "; ".join(captions) if captions else ""))


def show_run(folder: Any, size: int = 192) -> None:
    """A run folder's saved images (a RunFolder or its path), prompt by prompt, as plain output."""
    from nbkit.output.storage import RunFolder

    run = RunFolder.open(Path(getattr(folder, "path", folder)))
    entries = sorted(run.entries(), key=lambda entry: (entry["prompt_index"], entry["image_index"]))
    show_images([run.image_path(entry) for entry in entries], [entry["prompt"] for entry in entries], size,
                numbers=[entry["image_index"] + 1 for entry in entries])


def score_digits(scores: Sequence[float], least: int = 4, most: int = 8) -> int:
    """Decimals enough to tell different scores apart (at least `least`)."""
    distinct = set(scores)
    for digits in range(least, most + 1):
        if len({f"{score:.{digits}f}" for score in distinct}) == len(distinct):
            return digits
    return most


def ranking_html(ranking: Sequence[dict], folder: str | Path, size: int = 192) -> str:
    """`pictures.rerank_folder`'s result as HTML: per prompt, its images best first with their number and
    CLIP score, and the best-first grid saved in `folder` (names are read only from inside it)."""
    from nbkit.output.storage import RunFolder

    run = RunFolder(Path(folder))
    digits = score_digits([image["score"] for group in ranking for image in group["images"]])
    sections = []
    for group in ranking:
        tiles = [_tile(png_of(run.image_path(image)),
                       caption_html(image["image_index"] + 1, f"score {image['score']:.{digits}f}"), size)
                 for image in group["images"]]
        grid = run.image_path({"file": group["grid"]})
        saved = (f'<details style="margin-top: 6px"><summary title="{html.escape(group["grid"])}" '
                 f'style="{CAPTION_STYLE}; cursor: pointer">'
                 f"Saved best-first grid: {html.escape(group['grid'])}</summary>"
                 f'<img src="data:image/png;base64,{base64.b64encode(grid.read_bytes()).decode("ascii")}" '
                 f'alt="{html.escape(group["grid"])}" style="display: block; max-width: 100%; height: auto">'
                 "</details>") if grid.is_file() else ""
        sections.append(f'<section style="margin-bottom: 16px">'
                        f'<h4 style="margin: 4px 0 8px; overflow-wrap: anywhere">'
                        f'{html.escape(group["prompt"])}</h4>{_wrapping(tiles)}{saved}</section>')
    return "".join(sections)


def show_ranking(ranking: Sequence[dict], folder: str | Path, size: int = 192) -> None:
    """Shows a ranking (see `ranking_html`) as plain output, which stays in the saved notebook."""
    digits = score_digits([image["score"] for group in ranking for image in group["images"]])
    scored = lambda image: f"#{image['image_index'] + 1} {image['score']:.{digits}f}"
    text = "\n".join(f"{group['prompt']}: " + ", ".join(map(scored, group["images"])) for group in ranking)
    show_html(ranking_html(ranking, folder, size), text)


class ProgressLine:
    """A code cell's progress: one line that follows a run's events (`on_event=ProgressLine()`), in the
    one vocabulary (loading, compiling, drawing with the time left, decoding pixels, saving), then a line
    for the prompts that were cut. Plain text, updated in place where the frontend can (a display update),
    so it also stays in a saved notebook."""

    def __init__(self, say_loading: bool = False):
        self._handle: Any = None
        self._told_cut = False
        if say_loading:
            self.show("loading models")

    def show(self, text: str) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display({"text/plain": text}, raw=True, display_id=True)
        if self._handle is None:                      # no frontend: a plain line
            print(text, flush=True)
        else:
            self._handle.update({"text/plain": text}, raw=True)

    def __call__(self, event: Any) -> None:
        from nbkit.generation.progress import truncation_message
        from nbkit.notebook.form_progress import event_label

        label = event_label(event)
        if label:
            self.show(label)
        cut = getattr(event, "cut", ())
        if cut and not self._told_cut:
            self._told_cut = True
            print(truncation_message(cut), flush=True)
