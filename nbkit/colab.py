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


def mount_drive(local_folder: str | Path | None = None) -> Path:
    """Google Drive's MyDrive on Colab (mounting it if needed); elsewhere a local folder standing in
    for it ($NBKIT_DRIVE, else ~/nbkit-drive). Says which, and returns the folder."""
    if is_colab() and os.environ.get("NBKIT_DRIVE") is None and local_folder is None:
        if not drive_mounted():
            from google.colab import drive
            drive.mount(str(DRIVE_MOUNT))
        folder = DRIVE_MOUNT / "MyDrive"
        print(f"Google Drive is mounted: files go to {folder}/nbkit")
        return folder
    folder = Path(local_folder or os.environ.get("NBKIT_DRIVE") or Path.home() / "nbkit-drive").expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    print(f"Not on Colab: using the local folder {folder} in place of Google Drive "
          "(set NBKIT_DRIVE or pass a folder to change it)")
    return folder


def enable_widgets() -> None:
    """Colab renders ipywidgets 8 only with its custom widget manager switched on."""
    if is_colab():
        from google.colab import output
        output.enable_custom_widget_manager()
