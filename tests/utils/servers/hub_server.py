"""A Hugging Face Hub look-alike on loopback, so the real clients can publish and load in tests.

``huggingface_hub``, ``datasets``, ``transformers`` and ``peft`` talk to it over real HTTP, unmocked:
repositories (model / dataset / space), commits (regular files inline, big or binary files through
the Git LFS "basic" transfer), branches and tags, file downloads (``resolve``, with ranges), the tree /
paths-info listings that ``HfFileSystem`` uses, and ``whoami``. State lives in a folder: one folder
per repository, one JSON file per commit (the full ``path -> blob`` manifest, so any commit sha is a
valid revision) and a content-addressed blob store shared by all repositories.

In a test, through the pytest plugin ``tests/utils/hub_plugin.py`` (fixture ``hub_server``), or directly::

    with HubServer(tmp_path / "hub") as hub:        # a background thread on a free 127.0.0.1 port
        env = hub.client_env(hf_home=tmp_path / "hf_home")
        subprocess.run([sys.executable, "push.py"], env={**os.environ, **env}, check=True)

The clients read ``HF_ENDPOINT`` (and ``HF_HUB_DISABLE_XET``) when they are *imported*: set the
variables from :meth:`HubServer.client_env` before the first import, or run the client in a subprocess.
Xet storage is not implemented, so ``HF_HUB_DISABLE_XET=1`` is required for LFS uploads.

Auth: ``hub.token`` writes to the namespaces ``hub.user`` and ``hub.org``; ``hub.read_token`` only
reads. Without a token, reads of public repositories work and every write gets 401; a wrong token gets
401 ``Invalid credentials in Authorization header``, as on the Hub. Private repositories are invisible
(401 / 404 ``RepoNotFound``) to anyone but their namespace.

Every request is recorded in ``hub.requests`` as ``(method, path, status)``; requests that matched no
route are also in ``hub.unhandled``, which a test can assert empty.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

DEFAULT_USER = "barred-tester"
DEFAULT_ORG = "barred"
DEFAULT_TOKEN = "hf_barred_fake_write_token"
DEFAULT_READ_TOKEN = "hf_barred_fake_read_token"

# Files stored with Git LFS, as in the .gitattributes the Hub writes into new repositories.
LFS_SUFFIXES = (
    ".arrow", ".bin", ".ckpt", ".gguf", ".gz", ".h5", ".msgpack", ".npy", ".npz", ".onnx",
    ".parquet", ".pickle", ".pkl", ".pt", ".pth", ".safetensors", ".tar", ".zip", ".zst",
)  # fmt: skip
LFS_MIN_SIZE = 10 * 1024 * 1024  # larger files go to LFS whatever their name
_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_SHA1 = re.compile(r"[0-9a-f]{40}")


class HubError(Exception):
    """An error answer: status, message, and the ``X-Error-Code`` the client maps to an exception."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any  # email.message.Message: case-insensitive
    body: bytes
    user: str | None  # None: anonymous
    can_write: bool

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as err:
            raise HubError(400, f"expected a JSON body: {err}") from None

    def flag(self, name: str) -> bool:
        return self.query.get(name, [""])[0].lower() in ("1", "true", "yes")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})


