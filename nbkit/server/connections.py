"""uvicorn's HTTP/1.1 protocol with a deadline for a request's line and headers.

uvicorn bounds an idle kept-alive connection (timeout_keep_alive) but not one that connects and never
finishes its headers: that connection is held for ever, and enough of them hold every place
(limit_concurrency counts them). Here each connection must deliver a request's line and headers within
HEADER_TIMEOUT_S of connecting (or of its previous response): a fixed deadline, not reset by each byte,
so a client that sends one byte a second gains nothing. Bodies are bounded in routes/common.py (read_json).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from nbkit.limits import HEADER_TIMEOUT_S


class HeaderDeadlineProtocol(H11Protocol):
    """H11Protocol that closes a connection whose request headers are not in by the deadline."""

    header_timeout_s: float = HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()          # nothing was asked yet: no answer is owed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:       # the request's headers are in
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()                                 # the next request's headers, on a kept connection
