"""nbkit: DALL·E mini / Mega in today's JAX and Flax, for notebooks.

The data flow, one module per step:
text.py (normalize) → tokenizer.py (ids) → models/dallebart.py + sampling.py (image
tokens) → models/vqgan.py (pixels) → rerank.py + models/clip.py (ranked) → images.py +
storage.py (saved). pipeline.py ties them together over the devices that sharding.py
lays out; hub.py and checkpoint.py bring the weights; device.py says what runs here.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `nbkit.Pipeline` without importing jax for `import nbkit` (the CLI's --help stays fast).
    if name == "Pipeline":
        from nbkit.pipeline import Pipeline
        return Pipeline
    raise AttributeError(f"module 'nbkit' has no attribute {name!r}")
