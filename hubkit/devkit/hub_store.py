"""The loopback hub's storage: repos, commits and blobs on disk (see `hubkit.devkit.local_hub` for the layout)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
import time
from pathlib import Path

TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# How URLs name a repo: /api/{models|datasets|spaces}/{ns}/{name} in the API, /[datasets/|spaces/]{ns}/{name} for
# files (resolve, LFS)
REPO_API = r"/api/(?P<t>models|datasets|spaces)/(?P<rid>[^/]+/[^/]+)"
REPO_PAGE = r"/(?:(?P<t>datasets|spaces)/)?(?P<rid>[^/]+/[^/]+)"
LFS_SUFFIXES = (".parquet", ".safetensors", ".bin", ".arrow", ".png", ".jpg", ".pt", ".pth", ".gguf", ".npy", ".zip")
LFS_THRESHOLD = 10 * 1024 * 1024  # bigger files go through LFS whatever their name
MAX_JSON_BODY, MAX_COMMIT_BODY, MAX_LFS_OBJECT = 64 << 20, 512 << 20, 50 << 30
GITATTRIBUTES = b"".join(b"*%s filter=lfs diff=lfs merge=lfs -text\n" % s.encode() for s in LFS_SUFFIXES)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_SHA1, _SHA256 = re.compile(r"[0-9a-f]{40}"), re.compile(r"[0-9a-f]{64}")


class _HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers=None, extra=None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.extra = status, message, code, headers, extra


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _check_path(path: object) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/") or "\0" in path:
        raise _HttpError(400, f"invalid path in repo: {path!r}")
    return path


def _file_entry(path: str, ent: list) -> dict:
    kind, oid, size = ent
    if kind != "lfs":
        return {"type": "file", "oid": oid, "size": size, "path": path}
    ptr = _pointer(oid, size)
    return {"type": "file", "oid": _git_sha1(ptr), "size": size, "path": path,
            "lfs": {"oid": oid, "size": size, "pointerSize": len(ptr)}}


def _dir_entry(commit: str, path: str) -> dict:
    return {"type": "directory", "oid": hashlib.sha1(f"{commit}:{path}".encode()).hexdigest(), "size": 0, "path": path}


class _Store:
    """On-disk repos, commits and object stores; `lock` serialises every write."""

    def __init__(self, root: Path):
        self.root, self.lock = root, threading.RLock()
        for sub in ("objects", "lfs", "tmp", "repos"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def dir(self, rtype: str, rid: str) -> Path:
        parts = rid.split("/")
        if rtype not in PREFIX or len(parts) != 2 or not all(_NAME.fullmatch(p) and ".." not in p for p in parts):
            raise _HttpError(404, f"Repository Not Found: invalid repo id {rid!r}", "RepoNotFound")
        return self.root / "repos" / f"{rtype}s" / parts[0] / parts[1]

    def load(self, rtype: str, rid: str) -> dict | None:
        p = self.dir(rtype, rid) / "repo.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def save(self, rtype: str, rid: str, meta: dict) -> None:
        _atomic_write(self.dir(rtype, rid) / "repo.json", json.dumps(meta, indent=1).encode())

    def commit(self, rtype: str, rid: str, oid: str) -> dict:
        return json.loads((self.dir(rtype, rid) / "commits" / f"{oid}.json").read_text())

    def resolve(self, rtype: str, rid: str, meta: dict, rev: str) -> str:
        if rev in meta["refs"]:
            return meta["refs"][rev]
        if _SHA1.fullmatch(rev) and (self.dir(rtype, rid) / "commits" / f"{rev}.json").is_file():
            return rev
        raise _HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def new_commit(self, rtype: str, rid: str, parent: str | None, files: dict, message: str) -> str:
        oid = hashlib.sha1(f"{rid}{parent}{time.time_ns()}{secrets.token_hex(8)}".encode()).hexdigest()
        doc = {"parent": parent, "message": message, "time": time.time(), "files": files}
        _atomic_write(self.dir(rtype, rid) / "commits" / f"{oid}.json", json.dumps(doc).encode())
        return oid

    def put_blob(self, data: bytes) -> list:
        sha = _git_sha1(data)
        if not (self.root / "objects" / sha).is_file():
            _atomic_write(self.root / "objects" / sha, data)
        return ["blob", sha, len(data)]

    def create(self, rtype: str, rid: str, owner: str, private: bool) -> None:
        oid = self.new_commit(rtype, rid, None, {".gitattributes": self.put_blob(GITATTRIBUTES)}, "initial commit")
        self.save(rtype, rid, {"owner": owner, "private": private, "created": time.time(), "refs": {"main": oid}})


