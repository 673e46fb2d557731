"""`appliance download` against a fake Hugging Face Hub on 127.0.0.1 (HF_ENDPOINT).

The fake serves the tiny jina model the way huggingface.co does: `HEAD/GET
/{repo}/resolve/{revision}/{path}` with `X-Repo-Commit` and an `ETag` (the git blob sha1 for
small files); the ONNX files are "LFS" files whose resolve answer is a 302 to a second server
(the CDN) carrying `X-Linked-Etag` (sha256) and `X-Linked-Size`, and the CDN honours `Range`.
It can drop a connection after N bytes, to check that a broken download resumes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from appliance.models.download import REPO_FILES, STAGING_DIR, DownloadError, download_model
from appliance.spec.modelinfo import JINA_FILES

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


@pytest.fixture
def fake_hub(tiny_jina_dir: Path) -> Iterator[FakeHub]:
    with serve_fake_hub(tiny_jina_dir) as hub:
        yield hub


@pytest.fixture(autouse=True)
def _quiet_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # huggingface_hub's own cache stays in the test's folder
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def _run_cli(hub: FakeHub, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh process: HF_ENDPOINT and HF_TOKEN are read as a user sets them."""
    env = dict(os.environ, HF_ENDPOINT=hub.hub_url, HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1")
    env.pop("HF_TOKEN", None)
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "appliance.cli", "download", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_download_cli_lays_six_files_out_flat_and_verifies_them(fake_hub: FakeHub, tmp_path: Path,
                                                                  tiny_jina_dir: Path) -> None:
    target = tmp_path / "model"
    result = _run_cli(fake_hub, REPO, "--to", str(target))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in target.iterdir()) == sorted(JINA_FILES)  # flat, staging removed
    for name in JINA_FILES:
        assert (target / name).read_bytes() == (tiny_jina_dir / name).read_bytes(), name
    assert f"is commit {COMMIT}" in result.stdout and f"--revision {COMMIT}" in result.stdout
    assert "verify: ok:" in result.stdout


def test_download_pins_every_file_to_the_commit_the_revision_resolved_to(fake_hub: FakeHub, tmp_path: Path) -> None:
    result = download_model(REPO, tmp_path / "model", endpoint=fake_hub.hub_url)
    assert result.commit == COMMIT
    resolves = [r for r in fake_hub.requests if "/resolve/" in r.path]
    # one look-up of `main`, everything after it at the commit: all six files come from one revision
    assert [r.path for r in resolves if "/resolve/main/" in r.path] == [f"/{REPO}/resolve/main/config.json"]
    assert {r.path.split("/resolve/")[1].split("/")[0] for r in resolves[1:]} == {COMMIT}
    assert len(fake_hub.gets("")) == 6


def test_download_sends_hf_token_from_the_environment(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.gated = True
    refused = _run_cli(fake_hub, REPO, "--to", str(tmp_path / "a"))
    assert refused.returncode == 1
    assert "is gated" in refused.stderr and "HF_TOKEN" in refused.stderr

    accepted = _run_cli(fake_hub, REPO, "--to", str(tmp_path / "b"), token="hf_test_token")
    assert accepted.returncode == 0, accepted.stderr
    hub_requests = [r for r in fake_hub.requests if "/resolve/" in r.path]
    assert all(r.headers.get("authorization") == "Bearer hf_test_token" for r in hub_requests[-12:])


def test_download_resumes_a_dropped_connection_with_a_range_request(fake_hub: FakeHub, tmp_path: Path,
                                                                     tiny_jina_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub writes what it received in 10 MB chunks: all of the tiny model's 3.5 MB would
    # sit in one unwritten chunk when the connection drops. With 64 KB chunks the drop lands mid-file.
    from huggingface_hub import constants

    chunk = 64 * 1024
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    data_path = "/blobs/onnx/model.onnx_data"
    cut = 16 * chunk
    assert len(fake_hub.files["onnx/model.onnx_data"]) > 2 * cut
    fake_hub.drop_after[data_path] = cut

    download_model(REPO, tmp_path / "model", endpoint=fake_hub.hub_url)

    attempts = fake_hub.gets(data_path)
    assert len(attempts) == 2
    assert "range" not in {k.lower() for k in attempts[0].headers}
    assert attempts[1].headers.get("Range") == f"bytes={cut}-"  # only the missing part was asked for
    assert (tmp_path / "model" / "model.onnx_data").read_bytes() == (tiny_jina_dir / "model.onnx_data").read_bytes()


def test_download_again_fetches_only_missing_or_wrong_files(fake_hub: FakeHub, tmp_path: Path,
                                                            tiny_jina_dir: Path) -> None:
    target = tmp_path / "model"
    download_model(REPO, target, endpoint=fake_hub.hub_url)
    (target / "model.onnx_data").unlink()
    tokenizer = target / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes().replace(b"<unk>", b"<UNK>"))  # same size, other bytes
    fake_hub.requests.clear()

    result = download_model(REPO, target, endpoint=fake_hub.hub_url)

    assert sorted(result.fetched) == ["model.onnx_data", "tokenizer.json"]
    assert sorted(result.kept) == ["config.json", "model.onnx", "special_tokens_map.json", "tokenizer_config.json"]
    assert len(fake_hub.gets("")) == 2
    assert tokenizer.read_bytes() == (tiny_jina_dir / "tokenizer.json").read_bytes()
    assert not (target / STAGING_DIR).exists()


def test_download_names_the_missing_revision(fake_hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="has no revision `v9`.*--revision"):
        download_model(REPO, tmp_path / "model", revision="v9", endpoint=fake_hub.hub_url)


def test_download_of_an_unknown_repository_says_which_one_to_use(fake_hub: FakeHub, tmp_path: Path) -> None:
    result = _run_cli(fake_hub, "someone/not-there", "--to", str(tmp_path / "model"))
    assert result.returncode == 1
    assert "repository someone/not-there not found" in result.stderr
    assert "jinaai/jina-embeddings-v3" in result.stderr


def test_download_of_a_repository_without_the_onnx_files_says_what_it_needs(fake_hub: FakeHub,
                                                                             tmp_path: Path) -> None:
    del fake_hub.files["onnx/model.onnx_data"]
    with pytest.raises(DownloadError, match="lacks a file the appliance needs.*onnx/model.onnx_data"):
        download_model(REPO, tmp_path / "model", endpoint=fake_hub.hub_url)


def test_download_reports_an_unreachable_endpoint_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"cannot download from http://127\.0\.0\.1:9: .*run the same command"):
        download_model(REPO, tmp_path / "model", endpoint="http://127.0.0.1:9")


def test_repo_files_map_onto_the_six_files_the_appliance_serves() -> None:
    assert sorted(REPO_FILES.values()) == sorted(JINA_FILES)
