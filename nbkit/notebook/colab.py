"""Colab's differences, behind small functions that fall back to plain Jupyter or a shell."""

from __future__ import annotations

import os
from pathlib import Path

from nbkit import places
from nbkit.places import DRIVE_FOLDER, DRIVE_MOUNT, MY_DRIVE, drive_mounted, is_colab


def mount_drive(local_folder: str | Path | None = None) -> Path:
    """Google Drive's MyDrive on Colab (mounting it if needed); elsewhere a local folder standing in
    for it ($NBKIT_DRIVE, else ~/nbkit-drive). Says which, and returns the folder."""
    if is_colab() and os.environ.get("NBKIT_DRIVE") is None and local_folder is None:
        if not drive_mounted():
            from google.colab import drive
            drive.mount(str(DRIVE_MOUNT))
        folder = MY_DRIVE
        print(f"Google Drive is mounted: files go to {DRIVE_FOLDER}")
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


def upload_image(folder: str | Path) -> Path | None:
    """Colab's file picker: the chosen image is saved (never over another file) in `folder`/uploads and
    its path returned. Elsewhere there is no picker: says to give the image's path, and returns None."""
    if not is_colab():
        print("Uploading works in Colab; here, give the image's path instead (IMAGE).")
        return None
    from google.colab import files

    from nbkit.output.storage import atomic_write, slugify

    chosen = files.upload()
    if not chosen:
        print("No file was chosen.")
        return None
    name, data = next(iter(chosen.items()))
    uploads = Path(folder) / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    stem, suffix = Path(name).stem, Path(name).suffix.lower()[:8]
    for attempt in range(1, 1000):
        path = uploads / f"{slugify(stem)}{'' if attempt == 1 else f'-{attempt}'}{suffix}"
        try:
            atomic_write(path, data)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"No free file name for {name} in {uploads}.")


def output_root() -> Path:
    """Where runs are saved when Drive is not used: $NBKIT_OUTPUT, else ./nbkit-outputs (Drive's
    nbkit/outputs when it is mounted)."""
    return places.output_root()
