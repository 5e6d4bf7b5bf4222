"""A stand-in for the Hugging Face hub on 127.0.0.1: serves fixture folders in the hub's URL layout
so that tests run the real `huggingface_hub` client (set HF_ENDPOINT to `MockHub.url`).

Routes: HEAD/GET `/{org}/{name}/resolve/{revision}/{file}` with the headers the client needs
(X-Repo-Commit, ETag = sha256 for LFS-like files or the git blob sha1, Content-Length) and Range
requests answered with 206. Errors carry the hub's X-Error-Code, as the client expects. `failing`
maps a file name (or "*" for every request) to an error status (e.g. 503) to answer with instead, as a
hub in trouble would.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from pathlib import Path
from urllib.parse import unquote

LFS_SUFFIXES = (".msgpack", ".txt")


def commit_of(repo: str) -> str:
    return hashlib.sha1(repo.encode()).hexdigest()


def etag_of(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix in LFS_SUFFIXES and path.name != "merges.txt":
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class MockHub:
    def __init__(self, repos: dict[str, Path], bytes_per_second: float | None = None,
                 commits: dict[str, str] | None = None):
        self.repos = {repo: Path(folder) for repo, folder in repos.items()}
        self.commits = {repo: (commits or {}).get(repo) or commit_of(repo) for repo in self.repos}
        self.bytes_per_second = bytes_per_second
        self.failing: dict[str, int] = {}      # file name or "*" → error status to answer with
        self.requests: list[tuple[str, str, str | None]] = []   # (method, path, Range header)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> MockHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _handler(self):
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _error(self, code: int, error_code: str, commit: str | None = None):
                self.send_response(code)
                if error_code:
                    self.send_header("X-Error-Code", error_code)
                    self.send_header("X-Error-Message", error_code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            def _serve(self, body: bool):
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                parts = unquote(self.path.split("?")[0]).lstrip("/").split("/", 4)
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._error(404, "RepoNotFound")
                repo, revision, filename = "/".join(parts[:2]), parts[3], parts[4]
                if status := hub.failing.get(filename) or hub.failing.get("*"):
                    return self._error(status, "")
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound")
                commit = hub.commits[repo]
                if revision not in ("main", commit):
                    return self._error(404, "RevisionNotFound")
                path = hub.repos[repo] / filename
                if not path.is_file():
                    return self._error(404, "EntryNotFound", commit)
                data = path.read_bytes()
                start = 0
                if self.headers.get("Range", "").startswith("bytes="):
                    start = int(self.headers["Range"][6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{etag_of(path)}"')
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Connection", "close")    # so that a stopped hub answers nothing more
                self.end_headers()
                if body:
                    self._send_slowly(data[start:])

            def _send_slowly(self, data: bytes):
                chunk = 1 << 18
                for offset in range(0, len(data), chunk):
                    try:
                        self.wfile.write(data[offset:offset + chunk])
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    if hub.bytes_per_second:
                        time.sleep(chunk / hub.bytes_per_second)

        return Handler

