"""Where nbkit keeps things, defined once: Colab detection, the Google Drive layout, the model
cache and the output folders. Everything that picks a folder by default asks here.

On Colab with Drive mounted, both live on Drive so that the next session finds them:

    /content/drive/MyDrive/nbkit/models     the model cache   (else ~/.cache/nbkit/models)
    /content/drive/MyDrive/nbkit/outputs    generated runs    (else ~/nbkit/outputs)

Outside Colab the command line, the notebooks (their Drive stand-in is the home folder) and the server
all save runs in the same place, ~/nbkit/outputs, and keep models in one cache, ~/.cache/nbkit/models,
wherever they are started from.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DRIVE_MOUNT = Path("/content/drive")
MY_DRIVE = DRIVE_MOUNT / "MyDrive"
DRIVE_FOLDER = MY_DRIVE / "nbkit"


def local_home() -> Path:
    """Outside Colab, the folder that stands in for Drive's MyDrive (notebooks) and holds nbkit/outputs."""
    return Path.home()


def is_colab() -> bool:
    """True inside a Google Colab runtime (its kernel imports google.colab; its VMs set COLAB_*)."""
    return "google.colab" in sys.modules or any(name.startswith("COLAB_") for name in os.environ)


def drive_mounted() -> bool:
    return MY_DRIVE.is_dir()


def model_cache(folder: str | Path | None = None) -> Path:
    """Where models are kept: `folder`, else $NBKIT_CACHE, else Google Drive when it is mounted
    (so the next Colab session finds them), else ~/.cache/nbkit/models."""
    if folder is not None:
        return Path(folder).expanduser()
    if os.environ.get("NBKIT_CACHE"):
        return Path(os.environ["NBKIT_CACHE"]).expanduser()
    if drive_mounted():
        return DRIVE_FOLDER / "models"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nbkit" / "models"


def output_root(folder: str | Path | None = None) -> Path:
    """Where runs are saved: `folder`, else $NBKIT_OUTPUT, else Drive's MyDrive/nbkit/outputs when
    Drive is mounted, else ~/nbkit/outputs (one place, whichever folder a command or kernel runs in)."""
    if folder is not None:
        return Path(folder).expanduser()
    if os.environ.get("NBKIT_OUTPUT"):
        return Path(os.environ["NBKIT_OUTPUT"]).expanduser()
    if drive_mounted():
        return DRIVE_FOLDER / "outputs"
    return local_home() / "nbkit" / "outputs"