def git_hash(data: bytes) -> str:
    """The git blob id of ``data`` (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _is_private(payload: dict) -> bool:
    """Visibility from a create / settings payload (``visibility``, or the older ``private``)."""
    return payload.get("visibility", "private" if payload.get("private") else "public") != "public"


def _front_matter(text: str) -> dict | None:
    """The YAML block at the top of a README (None when absent); raises yaml.YAMLError when invalid."""
    match = re.match(r"^---\s*\n(.*?\n)?---\s*(\n|$)", text, re.S)
    if not match:
        return None
    data = yaml.safe_load(match.group(1) or "")
    if data is not None and not isinstance(data, dict):
        raise yaml.YAMLError(f"the metadata must be a mapping, found {type(data).__name__}")
    return data or {}


class RepoStore:
    """Repositories, commits and blobs in a folder.

    ``repos/<type>s/<namespace>/<name>/repo.json``: visibility and refs (branch/tag -> commit sha).
    ``repos/.../commits/<sha>.json``: parents, title, message, date, author and the file manifest
    ``{path: {"oid": git blob id, "size", "sha256", "lfs": bool}}``. ``blobs/<sha256>``: contents.
    Not thread-safe on its own: the server serialises calls with a lock.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self._ids = itertools.count()

    # blobs
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def put_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha256)
        if not path.exists():
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha256

    def file_entry(self, sha256: str, lfs: bool) -> dict:
        size = self.blob_path(sha256).stat().st_size
        oid = git_hash(lfs_pointer(sha256, size) if lfs else self.blob_path(sha256).read_bytes())
        return {"oid": oid, "size": size, "sha256": sha256, "lfs": lfs}

    # repositories
    def _dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / f"{repo_type}s" / repo_id

    def get_repo(self, repo_type: str, repo_id: str) -> dict | None:
        path = self._dir(repo_type, repo_id) / "repo.json"
        return json.loads(path.read_text()) if path.exists() else None

    def save_repo(self, repo: dict) -> None:
        _write_json(self._dir(repo["type"], repo["id"]) / "repo.json", repo)

    def create_repo(self, repo_type: str, repo_id: str, private: bool, author: str) -> dict:
        repo = {"type": repo_type, "id": repo_id, "private": private, "createdAt": _now(), "branches": {}, "tags": {}}
        attributes = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
        files = {".gitattributes": self.file_entry(self.put_blob(attributes.encode()), lfs=False)}
        self.add_commit(repo, "main", files, "initial commit", "", author)
        return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        shutil.rmtree(self._dir(repo_type, repo_id))

    # commits
    def get_commit(self, repo: dict, sha: str) -> dict:
        return json.loads((self._dir(repo["type"], repo["id"]) / "commits" / f"{sha}.json").read_text())

    def has_commit(self, repo: dict, sha: str) -> bool:
        return (self._dir(repo["type"], repo["id"]) / "commits" / f"{sha}.json").exists()

    def resolve(self, repo: dict, revision: str | None) -> str:
        """Commit sha of a branch, tag or sha; HubError RevisionNotFound otherwise."""
        revision = revision or "main"
        for prefix, refs in (("refs/heads/", repo["branches"]), ("refs/tags/", repo["tags"])):
            name = revision[len(prefix) :] if revision.startswith(prefix) else revision
            if name in refs:
                return refs[name]
        if _SHA1.fullmatch(revision) and self.has_commit(repo, revision):
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def add_commit(self, repo: dict, branch: str, files: dict, title: str, message: str, author: str) -> str:
        parent = repo["branches"].get(branch)
        seed = json.dumps([parent, files, title, message, time.time_ns(), next(self._ids)], sort_keys=True)
        sha = hashlib.sha1(seed.encode()).hexdigest()
        commit = {
            "id": sha,
            "parents": [parent] if parent else [],
            "title": title,
            "message": message,
            "date": _now(),
            "authors": [author],
            "files": files,
        }
        _write_json(self._dir(repo["type"], repo["id"]) / "commits" / f"{sha}.json", commit)
        repo["branches"][branch] = sha
        self.save_repo(repo)
        return sha

    def history(self, repo: dict, sha: str):
        """Commits from ``sha`` back to the first one, following first parents."""
        while sha:
            commit = self.get_commit(repo, sha)
            yield commit
            sha = commit["parents"][0] if commit["parents"] else None


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{threading.get_ident()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)  # readers never see half a file


