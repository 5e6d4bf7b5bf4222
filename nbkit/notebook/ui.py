"""Notebook widgets (ipywidgets). Each widget's logic is a plain function too, for code without widgets."""

from __future__ import annotations

import dataclasses
import html
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nbkit.generation.device import DeviceInfo, detect
from nbkit.generation.sampling import SamplingSettings
from nbkit.weights import registry
from nbkit.weights.registry import GIB


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    name: str
    title: str
    download_bytes: int
    memory_bytes: int            # at the device's recommended dtype, with the VQGAN
    dtype: str
    fits: bool

    @property
    def label(self) -> str:
        verdict = "fits this device" if self.fits else "too big for one device here"
        return (f"{self.name} — {self.title} · {self.download_bytes / 1e9:.1f} GB download · "
                f"needs {self.memory_bytes / GIB:.1f} GiB in {self.dtype} · {verdict}")


def model_choices(device: DeviceInfo) -> list[ModelChoice]:
    """The named text-to-image models, with what each needs and whether it fits `device`."""
    dtype = device.recommended_dtype
    vqgan = registry.memory_needed(registry.MODELS["vqgan"], dtype)
    return [ModelChoice(name, model.title, model.download_bytes, registry.memory_needed(model, dtype) + vqgan,
                        dtype, device.fits(name, dtype))
            for name, model in registry.MODELS.items() if model.kind == registry.DALLEBART]


class ModelPicker:
    """A dropdown of the named models; `.value` is the choice (the largest that fits, at first)."""

    def __init__(self, device: DeviceInfo | None = None):
        import ipywidgets

        self.device = device or detect()
        self.choices = model_choices(self.device)
        self.widget = ipywidgets.Dropdown(
            options=[(choice.label, choice.name) for choice in self.choices],
            value=self.device.largest_model() or self.choices[0].name,
            description="Model", layout=ipywidgets.Layout(width="100%"), style={"description_width": "initial"})

    @property
    def value(self) -> str:
        return self.widget.value

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def pick_model(device: DeviceInfo | None = None) -> ModelPicker:
    """Shows the model dropdown in a notebook; read the choice from the returned picker's `.value`."""
    from IPython.display import display

    picker = ModelPicker(device)
    display(picker.widget)
    return picker


def _png(image) -> bytes:
    import io

    from PIL import Image

    if isinstance(image, (str, Path)):
        image = Image.open(image)
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))).save(buffer, "PNG")
    return buffer.getvalue()


def show_images(images: Sequence, captions: Sequence[str] | None = None, columns: int = 4, size: int = 192):
    """Displays images (uint8 arrays, PIL images or PNG paths) in a grid, with optional captions."""
    import ipywidgets
    from IPython.display import display

    cells = [ipywidgets.VBox([ipywidgets.Image(value=_png(image), format="png", width=size, height=size)]
                             + ([ipywidgets.Label(captions[i])] if captions else []))
             for i, image in enumerate(images)]
    grid = ipywidgets.GridBox(cells, layout=ipywidgets.Layout(grid_template_columns=f"repeat({columns}, {size + 8}px)"))
    display(grid)
    return grid


@dataclasses.dataclass(frozen=True)
class FormValues:
    """What the form asks for, checked: the same arguments `runs.generate_to_folder` takes."""
    prompts: list[str]
    n_images: int
    seed: int | None
    sampling: dict


def read_form(prompts: str, n_images: int, seed: str, temperature: float, top_k: int, top_p: float,
              condition_scale: float) -> FormValues:
    """The form's raw values → arguments, or a ValueError that says what to fix."""
    lines = [line.strip() for line in prompts.splitlines() if line.strip()]
    if not lines:
        raise ValueError("Type at least one prompt (one per line).")
    seed = seed.strip()
    if seed and not (seed.isdigit() and int(seed) < 2**32):
        raise ValueError(f"The seed must be a whole number from 0 to 4294967295, or blank for a random one "
                         f"(got {seed!r}).")
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "condition_scale": condition_scale}
    SamplingSettings(**sampling)             # raises a ValueError naming the bad setting
    return FormValues(lines, int(n_images), int(seed) if seed else None, sampling)


