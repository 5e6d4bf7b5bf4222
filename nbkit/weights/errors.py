"""Why a model cannot be had, said once for every source (hub, W&B, release URLs) and per model kind.

`network_failure` tells the network's and the server's failures (what a user can act on) from
anything else (a bug, let through unchanged); `unavailable` builds the one-line message that says
what the cache lacks and what to do instead: for a DALL·E model, VQGAN, CLIP or translator the files to
copy into a folder, for an upscaler the .pth file to download.
"""

from __future__ import annotations

import errno
import http
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from nbkit.weights.registry import CLIP, DALLEBART, TRANSLATOR, UPSCALER, VQGAN


class ModelUnavailableError(RuntimeError):
    """The model cannot be had: unknown name, no network and no cached copy, missing extra, …"""


class CorruptFileError(ModelUnavailableError):
    """A file's bytes do not match the size or hash the hub publishes for it."""


OFFLINE = "offline mode is on (HF_HUB_OFFLINE/NBKIT_OFFLINE)"
_NETWORK_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN,
                   errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT}


def _connection_errors() -> tuple[type[BaseException], ...]:
    """Failures to reach a server at all, from whichever HTTP library did the asking (only one that
    is imported can have raised)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror, socket.herror]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout")),
                          ("urllib3", ("exceptions.ProtocolError", "exceptions.TimeoutError"))):
        for name in names:
            error = sys.modules.get(module)
            for attribute in name.split("."):
                error = getattr(error, attribute, None)
            if isinstance(error, type) and issubclass(error, BaseException):
                found.append(error)
    return tuple(found)


def _status(error: BaseException) -> int | None:
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def _causes(error: BaseException):
    """The error and what it wraps (W&B keeps the original in `.exc`), nearest first."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        wrapped = getattr(error, "exc", None)
        error = wrapped if isinstance(wrapped, BaseException) else error.__cause__   # not __context__


class Failure(NamedTuple):
    why: str        # what happened, for the message
    advice: str     # what to do first


CONNECT = "Connect to the internet"


def network_failure(error: BaseException, url: str | None = None,
                    server: str = "the hub") -> Failure | None:
    """Why asking the server failed, when it did not answer (the network) or answered with an error
    status, and what to do about it; None for anything else, which is a bug to let through unchanged."""
    for cause in _causes(error):
        if (status := _status(cause)) is not None and status >= 400:
            try:
                phrase = http.HTTPStatus(status).phrase
            except ValueError:
                phrase = "an error"
            where = url or getattr(cause.response, "url", None)
            why = f"{server} answered {status} {phrase}" + (f" for {where}" if where else "")
            if status >= 500:
                return Failure(why, "Try again later (the server is in trouble)")
            if server == "W&B":
                return Failure(why, "Check the artifact's name and your access (`wandb login`)")
            return Failure(why, "Check the name and your access (a gated or private repository needs a "
                                "token in HF_TOKEN)")
    for cause in _causes(error):
        connection = isinstance(cause, _connection_errors())
        if connection or (isinstance(cause, OSError) and cause.errno in _NETWORK_ERRNOS):
            text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            return Failure(f"{server} could not be reached ({type(cause).__name__}: {text[:200]})", CONNECT)
    return None


# What to put in a folder, per kind of model, when the cache cannot be filled (never another kind's list).
KIND_FILES = {
    DALLEBART: "config.json, flax_model.msgpack and the tokenizer files (vocab.json, merges.txt, "
               "tokenizer.json, …)",
    VQGAN: "config.json and flax_model.msgpack",
    CLIP: "config.json, flax_model.msgpack, the tokenizer files and preprocessor_config.json",
    TRANSLATOR: "config.json, pytorch_model.bin, source.spm, target.spm and vocab.json",
}
KIND_TITLES = {DALLEBART: "DALL·E model", VQGAN: "VQGAN", CLIP: "CLIP model", UPSCALER: "upscaler",
               TRANSLATOR: "translator"}


def unavailable(asked: str, folder: Path, filenames: Iterable[str], why: str,
                advice: str = CONNECT, kind: str | None = None,
                url: str | None = None) -> ModelUnavailableError:
    """The error for a model that is neither in the cache nor to be had now: what it lacks, why, what
    to do (per `kind`: the files to copy into a folder, or for an upscaler the file to download)."""
    missing = [name for name in filenames if not (folder / name).is_file()]
    if kind == UPSCALER:
        instead = (f"or download {url or 'its .pth file'} on a machine that is online and give that file's "
                   "path instead of the name")
    else:
        instead = (f"or copy its files ({KIND_FILES.get(kind, 'config.json, flax_model.msgpack, …')}) into "
                   "a folder and give that folder's path instead of the name")
    return ModelUnavailableError(
        f"{KIND_TITLES.get(kind, 'Model')} {asked!r} is not available: {why}, and the cache ({folder}) "
        f"lacks {', '.join(missing) or 'verified copies of its files'}. {advice}, {instead}, or point "
        "NBKIT_CACHE at a cache that has them (e.g. on Google Drive).")
