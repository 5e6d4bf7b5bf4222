"""Starting and stopping a server: the one launcher behind `nbkit serve` and `nbkit.colab.serve`.

The socket is bound before the models load, so a port in use fails at once and connections made as soon
as the address is printed wait instead of failing. uvicorn serves the app (app.py) on it; the job
queue's worker threads (one per replica) run beside it and are stopped first, so the batches in flight
are finished and saved; then the replicas the server started (Ray Serve's) are stopped.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import uvicorn

from nbkit.limits import KEEP_ALIVE_S, MAX_CONNECTIONS, MAX_HEADER_BYTES
from nbkit.output.atomic import sweep_temporaries
from nbkit.server.app import create_app
from nbkit.server.connections import HeaderDeadlineProtocol
from nbkit.server.metrics import ServerMetrics
from nbkit.server.options import ServerOptions
from nbkit.server.queue.admission import JobQueue
from nbkit.server.replicas.base import NoReplicaReady, ReplicaPool
from nbkit.server.replicas.local import LocalPool

READY_TIMEOUT_S = 600.0          # a replica loads its model within this (DALL·E Mega on a CPU: minutes)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: any free port)."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        raise ValueError(f"--host {host} is not an address of this machine ({error.strerror}).") from None
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise OSError(f"Cannot listen on {host}:{port} ({error.strerror}): pick another --port, or 0 for "
                      "any free one.") from None
    sock.listen(128)
    return sock


def address(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"t/{token}/" if token else "")


class _Uvicorn(uvicorn.Server):
    """uvicorn that tells the job queue to stop as soon as it is asked to stop (Ctrl-C): the worker then
    finishes the batch in flight and ends the waiting jobs, so their event streams close."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]):
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            print("nbkit: stopping — finishing the batch in flight (Ctrl-C again to quit at once)",
                  file=sys.stderr, flush=True)
        self._on_exit()
        super().handle_exit(sig, frame)


class Running:
    """One server: the job queue's workers (one per replica of `pool`) and uvicorn, on a socket already
    bound (see `bind`). The pool is stopped with the server."""

    def __init__(self, pool: ReplicaPool, options: ServerOptions, sock: socket.socket,
                 on_ready: Callable[[], None] | None = None, log: Callable[[str], None] | None = None):
        self.options, self.sock, self.pool = options, sock, pool
        self.port = sock.getsockname()[1]
        self.url = address(options.host, self.port, options.token)
        self.queue: JobQueue
        self.metrics = ServerMetrics(queue_length=lambda: self.queue.info()["jobs_waiting"],
                                     replicas_ready=lambda: len(pool.ready()))
        swept = sweep_temporaries(options.out)
        if swept:
            (log or _to_stderr)(f"nbkit: removed {len(swept)} temporary file(s) a crash left in "
                                f"{options.out}")
        self.queue = JobQueue(pool, options.out, options.max_queue, options.preview_every, log, self.metrics)
        self.app = create_app(self.queue, options, self.port, on_ready, self.metrics)
        # log_config=None: uvicorn leaves the process's logging as it is (a notebook kernel's too);
        # its warnings and errors reach stderr through Python's last-resort handler.
        # A slow or idle client is bounded (nbkit.limits, docs/security.md): its headers within
        # HEADER_TIMEOUT_S (connections.py), an idle kept-alive connection KEEP_ALIVE_S, the headers'
        # size MAX_HEADER_BYTES, and at most MAX_CONNECTIONS at once (503 beyond).
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=5, http=HeaderDeadlineProtocol,
                                timeout_keep_alive=KEEP_ALIVE_S, limit_concurrency=MAX_CONNECTIONS,
                                h11_max_incomplete_event_size=MAX_HEADER_BYTES)
        self.server = _Uvicorn(config, on_exit=self.queue.stop)
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        """Serves until stopped (Ctrl-C in the main thread, or `stop`); the batch in flight is finished
        and saved before this returns."""
        self.queue.start()
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.queue.stop()
            self.queue.join()
            self.sock.close()
            self.pool.stop()

    def start(self, timeout: float = 60.0) -> Running:
        """Serves from a background thread (a notebook's kernel stays free); returns once it answers."""
        self._thread = threading.Thread(target=self.serve, name="nbkit-server", daemon=True)
        self._thread.start()
        waited = threading.Event()
        while not self.server.started and self._thread.is_alive() and timeout > 0:
            waited.wait(0.05)
            timeout -= 0.05
        if not self.server.started:
            raise RuntimeError("The server did not start (see the messages above).")
        return self

    def stop(self, timeout: float | None = 120.0) -> None:
        self.queue.stop()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)


def launch(options: ServerOptions, port: int, load: Callable[[], Any], *, background: bool,
           announce: Callable[[Running, Any], None] | None = None,
           log: Callable[[str], None] | None = None) -> Running:
    """The one way a server starts: bind host:port, then `load()` the Pipeline, or a ReplicaPool (so a port
    in use fails before the models load), then serve; with a pool, once one replica is ready (or none can
    be: it then serves and answers new jobs 503 until one is). `announce(running, loaded)` is called once
    it answers.
    background=False (the command): serves in this thread until Ctrl-C or SIGTERM, both of which finish
    the batch in flight first. background=True (a notebook): returns the running server at once.
    `log`: where the queue's one-line messages go (default stderr)."""
    sock = bind(options.host, port)
    try:
        loaded = load()
        pool = loaded if isinstance(loaded, ReplicaPool) else LocalPool(loaded)
    except BaseException:
        sock.close()
        raise
    try:
        pool.wait_ready(1, READY_TIMEOUT_S)
    except NoReplicaReady as error:
        (log or _to_stderr)(f"nbkit: {error} New jobs get 503 until one is ready.")
    except BaseException:
        sock.close()
        pool.stop()
        raise
    running: Running | None = None

    def ready() -> None:
        if announce is not None and not background:
            announce(running, loaded)

    running = Running(pool, options, sock, on_ready=ready, log=log)
    if background:
        running.start()
        if announce is not None:
            announce(running, loaded)
        return running
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    running.serve()
    return running
