"""A fake Hugging Face Hub on 127.0.0.1 (for HF_ENDPOINT), serving a model folder as huggingface.co does.

`HEAD/GET /{repo}/resolve/{revision}/{path}` with `X-Repo-Commit` and an `ETag` (the git blob
sha1 for small files); the ONNX files are "LFS" files whose resolve answer is a 302 to a second
server (the CDN) carrying `X-Linked-Etag` (sha256) and `X-Linked-Size`, and the CDN honours
`Range`. It can drop a connection after N bytes, to check that a broken download resumes.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from appliance.models.download import REPO_FILES

REPO = "test-org/tiny-jina-v3"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_FILES = {"onnx/model.onnx", "onnx/model.onnx_data"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeHub:
    """Two loopback servers (hub + CDN) over the files of one repository."""

    files: dict[str, bytes]
    requests: list[Request] = field(default_factory=list)
    drop_after: dict[str, int] = field(default_factory=dict)  # CDN path -> bytes sent before dropping, once
    gated: bool = False
    hub_url: str = ""
    cdn_url: str = ""

    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.files[path]).hexdigest()

    def git_sha1(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def gets(self, suffix: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and r.path.endswith(suffix)]


def _handler(hub: FakeHub, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep pytest's output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            hub.requests.append(Request(self.command, self.path, dict(self.headers)))
            if role == "cdn":
                self._cdn(body)
            else:
                self._resolve()

        def _resolve(self) -> None:
            prefix = f"/{REPO}/resolve/"
            if not self.path.startswith(prefix):
                return self._error(401, "RepoNotFound")  # the Hub answers 401 for unknown repos
            if hub.gated and self.headers.get("authorization") != "Bearer hf_test_token":
                return self._error(401, "GatedRepo")
            revision, _, path = self.path[len(prefix):].partition("/")
            if revision not in ("main", COMMIT):
                return self._error(404, "RevisionNotFound")
            if path not in hub.files:
                return self._error(404, "EntryNotFound", commit=True)
            if path in LFS_FILES:  # LFS: metadata on the redirect, bytes from the CDN
                self.send_response(302)
                self.send_header("Location", f"{hub.cdn_url}/blobs/{path}")
                self.send_header("X-Linked-Etag", f'"{hub.sha256(path)}"')
                self.send_header("X-Linked-Size", str(len(hub.files[path])))
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            self._send_bytes(path, etag=hub.git_sha1(path), body=self.command == "GET")
            return None

        def _cdn(self, body: bool) -> None:
            path = self.path.removeprefix("/blobs/")
            if path not in hub.files:
                return self._error(404, "EntryNotFound")
            self._send_bytes(path, etag=hub.sha256(path), body=body)
            return None

        def _send_bytes(self, path: str, etag: str, body: bool) -> None:
            data = hub.files[path]
            start = 0
            if (ranged := self.headers.get("Range", "")).startswith("bytes="):
                start = int(ranged.removeprefix("bytes=").split("-")[0])
            chunk = data[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{etag}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.end_headers()
            if not body:
                return
            cut = hub.drop_after.pop(self.path, None)
            if cut is not None:  # send part of the body, then drop the connection
                self.wfile.write(chunk[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(chunk)

        def _error(self, status: int, code: str, commit: bool = False) -> None:
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            if commit:
                self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextmanager
def serve_fake_hub(model_dir: Path) -> Iterator[FakeHub]:
    """The fake Hub (and its CDN) on two loopback ports, serving the model folder's six files."""
    hub = FakeHub(files={remote: (model_dir / local).read_bytes() for remote, local in REPO_FILES.items()})
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub, role)) for role in ("hub", "cdn")]
    hub.hub_url, hub.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield hub
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
