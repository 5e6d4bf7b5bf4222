"""Colab's differences, behind small functions that fall back to plain Jupyter or a shell."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def is_colab() -> bool:
    """True inside a Google Colab runtime (its kernel imports google.colab; its VMs set COLAB_*)."""
    return "google.colab" in sys.modules or any(name.startswith("COLAB_") for name in os.environ)


DRIVE_MOUNT = Path("/content/drive")


def drive_mounted() -> bool:
    return (DRIVE_MOUNT / "MyDrive").is_dir()


def output_root(folder: str | Path | None = None) -> Path:
    """Where runs are saved: `folder`, else $NBKIT_OUTPUT, else Drive's MyDrive/nbkit/outputs when
    Drive is mounted, else ./nbkit-outputs."""
    if folder is not None:
        return Path(folder).expanduser()
    if os.environ.get("NBKIT_OUTPUT"):
        return Path(os.environ["NBKIT_OUTPUT"]).expanduser()
    if drive_mounted():
        return DRIVE_MOUNT / "MyDrive" / "nbkit" / "outputs"
    return Path.cwd() / "nbkit-outputs"
