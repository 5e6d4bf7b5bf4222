"""Colab's differences, behind small functions that fall back to plain Jupyter or a shell."""

from __future__ import annotations

import os
from pathlib import Path

from nbkit import places
from nbkit.places import DRIVE_FOLDER, DRIVE_MOUNT, MY_DRIVE, drive_mounted, is_colab


def mount_drive(local_folder: str | Path | None = None) -> Path:
    """Google Drive's MyDrive on Colab (mounting it if needed); elsewhere a local folder standing in
    for it ($NBKIT_DRIVE, else the home folder, so that runs go to ~/nbkit/outputs as the command line's
    do: `places.output_root`). Says which, and returns the folder."""
    if is_colab() and os.environ.get("NBKIT_DRIVE") is None and local_folder is None:
        if not drive_mounted():
            from google.colab import drive
            drive.mount(str(DRIVE_MOUNT))
        folder = MY_DRIVE
        print(f"Google Drive is mounted: files go to {DRIVE_FOLDER}")
        return folder
    folder = Path(local_folder or os.environ.get("NBKIT_DRIVE") or places.local_home()).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    print(f"Not on Colab: using the local folder {folder.resolve()} in place of Google Drive, so runs are "
          f"saved in {(folder / 'nbkit' / 'outputs').resolve()} (set NBKIT_DRIVE or pass a folder to change "
          "it)")
    return folder


def enable_widgets() -> None:
    """Colab renders its own ipywidgets (7) natively; a newer ipywidgets (8, installed by hand) only with
    its custom widget manager switched on, which this does then."""
    if is_colab() and _ipywidgets_major() >= 8:
        from google.colab import output
        output.enable_custom_widget_manager()


def _ipywidgets_major() -> int:
    import ipywidgets
    return int(ipywidgets.__version__.split(".")[0])


def widget_updates_need_an_open_request() -> bool:
    """Whether a widget change sent from a background thread reaches the page only while the request that
    started the work (a cell, a button's click) is still being handled. True on Colab: its page drops
    widget updates that come after their request has ended, so a value set from a worker thread shows
    only when a later request resends the state (googlecolab/colabtools#3373; the kernel's value is
    right). A front end that waits in the click's handler until its worker is done keeps the click's
    request open: the worker's updates then carry that request as their parent and arrive before its
    end, exactly like changes made in the handler itself. JupyterLab and classic Jupyter apply them
    whenever they come, so there the handler returns at once and the kernel stays free."""
    return is_colab()


def upload_image(folder: str | Path) -> Path | None:
    """Colab's file picker: the chosen image is saved (never over another file) in `folder`/uploads and
    its path returned. Elsewhere there is no picker: says to give the image's path, and returns None."""
    if not is_colab():
        print("Uploading works in Colab; here, give the image's path instead (IMAGE).")
        return None
    from google.colab import files

    from nbkit.output.atomic import atomic_write
    from nbkit.output.storage import slugify

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
    """Where runs are saved when Drive is not used: $NBKIT_OUTPUT, else ~/nbkit/outputs (Drive's
    nbkit/outputs when it is mounted): the command line's default too."""
    return places.output_root()


def model_cache() -> Path:
    """Where the notebooks keep models, the command line's and the server's cache too: $NBKIT_CACHE, else
    Drive's MyDrive/nbkit/models when it is mounted (call `mount_drive` first), else ~/.cache/nbkit/models
    (`places.model_cache`)."""
    return places.model_cache()


_serving: dict[int, object] = {}     # port asked for → the server started on it in this kernel


def serve(model: str = "mini", vqgan: str = "vqgan", clip: str | None = "clip-b32", *, pipe=None,
          host: str = "127.0.0.1", port: int = 8000, out: str | Path | None = None, token: str | None = None,
          max_queue: int = 16, max_images: int = 16, max_batch: int | None = None, dtype=None,
          weight_storage: str = "float32", cache: str | Path | None = None, preview_every: int | None = 64,
          cors_origins: tuple[str, ...] = (), window: bool = False, height: int = 820):
    """`nbkit serve` inside this kernel: the page and the API from a background thread, so the notebook
    stays usable. The models are loaded once (or pass a loaded `pipe`). On Colab the page is shown
    below the cell through Colab's port proxy, the one way Colab still supports: `window=True` asks for
    a tab of its own, which the proxy cannot give any more (see `_show`), so it says how to get one and
    shows the page below the cell, taller. Elsewhere a link. Returns the server: `.url`, and `.stop()`
    (the batch in flight is finished and saved). Starting again on the same port stops the earlier one.
    `weight_storage`: as `nbkit serve --weight-storage` (float32, bfloat16, int8 or auto)."""
    import secrets

    from nbkit.generation.pipeline import Pipeline
    from nbkit.server.command import check_origins, resolve_token
    from nbkit.server.gate import COLAB_PROXY_HOSTS
    from nbkit.server.launch import launch
    from nbkit.server.options import ServerOptions

    token, generated = resolve_token(host, token, lambda: secrets.token_urlsafe(16))
    earlier = _serving.pop(port, None) if port else None
    if earlier is not None:
        earlier.stop()
    folder = places.output_root(out)
    folder.mkdir(parents=True, exist_ok=True)
    options = ServerOptions(out=folder.resolve(), host=host, token=token, cors_origins=check_origins(
        list(cors_origins)), allow_hosts=COLAB_PROXY_HOSTS if is_colab() else (), max_queue=max_queue,
        max_images=max_images, preview_every=preview_every, model=getattr(pipe, "name", model),
        vqgan=str(vqgan), clip=clip, cache=None if cache is None else str(cache))
    load = (lambda: pipe) if pipe is not None else \
        (lambda: Pipeline.from_pretrained(model, vqgan, dtype=dtype, max_batch=max_batch, cache=cache,
                                          weight_storage=weight_storage))
    running = launch(options, port, load, background=True)
    if port:
        _serving[port] = running
    _show(running, window, height)
    if generated:
        print(f"A token is required (listening on {host}): {token}")
    return running


def _show(running, window: bool, height: int) -> None:
    print(f"nbkit serving on {running.url} (stop it with .stop())")
    path = f"/t/{running.options.token}/" if running.options.token else "/"
    if is_colab():
        # Not output.serve_kernel_port_as_window: deprecated, as browsers' storage partitioning keeps
        # the proxy's login from a tab of its own. An iframe in the notebook's page still has it.
        from google.colab import output
        if window:
            print("Colab's port proxy can no longer open a page in a tab of its own (browser storage "
                  "partitioning): it is shown below. For a separate tab or another device, start a tunnel "
                  "and a token (README: Token, tunnels and other machines).")
            height = max(height, 1200)
        output.serve_kernel_port_as_iframe(running.port, path=path, height=height)
        return
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        return
    if getattr(get_ipython(), "kernel", None) is not None:
        display(HTML(f'<a href="{running.url}" target="_blank">Open the nbkit page: {running.url}</a>'))
