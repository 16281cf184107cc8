"""A small Hub-compatible HTTP server for tests: stores repos, commits and files in memory and serves them back.

It implements the endpoints that ``datasets.Dataset(Dict).push_to_hub``, ``huggingface_hub.HfApi`` (create_repo,
create_commit, repo_info, list_repo_tree, get_paths_info, hf_hub_download, DatasetCard.load/push_to_hub) and
``datasets.load_dataset(repo_id)`` use with ``HF_HUB_DISABLE_XET=1`` (plain LFS uploads):

    GET  /api/whoami-v2                                   POST /api/repos/create
    GET  /api/datasets/{id}[/revision/{rev}]              GET  /api/datasets/{id}/tree/{rev}[/{path}]
    POST /api/datasets/{id}/paths-info/{rev}              POST /api/datasets/{id}/preupload/{rev}
    POST /api/datasets/{id}/commit/{rev}   (ndjson)       GET  /api/datasets/{id}/refs
    POST /api/datasets/{id}/branch/{branch}               POST /api/validate-yaml
    POST /datasets/{id}.git/info/lfs/objects/batch        PUT  /lfs-upload/{sha256}
    GET|HEAD /datasets/{id}/resolve/{rev}/{path}   (Range supported)

Tokens are checked (401 for a missing or unknown token on writes; private repos are invisible to others), and
faults can be injected: :meth:`HubServer.fail_next` answers the next matching request with an HTTP error or drops
the connection. Every request is logged in :attr:`HubServer.requests`, with the bytes of its response in
:attr:`HubServer.sent`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_EXTENSIONS = (".parquet", ".arrow", ".wav", ".flac", ".mp3", ".bin", ".safetensors")


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class StoredFile:
    data: bytes
    lfs: bool

    @property
    def oid(self) -> str:
        return git_blob_oid(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    summary: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    owner: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int | None  # None: drop the connection
    remaining: int


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubServer:
    """In-memory Hub on ``127.0.0.1:port``; start with :meth:`start`, stop with :meth:`stop`.

    Args:
        port (`int`): port to listen on (0: any free port).
        tokens (`dict[str, str]`): accepted tokens and the user each belongs to.
    """

    def __init__(self, port: int = 0, tokens: dict[str, str] | None = None) -> None:
        self.tokens = dict(tokens or {})
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.sent: list[tuple[str, str, int]] = []  # (method, path, response body bytes) of every response
        self.faults: list[Fault] = []
        self.lock = threading.RLock()
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> HubServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self) -> None:
        with self.lock:
            self.repos.clear()
            self.lfs_objects.clear()
            self.requests.clear()
            self.sent.clear()
            self.faults.clear()

    def fail_next(self, method: str, path_regex: str, status: int | None = 500, times: int = 1) -> None:
        """Answer the next ``times`` requests matching ``method`` and ``path_regex`` with ``status`` (None: drop)."""
        with self.lock:
            self.faults.append(Fault(method.upper(), re.compile(path_regex), status, times))

    # ------------------------------------------------------------------ state helpers used by tests
    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        commit = self.repo(repo_id, repo_type).resolve(revision)
        assert commit is not None, f"no revision {revision!r} in {repo_id}"
        return {path: f.data for path, f in commit.files.items()}

    def all_stored_bytes(self) -> list[tuple[str, bytes]]:
        """Every byte the server holds: each file of each commit of each repo, and each LFS object."""
        out = [(f"lfs:{oid}", data) for oid, data in self.lfs_objects.items()]
        for repo in self.repos.values():
            for commit in repo.commits.values():
                out += [(f"{repo.repo_id}@{commit.oid[:8]}:{p}", f.data) for p, f in commit.files.items()]
                out.append((f"{repo.repo_id}@{commit.oid[:8]}:<message>", commit.summary.encode()))
        return out

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.remaining > 0 and fault.method == method and fault.pattern.search(path):
                    fault.remaining -= 1
                    return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: HubServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # ------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and self.command != "HEAD":
            self.wfile.write(body)
        self.server_hub.requests.append((self.command, self.path, status))
        self.server_hub.sent.append((self.command, self.path, 0 if head or self.command == "HEAD" else len(body)))

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        user = self.server_hub.tokens.get(token)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _require_user(self) -> str:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to access this resource.")
        return user

    def _repo(self, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        user = self._require_user() if write else self._user()
        repo = self.server_hub.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and user != repo.owner):
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        if write and user != repo.owner:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(unquote(revision))
        if commit is None:
            raise HubError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")
        return commit

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        hub = self.server_hub
        body = self._body() if method in ("POST", "PUT") else b""
        url = urlsplit(self.path)
        fault = hub.take_fault(method, url.path)
        if fault is not None:
            if fault.status is None:
                hub.requests.append((method, self.path, 0))
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self._json(fault.status, {"error": f"injected fault {fault.status}"})
            return
        try:
            with hub.lock:
                self._route(method, url.path, parse_qs(url.query), body)
        except HubError as err:
            headers = {"X-Error-Code": err.code} if err.code else {}
            headers["X-Error-Message"] = err.message
            self._json(err.status, {"error": err.message}, headers)

    # ------------------------------------------------------------------ routes
    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        parts = path.strip("/").split("/")
        if path == "/api/whoami-v2":
            user = self._require_user()
            return self._json(200, {"type": "user", "name": user, "orgs": [], "auth": {"type": "access_token"}})
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(json.loads(body))
        if path == "/api/validate-yaml" and method == "POST":
            return self._validate_yaml(json.loads(body))
        if parts[0] == "lfs-upload" and method == "PUT":
            oid = parts[1]
            if hashlib.sha256(body).hexdigest() != oid:
                raise HubError(400, "sha256 mismatch")
            self.server_hub.lfs_objects[oid] = body
            return self._send(200)
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in ("datasets", "models", "spaces"):
            repo_type, repo_id, rest = parts[1][:-1], f"{parts[2]}/{parts[3]}", parts[4:]
            return self._api(method, repo_type, repo_id, rest, query, body)
        if len(parts) >= 3 and parts[0] == "datasets" and parts[2].endswith(".git") and parts[3:] == [
            "info", "lfs", "objects", "batch",
        ]:
            return self._lfs_batch(f"{parts[1]}/{parts[2][:-4]}", json.loads(body))
        if len(parts) >= 5 and parts[0] == "datasets" and parts[3] == "resolve":
            repo = self._repo("dataset", f"{parts[1]}/{parts[2]}")
            commit = self._commit(repo, parts[4])
            return self._resolve(method, commit, unquote("/".join(parts[5:])))
        raise HubError(404, f"Not found: {method} {path}")

    def _api(self, method: str, repo_type: str, repo_id: str, rest: list[str], query: dict[str, list[str]], body: bytes) -> None:
        if method == "GET" and (not rest or rest[0] == "revision"):
            repo = self._repo(repo_type, repo_id)
            commit = self._commit(repo, rest[1] if rest else "main")
            return self._json(200, self._info(repo, commit))
        if method == "GET" and rest and rest[0] == "tree":
            repo = self._repo(repo_type, repo_id)
            commit = self._commit(repo, rest[1])
            recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
            return self._json(200, self._tree(commit, unquote("/".join(rest[2:])), recursive))
        if method == "POST" and rest and rest[0] == "paths-info":
            repo = self._repo(repo_type, repo_id)
            commit = self._commit(repo, rest[1])
            form = parse_qs(body.decode()) if body and not body.startswith(b"{") else json.loads(body or b"{}")
            paths = form.get("paths", [])
            return self._json(200, [e for p in paths for e in self._entries(commit, p.strip("/"), exact=True)])
        if method == "GET" and rest == ["refs"]:
            repo = self._repo(repo_type, repo_id)
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": o} for b, o in repo.branches.items()]
            return self._json(200, {"branches": branches, "converts": [], "tags": [], "pullRequests": []})
        if method == "POST" and rest and rest[0] == "branch":
            repo = self._repo(repo_type, repo_id, write=True)
            branch = unquote("/".join(rest[1:]))
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: {branch}")
            start = json.loads(body or b"{}").get("startingPoint") or "main"
            repo.branches[branch] = self._commit(repo, start).oid
            return self._json(200, {})
        if method == "POST" and rest and rest[0] == "preupload":
            repo = self._repo(repo_type, repo_id, write=True)
            commit = repo.resolve(unquote(rest[1]))
            files = []
            for f in json.loads(body)["files"]:
                lfs = f["path"].endswith(LFS_EXTENSIONS) or f["size"] > 10_000_000
                existing = commit.files.get(f["path"]) if commit else None
                remote = (existing.sha256 if lfs else existing.oid) if existing else None
                files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                              "oid": remote})
            return self._json(200, {"files": files, "commitOid": commit.oid if commit else None})
        if method == "POST" and rest and rest[0] == "commit":
            repo = self._repo(repo_type, repo_id, write=True)
            return self._create_commit(repo, unquote("/".join(rest[1:])), body)
        raise HubError(404, f"Not found: {method} api/{repo_type}s/{repo_id}/{'/'.join(rest)}")

    def _create_repo(self, payload: dict[str, Any]) -> None:
        user = self._require_user()
        namespace = payload.get("organization") or user
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a repo under {namespace}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{payload['name']}"
        url = f"{self.server_hub.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
        if (repo_type, repo_id) in self.server_hub.repos:
            return self._json(409, {"error": "You already created this repo", "url": url})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))  # new and old clients
        repo = Repo(repo_type, repo_id, user, private)
        init = Commit(uuid.uuid4().hex + "00000000", None, "initial commit", {
            ".gitattributes": StoredFile(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n", lfs=False)
        })
        repo.commits[init.oid] = init
        repo.branches["main"] = init.oid
        self.server_hub.repos[(repo_type, repo_id)] = repo
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict[str, Any]) -> None:
        content = payload.get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.S)
        if match:
            try:
                meta = yaml.safe_load(match.group(1)) or {}
            except yaml.YAMLError as err:
                raise HubError(400, f"Invalid YAML in README.md: {err}") from None
            if not isinstance(meta, dict):
                raise HubError(400, "YAML metadata must be a mapping")
            for key in ("tags", "task_categories", "size_categories", "source_datasets"):
                if key in meta and not (isinstance(meta[key], list) and all(isinstance(v, str) for v in meta[key])):
                    raise HubError(400, f'"{key}" must be a list of strings')
            if "license" in meta and not isinstance(meta["license"], (str, list)):
                raise HubError(400, '"license" must be a string or a list of strings')
        self._json(200, {"errors": [], "warnings": []})

    def _lfs_batch(self, repo_id: str, payload: dict[str, Any]) -> None:
        self._repo("dataset", repo_id, write=True)
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.server_hub.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.server_hub.url}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects})

    def _create_commit(self, repo: Repo, revision: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        parent = repo.resolve(revision)
        if parent is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        if header.get("parentCommit") and header["parentCommit"] != parent.oid:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(parent.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                data = self.server_hub.lfs_objects.get(value["oid"])
                if data is None:
                    raise HubError(422, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = StoredFile(data, lfs=True)
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for p in [p for p in files if p.startswith(prefix)]:
                    del files[p]
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        oid = hashlib.sha1(f"{parent.oid}{time.time_ns()}{uuid.uuid4()}".encode()).hexdigest()
        repo.commits[oid] = Commit(oid, parent.oid, header.get("summary", ""), files)
        repo.branches[revision] = oid
        prefix = "datasets/" if repo.repo_type == "dataset" else ""
        self._json(200, {"commitUrl": f"{self.server_hub.url}/{prefix}{repo.repo_id}/commit/{oid}", "commitOid": oid,
                         "success": True})

    # ------------------------------------------------------------------ read side
    def _info(self, repo: Repo, commit: Commit) -> dict[str, Any]:
        card = commit.files.get("README.md")
        card_data = None
        if card is not None:
            match = re.match(r"^---\s*\n(.*?)\n---\s*\n", card.data.decode(), re.S)
            card_data = yaml.safe_load(match.group(1)) if match else None
        return {
            "_id": repo.repo_id, "id": repo.repo_id, "author": repo.owner, "sha": commit.oid,
            "private": repo.private, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": (card_data or {}).get("tags", []), "cardData": card_data, "createdAt": repo.created,
            "lastModified": repo.created, "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        }

    def _entry(self, path: str, f: StoredFile) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": f.oid, "size": len(f.data), "path": path}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
        return entry

    def _entries(self, commit: Commit, path: str, exact: bool) -> list[dict[str, Any]]:
        if path in commit.files:
            return [self._entry(path, commit.files[path])]
        prefix = path + "/"
        if any(p.startswith(prefix) for p in commit.files):
            return [{"type": "directory", "oid": git_blob_oid(path.encode()), "size": 0, "path": path}]
        return []

    def _tree(self, commit: Commit, path: str, recursive: bool) -> list[dict[str, Any]]:
        path = path.strip("/")
        prefix = f"{path}/" if path else ""
        if path and path in commit.files:
            raise HubError(400, f"{path} is a file")
        below = sorted(p for p in commit.files if p.startswith(prefix))
        if path and not below:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        out: dict[str, dict[str, Any]] = {}
        for p in below:
            rel = p[len(prefix):].split("/")
            for depth in range(1, len(rel)):
                if not recursive and depth > 1:
                    break
                d = prefix + "/".join(rel[:depth])
                out.setdefault(d, {"type": "directory", "oid": git_blob_oid(d.encode()), "size": 0, "path": d})
            if recursive or len(rel) == 1:
                out[p] = self._entry(p, commit.files[p])
        return list(out.values())

    def _resolve(self, method: str, commit: Commit, path: str) -> None:
        f = commit.files.get(path)
        if f is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{f.oid}"', "Content-Type": "application/octet-stream",
                   "Accept-Ranges": "bytes"}
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(len(f.data))
        data, status = f.data, 200
        match = re.match(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and method == "GET":
            start = int(match.group(1) or 0)
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{min(end, len(data) - 1)}/{len(data)}"
            data, status = data[start : end + 1], 206
        self._send(status, data, headers, head=method == "HEAD")
