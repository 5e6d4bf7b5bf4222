"""nbkit: DALL·E mini / Mega in today's JAX and Flax, for notebooks.

The data flow, one module per step:
text.py (normalize) → tokenizer.py (ids) → models/dallebart.py + sampling.py (image
tokens) → ... Loading goes through checkpoint.py.
"""

__version__ = "0.1.0"
