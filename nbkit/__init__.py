"""nbkit: DALL·E mini / Mega in today's JAX and Flax, for notebooks, the command line and the web.

The sub-packages follow the data flow:

    text/        prompt → normalized text → token ids; prompts in other scripts translated (opus-mt)
    models/      DalleBart, VQGAN, CLIP, Real-ESRGAN, Marian: the architectures
    weights/     named models → downloaded, verified folders → parameter trees
    generation/  token ids → image tokens → pixels, over the devices at hand (Pipeline); 4× upscaling
    output/      pixels → PNGs with metadata, run folders, CLIP ranking, upscaled copies beside them
    notebook/    the prompt form, the HTML views and Colab's shims
    server/      `nbkit serve`: the web page and its HTTP API, one queue of jobs, local or Ray replicas
    cli/         `python -m nbkit`, one module a command: generate, vary, extend, fill, reproduce, rerank, …

docs/architecture.md lists every module.
"""

__version__ = "0.1.0"

# Short names for what notebooks use most, imported on first use so that `import nbkit` (and the
# CLI's --help) does not start jax.
_LAZY = {
    "Pipeline": ("nbkit.generation.pipeline", "Pipeline"),
    "Generate": ("nbkit.generation.specs", "Generate"),
    "Vary": ("nbkit.generation.from_image", "Vary"),
    "Extend": ("nbkit.generation.from_image", "Extend"),
    "Fill": ("nbkit.generation.from_image", "Fill"),
    "SamplingSettings": ("nbkit.generation.sampling", "SamplingSettings"),
    "colab": ("nbkit.notebook.colab", None),
    "ui": ("nbkit.notebook.ui", None),
    "runs": ("nbkit.output.runs", None),
    "pictures": ("nbkit.output.pictures", None),
    "reproduce": ("nbkit.output.reproduction", "reproduce"),
    "hub": ("nbkit.weights.hub", None),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'nbkit' has no attribute {name!r}")
    import importlib

    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
