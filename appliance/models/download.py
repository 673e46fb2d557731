"""`appliance download`: jina-embeddings-v3's six files from the Hugging Face Hub, laid out flat.

The Hub keeps the ONNX graph and its weights in `onnx/` and the tokenizer/config at the root;
the appliance wants all six side by side. Each file is fetched with `hf_hub_download` into a
staging folder inside the target (same filesystem, so moving it into place is a rename, never a
copy of 2.3 GB), pinned to ONE commit resolved up front so the six files cannot come from two
revisions. `HF_TOKEN` and `HF_ENDPOINT` are honoured by huggingface_hub itself.

Resuming: a dropped connection is resumed in place with an HTTP Range request by huggingface_hub's
downloader. A run that is killed keeps every file it completed: a file already in the target is
kept when it matches what the Hub announces for it (size, then its sha256 or git blob hash), so
running the command again fetches only what is missing or wrong (huggingface_hub 1.x+ does not
keep the partial file of the one interrupted).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.models.verify import first_line, human_size, run_verify

if TYPE_CHECKING:
    from huggingface_hub import HfFileMetadata

DEFAULT_REPO = "jinaai/jina-embeddings-v3"
# file in the Hub repository -> its name in the model folder
REPO_FILES: dict[str, str] = {
    "onnx/model.onnx": "model.onnx",
    "onnx/model.onnx_data": "model.onnx_data",
    "tokenizer.json": "tokenizer.json",
    "tokenizer_config.json": "tokenizer_config.json",
    "special_tokens_map.json": "special_tokens_map.json",
    "config.json": "config.json",
}
STAGING_DIR = ".download"  # inside the target: huggingface_hub's local_dir (and its .cache/)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_CHUNK = 8 * 1024 * 1024


class DownloadError(Exception):
    """The download cannot go on; the message says why and what to do."""


@dataclass
class DownloadResult:
    folder: Path
    repo_id: str
    revision: str
    commit: str
    fetched: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def download_model(
    repo_id: str,
    target: Path,
    *,
    revision: str = "main",
    endpoint: str | None = None,
    token: str | None = None,
) -> DownloadResult:
    """Fetch the six files of `repo_id` at `revision` into `target` (flat); raise `DownloadError`.

    `endpoint` and `token` default to huggingface_hub's own (`HF_ENDPOINT`, `HF_TOKEN`).
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    target.mkdir(parents=True, exist_ok=True)
    staging = target / STAGING_DIR
    with _hub_errors(repo_id, revision, endpoint):
        first = get_hf_file_metadata(
            hf_hub_url(repo_id, "config.json", revision=revision, endpoint=endpoint), token=token, endpoint=endpoint
        )
        commit = first.commit_hash
        if not commit:
            raise DownloadError(
                f"{endpoint or 'HF_ENDPOINT'} did not say which commit `{revision}` is "
                "(no X-Repo-Commit header): is HF_ENDPOINT a Hugging Face Hub?"
            )
        _say(
            f"{repo_id} @ {revision} is commit {commit}"
            + ("" if revision == commit else f" (pin it: --revision {commit})")
        )
        result = DownloadResult(folder=target, repo_id=repo_id, revision=revision, commit=commit)
        for remote, local in REPO_FILES.items():
            meta = get_hf_file_metadata(
                hf_hub_url(repo_id, remote, revision=commit, endpoint=endpoint), token=token, endpoint=endpoint
            )
            dest = target / local
            if dest.is_file() and _matches(dest, meta):
                _say(f"{local}: already there ({human_size(dest.stat().st_size)}, matches the Hub)")
                result.kept.append(local)
                continue
            fetched = Path(
                hf_hub_download(repo_id, remote, revision=commit, local_dir=staging, endpoint=endpoint, token=token)
            )
            if not _matches(fetched, meta):
                fetched.unlink()
                raise DownloadError(
                    f"{remote}: the downloaded file does not match the Hub's size/hash "
                    f"({meta.size} bytes, {meta.etag}); run the command again"
                )
            os.replace(fetched, dest)
            _say(f"{local}: fetched {human_size(dest.stat().st_size)} from {remote}")
            result.fetched.append(local)
    shutil.rmtree(staging, ignore_errors=True)
    return result


def _matches(path: Path, meta: HfFileMetadata) -> bool:
    """Size, then the content hash the Hub uses as ETag (sha256 for LFS files, git blob sha1 else)."""
    size = path.stat().st_size
    if meta.size is not None and size != meta.size:
        return False
    etag = (meta.etag or "").lower()
    if _SHA256.match(etag):
        digest = hashlib.sha256()
    elif _GIT_SHA1.match(etag):
        digest = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    else:
        return meta.size is not None  # no hash to compare against: the size is all there is
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest() == etag


_NETWORK_MODULES = {"httpx", "httpx2", "httpcore", "requests", "urllib3", "huggingface_hub"}


@contextmanager
def _hub_errors(repo: str, rev: str, endpoint: str | None) -> Iterator[None]:
    """Turn huggingface_hub's (and its HTTP client's) exceptions into a `DownloadError` with the fix."""
    from huggingface_hub import constants, errors

    hub = endpoint or constants.ENDPOINT
    try:
        yield
    except DownloadError:
        raise
    except errors.GatedRepoError as exc:
        raise DownloadError(
            f"{repo} is gated: accept its terms on the model page, then set HF_TOKEN to a token of that account"
        ) from exc
    except errors.RepositoryNotFoundError as exc:
        raise DownloadError(
            f"repository {repo} not found on {hub} (if it is private, set HF_TOKEN); "
            f"jina-embeddings-v3 is {DEFAULT_REPO}"
        ) from exc
    except errors.RevisionNotFoundError as exc:
        raise DownloadError(
            f"{repo} has no revision `{rev}`: pass a branch, tag or commit that exists with --revision"
        ) from exc
    except errors.RemoteEntryNotFoundError as exc:
        raise DownloadError(
            f"{repo} @ {rev} lacks a file the appliance needs ({first_line(exc)}); it needs "
            f"{', '.join(REPO_FILES)}: is it a jina-embeddings-v3 ONNX repository?"
        ) from exc
    except Exception as exc:
        if not isinstance(exc, OSError) and type(exc).__module__.split(".")[0] not in _NETWORK_MODULES:
            raise  # a bug, not the network: keep the traceback
        raise DownloadError(
            f"cannot download from {hub}: {first_line(exc)}; check the network "
            "(HF_ENDPOINT for a mirror) and run the same command again"
        ) from exc


def _say(line: str) -> None:
    print(f"download: {line}", flush=True)


def run_download(repo_id: str, target: Path, revision: str) -> int:
    """`appliance download`: fetch, then verify the folder; the exit status of the command."""
    for client in ("httpx", "httpx2"):  # one INFO line per HTTP request would bury the progress bars
        logging.getLogger(client).setLevel(logging.WARNING)
    try:
        result = download_model(repo_id, target, revision=revision)
    except DownloadError as exc:
        print(f"appliance: error: {exc}", file=sys.stderr)
        return 1
    _say(f"{len(result.fetched)} fetched, {len(result.kept)} already there, into {target}")
    return run_verify(target)
