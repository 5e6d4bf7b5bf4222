"""One file over HTTP into `<cache>/partial/<digest>.part`, with a progress bar, continued after an
interruption (an HTTP Range request from the part's end) and checked against its hash before any caller
moves it into a model folder. Every source that downloads files itself (the hub, release URLs) uses it.
"""

from __future__ import annotations

from pathlib import Path

from nbkit.weights.errors import CorruptFileError
from nbkit.weights.verify import file_hash


def download(url: str, partial_dir: Path, digest: str, size: int | None, name: str, progress: bool) -> Path:
    """Grows `<digest>.part` to the whole file (continuing a previous attempt) and checks it; a part
    longer than `size` is started again, a damaged whole one deleted (CorruptFileError)."""
    from huggingface_hub.file_download import http_get
    from tqdm.auto import tqdm

    partial_dir.mkdir(parents=True, exist_ok=True)
    part = partial_dir / f"{digest}.part"
    with open(part, "ab") as out:
        done = out.tell()
        if size is not None and done > size:
            out.truncate(0)
            done = 0
        http_get(url, out, resume_size=done, expected_size=size, displayed_filename=name,
                 tqdm_class=tqdm if progress else _Silent)
    if file_hash(part, digest) != digest:
        part.unlink()
        raise CorruptFileError(f"{name} was downloaded but its content does not match the hub's hash "
                               f"{digest}; the damaged copy was deleted. Run again to download it anew.")
    return part


class _Silent:
    """A progress bar that shows nothing (tests, quiet mode)."""

    def __init__(self, *args, **kwargs):
        pass

    def update(self, n=1):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        pass