# Route patterns, matched on the raw (still percent-encoded) path: a revision quoted by the client
# (``refs%2Fpr%2F1``) stays one segment; unquoted special refs (``refs/pr/1``) are accepted as well.
_API_REPO = r"/api/(?P<kind>models|datasets|spaces|kernels)/(?P<repo>[^/]+/[^/]+)"
_WEB_REPO = r"/(?:(?P<kind>datasets|spaces|kernels)/)?(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>refs/[^/]+/[^/]+|[^/]+)"
_ROUTES: list[tuple[str, str, str]] = [
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("DELETE", r"/api/repos/delete", "delete_repo"),
    ("PUT", _API_REPO + r"/settings", "update_settings"),
    ("GET", _API_REPO + r"(?:/revision/(?P<rev>.+))?", "repo_info"),
    ("GET", _API_REPO + r"/tree/" + _REV + r"(?:/(?P<path>.*))?", "tree"),
    ("POST", _API_REPO + r"/paths-info/(?P<rev>.+)", "paths_info"),
    ("GET", _API_REPO + r"/refs", "refs"),
    ("GET", _API_REPO + r"/commits/(?P<rev>.+)", "commits"),
    ("POST", _API_REPO + r"/branch/(?P<branch>.+)", "create_branch"),
    ("DELETE", _API_REPO + r"/branch/(?P<branch>.+)", "delete_branch"),
    ("POST", _API_REPO + r"/tag/(?P<rev>.+)", "create_tag"),
    ("DELETE", _API_REPO + r"/tag/(?P<tag>.+)", "delete_tag"),
    ("POST", _API_REPO + r"/preupload/(?P<rev>.+)", "preupload"),
    ("POST", _API_REPO + r"/commit/(?P<rev>.+)", "commit"),
    ("POST", _WEB_REPO + r"\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
    ("POST", r"/lfs-verify/(?P<oid>[0-9a-f]{64})", "lfs_verify"),
    ("GET", _WEB_REPO + r"/resolve/" + _REV + r"/(?P<path>.+)", "resolve"),
    ("HEAD", _WEB_REPO + r"/resolve/" + _REV + r"/(?P<path>.+)", "resolve"),
]


class HubServer:
    """The Hub API on ``http://127.0.0.1:<port>``, served by a thread; state in ``root``.

    Args:
        root: folder for repositories and blobs (created if missing).
        user, org: the account behind ``token`` and the organisation it may also write to.
        token, read_token: accepted bearer tokens (write and read-only).
        lfs_min_size: files at least this large are uploaded through LFS whatever their name.
        port: 0 picks a free port.
    """

    def __init__(
        self,
        root: os.PathLike | str,
        *,
        user: str = DEFAULT_USER,
        org: str = DEFAULT_ORG,
        token: str = DEFAULT_TOKEN,
        read_token: str = DEFAULT_READ_TOKEN,
        lfs_min_size: int = LFS_MIN_SIZE,
        port: int = 0,
    ):
        self.store = RepoStore(Path(root))
        self.user, self.org, self.token, self.read_token = user, org, token, read_token
        self._tokens = {token: (user, True), read_token: (user, False)}
        self.lfs_min_size = lfs_min_size
        self.requests: list[tuple[str, str, int]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._routes = [(method, re.compile(pattern + r"/?"), name) for method, pattern, name in _ROUTES]
        self._names = itertools.count(1)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> HubServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def client_env(self, hf_home: os.PathLike | str | None = None, token: bool = True) -> dict[str, str]:
        """Environment variables that point the Hugging Face clients at this server."""
        env = {"HF_ENDPOINT": self.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        if token:
            env["HF_TOKEN"] = self.token
        if hf_home is not None:
            env["HF_HOME"] = str(hf_home)
        return env

    def new_repo_id(self, stem: str = "repo", namespace: str | None = None) -> str:
        """A repo id not used yet on this server, e.g. ``barred-tester/dataset-7``."""
        return f"{namespace or self.user}/{stem}-{next(self._names)}"

    # dispatch (called by the request handler thread)
    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> Response:
        split = urlsplit(raw_path)
        try:
            user, can_write = self._authenticate(headers)
            for route_method, pattern, name in self._routes:
                match = pattern.fullmatch(split.path)
                if route_method == method and match:
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    request = Request(method, split.path, parse_qs(split.query), headers, body, user, can_write)
                    with self._lock:
                        return getattr(self, "_" + name)(request, **params)
            if re.search(r"/xet-(read|write)-token(/|$)", split.path):
                raise HubError(
                    501, "this test Hub has no Xet storage: set HF_HUB_DISABLE_XET=1 before importing huggingface_hub"
                )
            self.unhandled.append((method, raw_path))
            raise HubError(404, f"the test Hub has no route for {method} {split.path}")
        except HubError as err:
            one_line = " ".join(err.message.split()).encode("latin-1", "replace").decode("latin-1")
            error_headers = {"X-Error-Message": one_line, **err.headers}
            if err.code:
                error_headers["X-Error-Code"] = err.code
            return json_response({"error": err.message}, err.status, error_headers)
        except Exception:  # a bug in this server: say so in the client's error message
            return json_response({"error": "test Hub server error:\n" + traceback.format_exc()}, 500)

    # helpers
    def _authenticate(self, headers: Any) -> tuple[str | None, bool]:
        auth = headers.get("Authorization")
        if not auth:
            return None, False
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self._tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self._tokens[token.strip()]

    def _check_write(self, request: Request, namespace: str, what: str = "write to this repository") -> None:
        if request.user is None:
            raise HubError(401, f"You must be authenticated to {what}: pass a token (HF_TOKEN or token=...)")
        if not request.can_write:
            raise HubError(403, f"Your token is read-only: it cannot {what}")
        if namespace not in (self.user, self.org):
            raise HubError(403, f"You don't have the rights to {what} in the namespace '{namespace}'")

    def _repo(self, request: Request, kind: str, repo: str, write: bool = False) -> dict:
        """The repository if the requester may see it (and write to it); RepoNotFound otherwise."""
        repo_type = _REPO_TYPES.get(kind or "models", "model")
        data = self.store.get_repo(repo_type, repo)
        namespace = repo.split("/")[0]
        visible = data is not None and (
            not data["private"] or request.user is not None and namespace in (self.user, self.org)
        )
        if not visible:
            status = 401 if request.user is None else 404
            raise HubError(status, f"Repository not found: {repo_type} {repo}", "RepoNotFound")
        if write:
            self._check_write(request, namespace)
        return data

    def _web_url(self, repo: dict) -> str:
        prefix = "" if repo["type"] == "model" else f"{repo['type']}s/"
        return f"{self.url}/{prefix}{repo['id']}"

    def _files(self, repo: dict, revision: str | None) -> tuple[str, dict]:
        sha = self.store.resolve(repo, revision)
        return sha, self.store.get_commit(repo, sha)["files"]

    @staticmethod
    def _file_json(path: str, entry: dict) -> dict:
        out = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
        if entry["lfs"]:
            pointer_size = len(lfs_pointer(entry["sha256"], entry["size"]))
            out["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}
        return out

    @staticmethod
    def _folder_state(files: dict, folder: str) -> str | None:
        """A tree id for ``folder``: changes exactly when a file below it changes (None: no such folder)."""
        below = sorted(f"{path} {entry['oid']}" for path, entry in files.items() if path.startswith(folder + "/"))
        return hashlib.sha1("\n".join(below).encode()).hexdigest() if below else None

    def _path_json(self, repo: dict, sha: str, files: dict, path: str, expand: bool) -> dict | None:
        """Tree / paths-info entry of a file or folder (None when the path does not exist)."""
        if path in files:
            out = self._file_json(path, files[path])
        elif (tree_id := self._folder_state(files, path)) is not None:
            out = {"type": "directory", "oid": tree_id, "size": 0, "path": path}
        else:
            return None
        if expand:  # the last commit that changed the path
            state = out["oid"]
            last = None
            for commit in self.store.history(repo, sha):
                entry = commit["files"].get(path)
                if (entry["oid"] if entry else self._folder_state(commit["files"], path)) != state:
                    break
                last = commit
            out["lastCommit"] = {"id": last["id"], "title": last["title"], "date": last["date"]}
        return out

    # endpoints: account
    def _whoami(self, request: Request) -> Response:
        if request.user is None:
            raise HubError(401, "You must be authenticated: pass a token")
        role = "write" if request.can_write else "read"
        return json_response(
            {
                "type": "user",
                "id": "0" * 24,
                "name": request.user,
                "fullname": "Test User",
                "email": f"{request.user}@example.com",
                "emailVerified": True,
                "isPro": False,
                "orgs": [{"type": "org", "name": self.org, "fullname": self.org, "roleInOrg": "admin"}],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}},
            }
        )

    def _validate_yaml(self, request: Request) -> Response:
        try:
            _front_matter(request.json().get("content", ""))
        except yaml.YAMLError as err:
            return json_response({"errors": [{"message": f"Invalid YAML in README.md: {err}"}], "warnings": []}, 400)
        return json_response({"errors": [], "warnings": []})

    # endpoints: repositories
    def _create_repo(self, request: Request) -> Response:
        payload = request.json()
        name, namespace = payload.get("name", ""), payload.get("organization") or request.user
        repo_type = payload.get("type") or "model"
        self._check_write(request, namespace or "", "create a repository")
        if repo_type not in _REPO_TYPES.values() or not _NAME.fullmatch(name) or ".." in name or "--" in name:
            raise HubError(400, f"Invalid repository type or name: {repo_type} {name!r}")
        repo_id = f"{namespace}/{name}"
        if (existing := self.store.get_repo(repo_type, repo_id)) is not None:
            error = f"You already created this {repo_type} repo"
            return json_response({"error": error, "url": self._web_url(existing)}, 409)
        created = self.store.create_repo(repo_type, repo_id, _is_private(payload), request.user)
        return json_response({"url": self._web_url(created), "name": repo_id, "id": repo_id})

    def _delete_repo(self, request: Request) -> Response:
        payload = request.json()
        repo_id = f"{payload.get('organization') or request.user}/{payload.get('name')}"
        kind = f"{payload.get('type') or 'model'}s"
        self._repo(request, kind, repo_id, write=True)
        self.store.delete_repo(_REPO_TYPES[kind], repo_id)
        return json_response({})

    def _update_settings(self, request: Request, kind: str, repo: str) -> Response:
        data = self._repo(request, kind, repo, write=True)
        payload = request.json()
        if "visibility" in payload or "private" in payload:
            data["private"] = _is_private(payload)
        self.store.save_repo(data)
        return json_response({})

    def _repo_info(self, request: Request, kind: str, repo: str, rev: str | None = None) -> Response:
        data = self._repo(request, kind, repo)
        sha = self.store.resolve(data, rev)
        commit = self.store.get_commit(data, sha)
        siblings = []
        for path, entry in sorted(commit["files"].items()):
            sibling = {"rfilename": path}
            if request.flag("blobs"):
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    lfs = self._file_json(path, entry)["lfs"]
                    sibling["lfs"] = {"sha256": lfs["oid"], "size": lfs["size"], "pointerSize": lfs["pointerSize"]}
            siblings.append(sibling)
        card = None
        if "README.md" in commit["files"]:
            try:
                card = _front_matter(self.store.blob_path(commit["files"]["README.md"]["sha256"]).read_text())
            except (yaml.YAMLError, UnicodeDecodeError):
                card = None
        info = {
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
            "id": repo,
            "author": repo.split("/")[0],
            "sha": sha,
            "lastModified": commit["date"],
            "createdAt": data["createdAt"],
            "private": data["private"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": list((card or {}).get("tags") or []),
            "siblings": siblings,
            "usedStorage": sum(entry["size"] for entry in commit["files"].values()),
        }
        if card is not None:
            info["cardData"] = card
        if data["type"] == "model":
            info.update(
                modelId=repo,
                library_name=(card or {}).get("library_name"),
                pipeline_tag=(card or {}).get("pipeline_tag"),
            )
        return json_response(info)

    # endpoints: listing
    def _tree(self, request: Request, kind: str, repo: str, rev: str, path: str = "") -> Response:
        data = self._repo(request, kind, repo)
        sha, files = self._files(data, rev)
        path = path.strip("/")
        if path and self._folder_state(files, path) is None:
            raise HubError(404, f"{path} does not exist on {rev} (or is not a folder)", "EntryNotFound")
        prefix = path + "/" if path else ""
        recursive, expand = request.flag("recursive"), request.flag("expand")
        folders, entries = set(), []
        for file_path in sorted(files):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            folders.update(prefix + "/".join(parts[:i]) for i in range(1, min(depth, len(parts) - 1) + 1))
            if recursive or len(parts) == 1:
                entries.append(file_path)
        out = [self._path_json(data, sha, files, p, expand) for p in sorted(folders) + entries]
        return json_response(out)

    def _paths_info(self, request: Request, kind: str, repo: str, rev: str) -> Response:
        data = self._repo(request, kind, repo)
        sha, files = self._files(data, rev)
        if "json" in (request.headers.get("Content-Type") or ""):
            payload = request.json()
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:  # the client sends a form: paths=a&paths=b&expand=false
            form = parse_qs(request.body.decode())
            paths, expand = form.get("paths", []), form.get("expand", [""])[0].lower() in ("1", "true")
        found = [self._path_json(data, sha, files, p.strip("/"), expand) for p in paths]
        return json_response([entry for entry in found if entry is not None])

    def _refs(self, request: Request, kind: str, repo: str) -> Response:
        data = self._repo(request, kind, repo)

        def refs(names: dict, prefix: str) -> list[dict]:
            return [{"name": n, "ref": f"{prefix}{n}", "targetCommit": sha} for n, sha in sorted(names.items())]

        out = {
            "branches": refs(data["branches"], "refs/heads/"),
            "tags": refs(data["tags"], "refs/tags/"),
            "converts": [],
        }
        if request.flag("include_prs"):
            out["pullRequests"] = []
        return json_response(out)

    def _commits(self, request: Request, kind: str, repo: str, rev: str) -> Response:
        data = self._repo(request, kind, repo)
        history = self.store.history(data, self.store.resolve(data, rev))
        return json_response(
            [
                {
                    "id": c["id"],
                    "title": c["title"],
                    "message": c["message"],
                    "date": c["date"],
                    "authors": [{"user": a} for a in c["authors"]],
                }
                for c in history
            ]
        )

    # endpoints: refs
    def _create_branch(self, request: Request, kind: str, repo: str, branch: str) -> Response:
        data = self._repo(request, kind, repo, write=True)
        if branch.startswith("refs/") or not re.fullmatch(r"[\w.\-/]+", branch):
            raise HubError(400, f"Invalid reference for a branch: {branch}")
        if branch in data["branches"]:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        data["branches"][branch] = self.store.resolve(data, request.json().get("startingPoint"))
        self.store.save_repo(data)
        return json_response({})

    def _delete_branch(self, request: Request, kind: str, repo: str, branch: str) -> Response:
        data = self._repo(request, kind, repo, write=True)
        if branch == "main":
            raise HubError(403, "The main branch cannot be deleted")
        if branch not in data["branches"]:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        del data["branches"][branch]
        self.store.save_repo(data)
        return json_response({})

    def _create_tag(self, request: Request, kind: str, repo: str, rev: str) -> Response:
        data = self._repo(request, kind, repo, write=True)
        tag = request.json().get("tag", "")
        if tag in data["tags"]:
            raise HubError(409, f"Tag already exists: {tag}")
        data["tags"][tag] = self.store.resolve(data, rev)
        self.store.save_repo(data)
        return json_response({})

    def _delete_tag(self, request: Request, kind: str, repo: str, tag: str) -> Response:
        data = self._repo(request, kind, repo, write=True)
        if data["tags"].pop(tag, None) is None:
            raise HubError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
        self.store.save_repo(data)
        return json_response({})

    # endpoints: uploads
    def _branch_head(self, data: dict, rev: str) -> str:
        if rev not in data["branches"]:
            raise HubError(404, f"Invalid rev id: {rev} is not a branch (create it first)", "RevisionNotFound")
        return data["branches"][rev]

    def _preupload(self, request: Request, kind: str, repo: str, rev: str) -> Response:
        data = self._repo(request, kind, repo, write=True)
        if request.flag("create_pr"):
            raise HubError(501, "the test Hub does not support pull requests (create_pr=True)")
        files = self.store.get_commit(data, self._branch_head(data, rev))["files"]
        out = []
        for item in request.json().get("files", []):
            path, size = item["path"], int(item.get("size", 0))
            lfs = path.lower().endswith(LFS_SUFFIXES) or size >= self.lfs_min_size
            current = files.get(path)
            oid = None if current is None else (current["sha256"] if current["lfs"] else current["oid"])
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return json_response({"files": out})

    def _commit(self, request: Request, kind: str, repo: str, rev: str) -> Response:
        data = self._repo(request, kind, repo, write=True)
        if request.flag("create_pr"):
            raise HubError(501, "the test Hub does not support pull requests (create_pr=True)")
        head = self._branch_head(data, rev)
        lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "expected NDJSON lines, the first one {'key': 'header', ...}")
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, head):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(self.store.get_commit(data, head)["files"])
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = str(value.get("path", "")).strip("/")
            if not path or ".." in path.split("/"):
                raise HubError(400, f"Invalid path in commit: {value.get('path')!r}")
            if key == "file":
                content = (
                    base64.b64decode(value["content"])
                    if value.get("encoding") == "base64"
                    else value["content"].encode()
                )
                files[path] = self.store.file_entry(self.store.put_blob(content), lfs=False)
            elif key == "lfsFile":
                if not self.store.blob_path(value["oid"]).exists():
                    raise HubError(422, f"LFS object {value['oid']} of {path} was not uploaded")
                files[path] = self.store.file_entry(value["oid"], lfs=True)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                below = [p for p in files if p.startswith(path + "/")]
                if not below:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in below:
                    del files[p]
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        title = header.get("summary") or "Update"
        sha = self.store.add_commit(data, rev, files, title, header.get("description", ""), request.user)
        return json_response(
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{self._web_url(data)}/commit/{sha}",
                "pullRequestUrl": None,
            }
        )

    def _lfs_batch(self, request: Request, repo: str, kind: str | None = None) -> Response:
        self._repo(request, kind or "models", repo, write=True)
        payload = request.json()
        if payload.get("operation") != "upload":
            raise HubError(400, "the test Hub only supports LFS uploads")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict = {"oid": oid, "size": size, "authenticated": True}
            if not self.store.blob_path(oid).exists():  # no "actions": the client skips the upload
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-upload/{oid}", "header": {}},
                    "verify": {"href": f"{self.url}/lfs-verify/{oid}", "header": {}},
                }
            objects.append(entry)
        return json_response(
            {"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"}
        )

    def _lfs_upload(self, request: Request, oid: str) -> Response:
        # Like a presigned storage URL: no token needed, the content must match the announced sha256.
        if hashlib.sha256(request.body).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not match its sha256 {oid}")
        self.store.put_blob(request.body)
        return Response(200, b"", {"ETag": f'"{oid}"'})

    def _lfs_verify(self, request: Request, oid: str) -> Response:
        if request.user is None:
            raise HubError(401, "You must be authenticated to verify an LFS upload")
        path = self.store.blob_path(oid)
        if not path.exists() or path.stat().st_size != int(request.json().get("size", -1)):
            raise HubError(404, f"LFS object {oid} is missing or has another size")
        return json_response({"success": True})

    # endpoints: download
    def _resolve(self, request: Request, repo: str, rev: str, path: str, kind: str | None = None) -> Response:
        data = self._repo(request, kind or "models", repo)
        sha, files = self._files(data, rev)
        if path not in files:
            raise HubError(404, f"Entry not found: {path} at {rev}", "EntryNotFound", {"X-Repo-Commit": sha})
        entry = files[path]
        etag = f'"{entry["sha256"] if entry["lfs"] else entry["oid"]}"'
        headers = {
            "X-Repo-Commit": sha,
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": etag, "X-Linked-Size": str(entry["size"])})
        content = self.store.blob_path(entry["sha256"]).read_bytes()
        size, status = len(content), 200
        if match := re.fullmatch(r"bytes=(\d*)-(\d*)", request.headers.get("Range") or ""):
            start, end = match.groups()
            first = int(start) if start else max(size - int(end or 0), 0)
            last = min(int(end), size - 1) if start and end else size - 1
            if first >= size:
                return Response(416, b"", {**headers, "Content-Range": f"bytes */{size}"})
            content, status = content[first : last + 1], 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        return Response(status, content, headers)


class _Handler(BaseHTTPRequestHandler):
    """Reads one HTTP request, lets :meth:`HubServer.handle` answer it, writes the answer."""

    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries a Content-Length
    server_version = "hf-barred-test-hub"

    def _serve(self) -> None:
        hub: HubServer = self.server.hub  # type: ignore[attr-defined]
        response = hub.handle(self.command, self.path, self.headers, self._read_body())
        hub.requests.append((self.command, self.path, response.status))
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format: str, *args: Any) -> None:  # quiet: requests are in hub.requests
        pass
