"""A tiny stand-in for the Hugging Face Hub, for tests that exercise huggingface_hub's real code.

``LocalHub`` serves model repos laid out on disk as ``ROOT/{owner}/{name}/{files...}`` over
HTTP on 127.0.0.1, speaking the part of the Hub protocol that ``hf_hub_download`` and
``snapshot_download`` use (checked against huggingface_hub 2.4):

* ``HEAD|GET /{owner}/{name}/resolve/{revision}/{path}`` - the file, with ``X-Repo-Commit``,
  ``ETag`` (git blob sha1, or the sha256 for LFS-style files, which also get
  ``X-Linked-Etag``/``X-Linked-Size``), ``Content-Length`` and byte ``Range`` support;
* ``GET /api/models/{owner}/{name}[/revision/{revision}]`` - repo info (``sha``, ``siblings``);
* ``GET /api/models/{owner}/{name}/tree/{revision}[/{path}]`` - the file listing.

Every repo has exactly one commit: its sha is a hash of the repo's files, and the accepted
revisions are ``main`` and that sha. Errors carry ``X-Error-Code`` as the Hub does:
``RepoNotFound`` (401 without credentials, 404 with), ``RevisionNotFound`` and
``EntryNotFound`` (404). Uploads are not implemented.

Pointing a client at it: either run code in a subprocess with :func:`hub_env` +
:func:`run_python` (environment variables, read by huggingface_hub at import), or patch
``huggingface_hub.constants`` in-process with the :func:`hub_client` fixture. Both put
``HF_HOME`` and the cache under a temporary directory, so the real ``~/.cache/huggingface``
is never read or written.

Fixtures: ``hub_server`` (a started :class:`LocalHub`, stopped at teardown) and ``hub_client``
(in-process patching, see :class:`HubClient`). A test module enables them with
``from hub_server import hub_server_fixture, hub_client_fixture  # noqa: F401``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

#: Files with these suffixes are served the way the Hub serves LFS files.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".npy", ".h5", ".onnx")
#: ... as is any file at least this large.
LFS_MIN_SIZE = 10 * 1024 * 1024

_SUBPROCESS_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class _Entry:
    """One file of a repo, with the hashes the Hub would report for it."""

    path: str  # posix path inside the repo
    file: Path
    size: int
    sha256: str
    git_oid: str  # git blob sha1 of the file, or of its LFS pointer
    lfs: bool
    pointer_size: int


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LocalHub:
    """A threaded HTTP server on 127.0.0.1 serving repos from ``root/{owner}/{name}/``.

    Attributes:
        root: directory holding the repos.
        endpoint: ``"http://127.0.0.1:PORT"`` once started.
        requests: log of ``(method, path)`` for every request received (path without query).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.requests: list[tuple[str, str]] = []
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._hash_cache: dict[tuple[str, int, int], tuple[str, str]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> LocalHub:
        """Bind to a free port on 127.0.0.1 and serve in a daemon thread."""
        if self._server is not None:
            return self
        hub = self

        class Handler(_ResolveHandler):
            pass

        Handler.hub = hub
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="local-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent); later connections are refused."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- repos -----------------------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes] | str | Path,
        *,
        token: str | None = None,
    ) -> str:
        """Create (or replace) repo ``repo_id`` and return its commit sha.

        ``files`` maps repo paths (posix, may contain ``/``) to contents, or is a directory whose
        files are copied. With ``token``, the repo is private: only requests carrying
        ``Authorization: Bearer <token>`` see it; others get the Hub's "repo not found" answer.
        """
        owner, _, name = repo_id.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"repo_id must be 'owner/name', got {repo_id!r}")
        target = self.root / owner / name
        if target.exists():
            shutil.rmtree(target)
        if isinstance(files, (str, Path)):
            shutil.copytree(files, target)
        else:
            target.mkdir(parents=True)
            for rel, data in files.items():
                dest = target.joinpath(*rel.split("/"))
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
        with self._lock:
            if token is None:
                self._tokens.pop(repo_id, None)
            else:
                self._tokens[repo_id] = token
        return self.commit_of(repo_id)

    def commit_of(self, repo_id: str) -> str:
        """The fake 40-hex commit sha of ``repo_id`` (a hash over its paths and contents)."""
        digest = hashlib.sha1(repo_id.encode())
        for entry in self._entries(repo_id) or []:
            digest.update(f"{entry.path}\0{entry.sha256}\0".encode())
        return digest.hexdigest()

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def log(self) -> list[tuple[str, str]]:
        """A copy of the request log."""
        with self._lock:
            return list(self.requests)

    # -- internals -------------------------------------------------------------------------------
    def _repo_dir(self, repo_id: str) -> Path | None:
        owner, _, name = repo_id.partition("/")
        if not owner or not name or "/" in name or owner.startswith(".") or name.startswith("."):
            return None
        path = self.root / owner / name
        return path if path.is_dir() else None

    def _visible(self, repo_id: str, authorization: str | None) -> bool:
        if self._repo_dir(repo_id) is None:
            return False
        with self._lock:
            token = self._tokens.get(repo_id)
        return token is None or authorization == f"Bearer {token}"

    def _hashes(self, file: Path) -> tuple[str, str]:
        stat = file.stat()
        key = (str(file), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._hash_cache.get(key)
        if cached is None:
            sha256, data = hashlib.sha256(), file.read_bytes()
            sha256.update(data)
            cached = (sha256.hexdigest(), _git_blob_sha1(data))
            with self._lock:
                self._hash_cache[key] = cached
        return cached

    def _entries(self, repo_id: str) -> list[_Entry] | None:
        base = self._repo_dir(repo_id)
        if base is None:
            return None
        entries = []
        for file in sorted(p for p in base.rglob("*") if p.is_file()):
            rel = file.relative_to(base).as_posix()
            size = file.stat().st_size
            sha256, blob_sha1 = self._hashes(file)
            lfs = file.suffix in LFS_SUFFIXES or size >= LFS_MIN_SIZE
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
            entries.append(
                _Entry(
                    path=rel,
                    file=file,
                    size=size,
                    sha256=sha256,
                    git_oid=_git_blob_sha1(pointer) if lfs else blob_sha1,
                    lfs=lfs,
                    pointer_size=len(pointer),
                )
            )
        return entries


class _ResolveHandler(BaseHTTPRequestHandler):
    """Request handler; HTTP/1.0, so every connection closes after one response."""

    hub: LocalHub
    protocol_version = "HTTP/1.0"
    timeout = 10  # seconds a client may idle mid-request before the connection is dropped
    server_version = "LocalHub/1.0"

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _not_allowed(self) -> None:
        with self.hub._lock:
            self.hub.requests.append((self.command, urlsplit(self.path).path))
        self._send_json(405, {"error": "uploads are not implemented by the local test hub"}, head=False)

    do_POST = do_PUT = do_DELETE = _not_allowed

    # -- routing ---------------------------------------------------------------------------------
    def _dispatch(self, head: bool) -> None:
        url = urlsplit(self.path)
        with self.hub._lock:
            self.hub.requests.append((self.command, url.path))
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        try:
            if len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head)
            elif len(parts) >= 4 and parts[:2] == ["api", "models"]:
                self._api(parts[2:], parse_qs(url.query), head)
            else:
                self._send_json(404, {"error": "Not found"}, head)
        except (BrokenPipeError, ConnectionResetError):  # client went away mid-response
            pass

    def _check_repo(self, repo_id: str, revision: str, head: bool) -> list[_Entry] | None:
        """The repo's files if ``repo_id`` is visible at ``revision``; otherwise answer the error."""
        if not self.hub._visible(repo_id, self.headers.get("Authorization")):
            # The Hub answers 401 to anonymous requests for missing (or hidden) repos, 404 otherwise.
            status = 404 if self.headers.get("Authorization") else 401
            self._send_error(status, "RepoNotFound", "Repository not found", head)
            return None
        entries = self.hub._entries(repo_id) or []
        if revision not in ("main", self.hub.commit_of(repo_id)):
            self._send_error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
            return None
        return entries

    def _resolve(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
        entries = self._check_repo(repo_id, revision, head)
        if entries is None:
            return
        commit = self.hub.commit_of(repo_id)
        entry = next((e for e in entries if e.path == filename), None)
        if entry is None:
            self._send_error(404, "EntryNotFound", f"{filename} does not exist on \"{revision}\"", head, commit)
            return
        headers = {
            "X-Repo-Commit": commit,
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{_basename(filename)}"',
        }
        if entry.lfs:
            headers["ETag"] = f'"{entry.sha256}"'
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        else:
            headers["ETag"] = f'"{entry.git_oid}"'
        start, end, status = 0, entry.size - 1, 200
        range_header = self.headers.get("Range")
        if range_header:
            parsed = _parse_range(range_header, entry.size)
            if parsed is None:
                headers["Content-Range"] = f"bytes */{entry.size}"
                self._send(416, headers, b"", head)
                return
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        if head:
            self._send(status, headers, b"", head, length=end - start + 1)
            return
        with open(entry.file, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self._send(status, headers, body, head)

    def _api(self, parts: list[str], query: dict[str, list[str]], head: bool) -> None:
        # parts: [owner, name] | [owner, name, "revision", rev...] | [owner, name, "tree", rev, path...]
        if len(parts) < 2:
            self._send_json(404, {"error": "Not found"}, head)
            return
        repo_id = f"{parts[0]}/{parts[1]}"
        rest = parts[2:]
        if not rest or rest[0] == "revision":
            revision = "/".join(rest[1:]) or "main"
            entries = self._check_repo(repo_id, revision, head)
            if entries is None:
                return
            info = {
                "_id": self.hub.commit_of(repo_id)[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": parts[0],
                "sha": self.hub.commit_of(repo_id),
                "private": repo_id in self.hub._tokens,
                "disabled": False,
                "gated": False,
                "tags": [],
                "siblings": [{"rfilename": e.path} for e in entries],
            }
            self._send_json(200, info, head, commit=info["sha"])
        elif rest[0] == "tree" and len(rest) >= 2:
            entries = self._check_repo(repo_id, rest[1], head)
            if entries is None:
                return
            prefix = "/".join(rest[2:]).strip("/")
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            self._send_json(200, _tree(entries, prefix, recursive), head, commit=self.hub.commit_of(repo_id))
        else:
            self._send_json(404, {"error": "Not found"}, head)

    # -- responses -------------------------------------------------------------------------------
    def _send_error(self, status: int, code: str, message: str, head: bool, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        if commit is not None:
            headers["X-Repo-Commit"] = commit
        self._send_json(status, {"error": message}, head, extra=headers)

    def _send_json(
        self,
        status: int,
        payload: object,
        head: bool,
        *,
        commit: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        headers = {"Content-Type": "application/json; charset=utf-8", **(extra or {})}
        if commit is not None:
            headers["X-Repo-Commit"] = commit
        self._send(status, headers, json.dumps(payload).encode(), head)

    def _send(
        self, status: int, headers: dict[str, str], body: bytes, head: bool, length: int | None = None
    ) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("Connection", "close")
        self.end_headers()
        if not head and body:
            self.wfile.write(body)


def _basename(filename: str) -> str:
    return filename.rsplit("/", 1)[-1].replace('"', "")


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> inclusive (start, end); None if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            start, end = max(size - n, 0), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
    except ValueError:
        return None
    end = min(end, size - 1)
    if start > end or start >= size:
        return None
    return start, end


def _tree(entries: list[_Entry], prefix: str, recursive: bool) -> list[dict[str, object]]:
    """The Hub's ``/api/models/{repo}/tree`` listing of folder ``prefix`` (files, then folders)."""
    base = f"{prefix}/" if prefix else ""
    files: list[dict[str, object]] = []
    folders: dict[str, None] = {}  # ordered set
    for entry in entries:
        if not entry.path.startswith(base):
            continue
        parents = entry.path[len(base):].split("/")[:-1]
        for depth in range(1, (len(parents) if recursive else min(len(parents), 1)) + 1):
            folders.setdefault(base + "/".join(parents[:depth]), None)
        if parents and not recursive:
            continue
        item: dict[str, object] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": entry.path}
        if entry.lfs:
            item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        files.append(item)
    dirs = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d} for d in folders]
    return files + dirs


# -- pointing huggingface_hub at the server -----------------------------------------------------


def hub_env(endpoint: str, home: str | Path, *, offline: bool = False) -> dict[str, str]:
    """Environment variables that make huggingface_hub use ``endpoint`` and a cache under ``home``."""
    home = Path(home)
    return {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def run_python(code: str, env: Mapping[str, str], *, timeout: float = _SUBPROCESS_TIMEOUT_S) -> str:
    """Run ``code`` with this interpreter in a fresh process and return its stdout.

    The child gets the current environment minus every ``HF_*``/``HUGGINGFACE_*`` variable (and
    any proxy or offline setting), plus ``env`` (typically :func:`hub_env`). Raises
    ``AssertionError`` with the child's output if it exits non-zero.
    """
    scrubbed = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))
        and k.upper() not in {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "DO_NOT_TRACK", "DISABLE_TELEMETRY"}
    }
    scrubbed.update(env)
    scrubbed.setdefault("PYTHONHASHSEED", "0")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=scrubbed,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"subprocess exited with {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc.stdout


@dataclass
class HubClient:
    """What :func:`hub_client` patched: the endpoint, ``HF_HOME`` and the hub cache directory."""

    endpoint: str
    home: Path
    cache_dir: Path
    _monkeypatch: pytest.MonkeyPatch

    def set_offline(self, offline: bool = True) -> None:
        """Toggle huggingface_hub's offline mode (``HF_HUB_OFFLINE``) for this process."""
        from huggingface_hub import constants

        self._monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


def patch_huggingface_hub(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: str | Path) -> HubClient:
    """Point the already-imported huggingface_hub at ``endpoint`` with ``HF_HOME=home``.

    Patches the module constants read at import time (the same ones huggingface_hub's own tests
    patch) and the token environment, all undone by ``monkeypatch`` at teardown.
    """
    from huggingface_hub import constants

    home = Path(home)
    cache_dir = home / "hub"
    values = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache_dir),
        "HUGGINGFACE_HUB_CACHE": str(cache_dir),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": True,
    }
    for name, value in values.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return HubClient(endpoint=endpoint, home=home, cache_dir=cache_dir, _monkeypatch=monkeypatch)


# -- pytest fixtures ----------------------------------------------------------------------------


@pytest.fixture(name="hub_server")
def hub_server_fixture(tmp_path: Path) -> Iterator[LocalHub]:
    """A started :class:`LocalHub` serving ``tmp_path/hub_repos``; stopped at teardown."""
    with LocalHub(tmp_path / "hub_repos") as hub:
        yield hub


@pytest.fixture(name="hub_client")
def hub_client_fixture(hub_server: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubClient:
    """In-process huggingface_hub pointed at ``hub_server``, with ``HF_HOME=tmp_path/hf_home``."""
    return patch_huggingface_hub(monkeypatch, hub_server.endpoint, tmp_path / "hf_home")