class GenerateForm:
    """The prompt form: settings, Generate and Stop, a progress bar, and a gallery that fills in
    as the images form. Generation runs in a thread so that Stop can be clicked; a second click
    on Generate while it runs does nothing. Errors appear as a message in the form.

    `out`: a folder to save each run in (see `runs.generate_to_folder`); `load(name)`: makes a
    Pipeline for another model chosen in the form's Model field.
    """

    def __init__(self, pipe: Any, out: str | Path | None = None, load: Callable[[str], Any] | None = None,
                 progress_every: int = 16, decode_every: int | None = None):
        import ipywidgets as w

        self.pipe, self.out, self.load = pipe, out, load
        self.progress_every = progress_every
        on_cpu = pipe.mesh.devices.flat[0].platform == "cpu"
        self.decode_every = decode_every or (256 if on_cpu else 64)     # partial images cost a VQGAN decode
        wide = w.Layout(width="100%")
        style = {"description_width": "initial"}
        self.prompts = w.Textarea(placeholder="one prompt per line", description="Prompts", layout=wide, style=style)
        self.n_images = w.BoundedIntText(value=4, min=1, max=64, description="Images per prompt", style=style)
        self.seed = w.Text(value="", placeholder="blank = random", description="Seed", style=style)
        self.temperature = w.BoundedFloatText(value=1.0, min=0.01, max=10.0, step=0.05, description="Temperature",
                                              style=style)
        self.top_k = w.BoundedIntText(value=50, min=1, max=16384, description="Top-k", style=style)
        self.top_p = w.BoundedFloatText(value=1.0, min=0.01, max=1.0, step=0.05, description="Top-p", style=style)
        self.condition_scale = w.BoundedFloatText(value=10.0, min=0.0, max=100.0, step=0.5,
                                                  description="Condition scale", style=style)
        names = list(registry.DALLEBART_MODELS)
        self.model = w.Dropdown(options=names + ([pipe.name] if pipe.name not in names else []), value=pipe.name,
                                description="Model", style=style, disabled=load is None)
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="play")
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=1, description="", layout=wide)
        self.status = w.HTML()
        self.gallery = w.GridBox(layout=w.Layout(grid_template_columns="repeat(4, 200px)"))
        self.generate_button.on_click(self.generate)
        self.stop_button.on_click(self.stop)
        settings = w.HBox([self.n_images, self.seed, self.model])
        sampling = w.HBox([self.temperature, self.top_k, self.top_p, self.condition_scale])
        self.widget = w.VBox([self.prompts, settings, sampling, w.HBox([self.generate_button, self.stop_button]),
                              self.progress, self.status, self.gallery])
        self.result, self.folder, self.error = None, None, None
        self._cells: dict[tuple[int, int], Any] = {}
        self._lock, self._stopping, self._thread = threading.Lock(), threading.Event(), None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def generate(self, _button=None) -> None:
        """Starts a run (the Generate button); does nothing while one runs."""
        with self._lock:
            if self.running:
                return
            self.generate_button.disabled, self.stop_button.disabled = True, False
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def stop(self, _button=None) -> None:
        """Ends the run after the current step; finished images are kept (and saved)."""
        self._stopping.set()
        self.status.value = "Stopping after the current step…"

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        from nbkit.generation.pipeline import draw_seed
        from nbkit.output import runs

        self.error = None
        try:
            values = read_form(self.prompts.value, self.n_images.value, self.seed.value, self.temperature.value,
                               self.top_k.value, self.top_p.value, self.condition_scale.value)
            if self.model.value != self.pipe.name:
                self.status.value = f"Loading {html.escape(self.model.value)}…"
                self.pipe = self.load(self.model.value)
            seed = draw_seed() if values.seed is None else values.seed
            self._start_gallery(values)
            self.status.value = f"Generating with seed <b>{seed}</b>…"
            options = dict(n_images=values.n_images, seed=seed, on_progress=self._show,
                           should_stop=self._stopping.is_set, progress_every=self.progress_every, **values.sampling)
            if self.out is not None:
                self.folder, self.result = runs.generate_to_folder(self.pipe, values.prompts, self.out, **options)
            else:
                self.result = self.pipe.generate(values.prompts, **options)
            made = len(self.result.images)
            where = f" Saved in {html.escape(str(self.folder.path))}." if self.folder else ""
            verb = "Stopped: kept" if self.result.stopped else "Done:"
            self.status.value = (f"{verb} {made} image(s), seed <b>{seed}</b>, "
                                 f"{self.result.timings['total']:.1f} s.{where}")
        except Exception as error:  # noqa: BLE001 - shown to the user in the form, not as a traceback
            self.error = error
            self.status.value = (f"<span style='color:#b00020'><b>Error:</b> "
                                 f"{html.escape(str(error) or type(error).__name__)}</span>")
        finally:
            self.generate_button.disabled, self.stop_button.disabled = False, True

    def _start_gallery(self, values: FormValues) -> None:
        import ipywidgets as w

        self._cells = {(p, i): w.Image(format="png", width=192, height=192)
                       for p in range(len(values.prompts)) for i in range(values.n_images)}
        self.gallery.children = [w.VBox([image, w.Label(f"{values.prompts[p][:28]} #{i + 1}")])
                                 for (p, i), image in self._cells.items()]
        self.progress.value, self.progress.max, self._reports = 0, len(self._cells) * 256, 0

    def _show(self, progress) -> None:
        self.progress.value, self.progress.max = progress.tokens_done, progress.tokens_total
        self._reports += 1
        if progress.final or self._reports % max(1, self.decode_every // self.progress_every) == 0:
            for image in progress.images:
                cell = self._cells.get((image.prompt_index, image.image_index))
                if cell is not None:
                    cell.value = _png(image.pixels)
