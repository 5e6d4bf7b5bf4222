"""What a server was asked for: one frozen dataclass shared by `nbkit serve` and `nbkit.colab.serve`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nbkit.limits import MAX_BODY_BYTES


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    out: Path
    host: str = "127.0.0.1"
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    allow_hosts: tuple[str, ...] = ()        # Host names besides this machine's, for a server without token
    max_queue: int = 16
    max_images: int = 16
    max_prompt_chars: int = 300
    max_body_bytes: int = MAX_BODY_BYTES
    preview_every: int | None = 64
    model: str = "mini"
    vqgan: str = "vqgan"
    clip: str | None = "clip-b32"
    upscaler: str | None = "esrgan-x4"       # name, weights file or folder; loaded by the first upscale
    cache: str | None = None

    @property
    def default_images(self) -> int:
        """Images a request that names no count gets (the official DALL·E mini app's)."""
        return min(4, self.max_images)
