"""A real `python -m nbkit serve` with the tiny fixture models, on a free port, for the HTTP tests
(tests/server/test_server.py) and the page's browser tests.

    with running_server(tmp_path, "--max-queue", "2") as server:
        urllib.request.urlopen(server.url + "api/info")

Compiled programs are kept in the session's compilation cache (tests/conftest.py) for all the servers a
test session starts (--compilation-cache), so only the first one compiles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from conftest import COMPILATION_CACHE, GOLDEN, ROOT

TINY_UPSCALER = GOLDEN / "esrgan-tiny-x4" / "model.safetensors"
TINY_MODELS = ("--model", str(GOLDEN / "dallebart-tiny"), "--vqgan", str(GOLDEN / "vqgan-tiny"),
               "--clip", str(GOLDEN / "clip-tiny"), "--upscaler", str(TINY_UPSCALER))
READY = "nbkit serving on "


@dataclasses.dataclass
class Server:
    url: str                          # ends with "/" (and with "t/<token>/" when a token is set)
    out: Path                         # its output folder
    process: subprocess.Popen
    log: Path                         # its stderr
    stdout: list[str] = dataclasses.field(default_factory=list)

    def messages(self) -> str:
        return self.log.read_text(errors="replace")


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def start_server(tmp_path: Path, *extra_args: str, out: Path | None = None, timeout: float = 180) -> Server:
    """Starts the server and returns once it has printed its address (or fails with its messages)."""
    out = out or tmp_path / "out"
    log = tmp_path / f"server-{len(list(tmp_path.glob('server-*.log')))}.log"
    command = [sys.executable, "-m", "nbkit", "serve", *TINY_MODELS, "--port", "0", "--out", str(out),
               "--compilation-cache", str(COMPILATION_CACHE), *extra_args]
    with open(log, "wb") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True,
                                   cwd=ROOT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    server = Server("", out, process, log)
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            process.kill()
            raise TimeoutError(f"The server printed no address in {timeout} s:\n"
                               f"{server.messages()}") from None
        if line is None:
            process.wait()
            raise RuntimeError(f"The server exited ({process.returncode}) before serving:\n"
                               f"{server.messages()}")
        server.stdout.append(line)
        if line.startswith(READY):
            server.url = line[len(READY):].strip()
            return server


def stop_server(server: Server, timeout: float = 60) -> int:
    """Ctrl-C, as a person would stop it; killed if it does not stop in `timeout` s. Its exit code."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode


@contextlib.contextmanager
def running_server(tmp_path: Path, *extra_args: str, out: Path | None = None) -> Iterator[Server]:
    """A served `python -m nbkit serve` with the tiny models (port 0), stopped with SIGINT after."""
    server = start_server(tmp_path, *extra_args, out=out)
    try:
        yield server
    finally:
        stop_server(server)


def module_server(folder: Path, *extra_args: str) -> Iterator[Server]:
    """`running_server` for a module-scoped fixture (`yield from module_server(...)`): one server for the
    module's tests, which must have stopped cleanly (SIGINT) once they are done."""
    with running_server(folder, *extra_args) as running:
        yield running
    assert running.process.returncode in (0, 130), running.messages()


def gated_replica(pipe, name: str = "local"):
    """An in-process replica whose batches each wait, before they start, until the test lets them go: the
    tests that need a job queued or running behind another, or a batch in flight, open the gate
    themselves instead of racing the worker. `started` gets each batch's size as it is held."""
    from nbkit.server.replicas.local import InProcessReplica

    class GatedReplica(InProcessReplica):
        def __init__(self):
            super().__init__(pipe, name)
            self.started: queue.Queue = queue.Queue()
            self._allowed = threading.Semaphore(0)
            self._open = False

        def _events(self, tasks, settings, progress_every, delivered):
            self.started.put(len(tasks))
            if not self._open:
                if not self._allowed.acquire(timeout=300):
                    raise TimeoutError("the test never let this batch go")
            yield from super()._events(tasks, settings, progress_every, delivered)

        def wait_started(self, timeout: float = 120) -> int:
            """The size of the next batch the worker has begun (and is held)."""
            return self.started.get(timeout=timeout)

        def let_go(self, batches: int = 1) -> None:
            for _ in range(batches):
                self._allowed.release()

        def open(self) -> None:
            """Every batch from now on runs at once (and the one held now)."""
            self._open = True
            self._allowed.release()

    return GatedReplica()


@contextlib.contextmanager
def gated_server(pipe, out: Path, **options) -> Iterator[tuple]:
    """An in-process server on the tiny models whose batches wait for the test: (Running, gated replica)."""
    from nbkit.server.launch import Running, bind
    from nbkit.server.options import ServerOptions
    from nbkit.server.replicas.base import ReplicaPool

    runner = gated_replica(pipe)
    settings = {"clip": str(GOLDEN / "clip-tiny"), "model": pipe.name, "upscaler": str(TINY_UPSCALER),
                **options}
    running = Running(ReplicaPool([runner]), ServerOptions(out=out, **settings), bind("127.0.0.1", 0),
                      log=lambda line: None).start()
    try:
        yield running, runner
    finally:
        runner.open()
        running.stop()
