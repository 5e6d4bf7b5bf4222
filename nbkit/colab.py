"""Colab's differences, behind small functions that fall back to plain Jupyter or a shell."""

from __future__ import annotations

import os
import sys


def is_colab() -> bool:
    """True inside a Google Colab runtime (its kernel imports google.colab; its VMs set COLAB_*)."""
    return "google.colab" in sys.modules or any(name.startswith("COLAB_") for name in os.environ)
