"""Files from plain URLs (the upscalers' GitHub release assets) into `<cache>/releases/<name>/<sha256>/`,
with the hub downloads' progress bar, resume and hash check (`download`). NBKIT_RELEASES_URL names a
mirror that serves the same paths (tests: a local server).
"""

from __future__ import annotations

import os
from pathlib import Path

from nbkit.weights.cache_folders import offline
from nbkit.weights.download import download
from nbkit.weights.errors import OFFLINE, CorruptFileError, network_failure, unavailable
from nbkit.weights.registry import UPSCALER, RegisteredModel
from nbkit.weights.verify import read_verified, stamp, verified_ok, write_verified


def fetch_release(model: RegisteredModel, root: Path, progress: bool) -> Path:
    """A registered model's one file from its URL into `<root>/releases/<name>/<sha256>/`."""
    release = model.release
    folder = root / "releases" / model.name / release.sha256
    verified = read_verified(folder)
    if verified.get("complete") and verified_ok(folder, release.filename, verified):
        return folder
    files = (release.filename,)
    if offline():
        raise unavailable(model.name, folder, files, OFFLINE, kind=UPSCALER, url=release.url)
    url = os.environ.get("NBKIT_RELEASES_URL", "").rstrip("/")   # a mirror (tests: a local server)
    url = f"{url}/{release.url.split('/download/', 1)[1]}" if url else release.url
    try:
        part = download(url, root / "partial", release.sha256, release.size, release.filename, progress)
    except CorruptFileError:
        raise
    except Exception as error:  # only the network's and the server's failures are handled
        if (failure := network_failure(error, url, server="GitHub")) is None:
            raise
        raise unavailable(model.name, folder, files, *failure, kind=UPSCALER, url=release.url) from error
    folder.mkdir(parents=True, exist_ok=True)
    os.replace(part, folder / release.filename)
    write_verified(folder, {release.filename: stamp(folder / release.filename, release.sha256),
                            "complete": True, "url": release.url})
    return folder
