"""The model picker: a dropdown of the named models, with what each needs and whether it fits here."""

from __future__ import annotations

import dataclasses
from typing import Any

from nbkit.generation.device import DeviceInfo, detect
from nbkit.notebook.ipywidgets_compat import widget_bundle
from nbkit.weights import registry
from nbkit.weights.registry import GIB


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    name: str
    title: str
    download_bytes: int
    memory_bytes: int            # at the device's recommended dtype, with the VQGAN
    dtype: str
    fits: bool | None            # None: the device does not report its memory

    @property
    def label(self) -> str:
        verdict = {True: "fits this device", False: "too big for one device here",
                   None: "memory unknown (compare with your device's)"}[self.fits]
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
            description="Model", layout=ipywidgets.Layout(width="100%"),
            style={"description_width": "initial"})

    @property
    def value(self) -> str:
        return self.widget.value

    def _repr_mimebundle_(self, **kwargs) -> dict[str, Any]:
        return widget_bundle(self.widget, f"Model: {self.value}")


def pick_model(device: DeviceInfo | None = None) -> ModelPicker:
    """Shows the model dropdown in a notebook; read the choice from the returned picker's `.value`."""
    from IPython.display import display

    picker = ModelPicker(device)
    display(picker.widget)
    return picker
