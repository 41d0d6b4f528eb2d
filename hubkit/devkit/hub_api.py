"""The loopback hub's HTTP API: one request handler, dispatched by the route table below.

Repos, files, commits, LFS and README.md validation live here; who may do what (tokens, roles, visibility, gating)
and the routes that report it (whoami-v2, auth-check) live in `hub_auth`, mixed into the handler.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit

from .hub_auth import AUTH_ROUTES, _AccessRules
from .hub_store import (_NAME, _SHA256, LFS_SUFFIXES, LFS_THRESHOLD, MAX_COMMIT_BODY, MAX_JSON_BODY, MAX_LFS_OBJECT,
                        PREFIX, REPO_API, REPO_PAGE, TYPES, _check_path, _dir_entry, _file_entry, _git_sha1, _HttpError,
                        _pointer)

log = logging.getLogger("hubkit.devkit.local_hub")

_T, _P = REPO_API, REPO_PAGE
UPLOAD = "upload to a repository"  # the action a read token is refused, in the Hub's words
ROUTES = [(m, re.compile(rx), name) for m, rx, name in AUTH_ROUTES + [
    ("POST", r"/api/repos/create", "_create"),
    ("DELETE", r"/api/repos/delete", "_delete"),
    ("POST", r"/api/validate-yaml", "_validate_yaml"),
    ("GET", _T + r"(?:/revision/(?P<rev>[^/]+))?", "_info"),
    ("GET", _T + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "_tree"),
    ("POST", _T + r"/paths-info/(?P<rev>[^/]+)", "_paths_info"),
    ("POST", _T + r"/preupload/(?P<rev>[^/]+)", "_preupload"),
    ("POST", _T + r"/commit/(?P<rev>[^/]+)", "_commit"),
    ("POST", _T + r"/branch/(?P<rev>[^/]+)", "_branch"),
    ("PUT", _T + r"/settings", "_settings"),
    ("POST", _P + r"\.git/info/lfs/objects/batch", "_lfs_batch"),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "_lfs_put"),
    ("GET HEAD", _P + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "_resolve"),
]]


class _Handler(_AccessRules, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections are dropped after this many seconds
    server: "_Server"  # noqa: F821  (hubkit.devkit.local_hub._Server)

    def log_message(self, fmt, *args):  # request lines only: tokens travel in headers, never in URLs
        log.debug("local hub: " + fmt, *args)

    def setup(self):
        super().setup()
        self.server.conns.add(self.connection)

    def finish(self):
        self.server.conns.discard(self.connection)
        super().finish()

    def _dispatch(self) -> None:
        self.hub, self.store, self._consumed = self.server.hub, self.server.hub._store, False
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        if self.hub.request_hook is not None:
            self.hub.request_hook(self.command, url.path)
        try:
            for methods, rx, name in ROUTES:
                if self.command in methods.split() and (match := rx.fullmatch(url.path.rstrip("/") or "/")):
                    kw = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    if "rid" in kw:
                        kw["rtype"] = TYPES.get(kw.pop("t", ""), "model")
                    return getattr(self, name)(**kw)
            raise _HttpError(404, "Not Found")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (e.g. the server is stopping)
        except Exception as e:  # noqa: BLE001 - always answer; a bug must not kill the connection silently
            if not isinstance(e, _HttpError):
                log.exception("local hub: internal error on %s %s", self.command, url.path)
                e = _HttpError(500, "internal error")
            hdr = {"X-Error-Message": e.message, **({"X-Error-Code": e.code} if e.code else {}), **(e.headers or {})}
            if not self._consumed and self.headers.get("Content-Length", "0") != "0":
                # Request body left unread: the connection cannot be reused, and the client must be told so, or it
                # sends its next request on a socket this side is closing.
                self.close_connection, hdr["Connection"] = True, "close"
            self._send_json(e.status, {"error": e.message, **(e.extra or {})}, hdr)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _send_json(self, status: int, obj, headers=None, ctype="application/json") -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        for k, v in {"Content-Type": ctype, "Content-Length": str(len(data)), **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _iter_body(self, limit: int):
        """Yield the request body in chunks, refusing more than `limit` bytes (Content-Length is required)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise _HttpError(411, "send a Content-Length (chunked bodies are not supported)")
        length = self.headers.get("Content-Length") or "0"
        remaining = int(length) if length.isdigit() else -1
        if not 0 <= remaining <= limit:
            raise _HttpError(413, f"request body larger than {limit} bytes (or bad Content-Length)")
        while remaining:
            if not (chunk := self.rfile.read(min(remaining, 1 << 20))):
                raise _HttpError(400, "truncated request body")
            remaining -= len(chunk)
            yield chunk
        self._consumed = True

    def _body(self, limit: int = MAX_JSON_BODY) -> bytes:
        return b"".join(self._iter_body(limit))

    def _json(self) -> dict:
        try:
            obj = json.loads(self._body() or b"{}")
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            raise _HttpError(400, "request body must be a JSON object")
        return obj

    @property
    def base(self) -> str:
        return f"http://{self.headers.get('Host') or self.hub.netloc}"

    def _files(self, rtype: str, rid: str, rev: str, content: bool = True) -> tuple[dict, str, dict]:
        """(repo metadata, commit oid, {path: entry}) at `rev`; `content`: the caller serves files (gating applies)."""
        meta = self._repo(rtype, rid, content=content)
        oid = self.store.resolve(rtype, rid, meta, rev)
        return meta, oid, self.store.commit(rtype, rid, oid)["files"]

    # -- account and repo routes -------------------------------------------------------------------------------
    def _validate_yaml(self) -> None:
        """The Hub's README.md check: JSON {errors, warnings} [{message}], 400 when there is an error (huggingface_hub
        parses the body whatever the status, then raises ValueError on the 400)."""
        from hubkit.cards.metadata import card_problems, card_warnings

        body = self._json()
        content, rtype = body.get("content"), body.get("repoType") or "model"
        if not isinstance(content, str) or rtype not in PREFIX:
            problems, warnings = [f"send {{content: str, repoType: {'|'.join(PREFIX)}}}"], []
        else:
            problems, warnings = card_problems(content, rtype), card_warnings(content, rtype)
        self._send_json(400 if problems else 200, {"errors": [{"message": p} for p in problems],
                                                   "warnings": [{"message": w} for w in warnings]})

    def _create(self) -> None:
        body = self._json()
        user = self._need_write_token("create a repository")
        name, ns, rtype = str(body.get("name") or ""), body.get("organization") or user, body.get("type") or "model"
        if "/" in name:
            ns, name = name.split("/", 1)
        if rtype not in PREFIX or not _NAME.fullmatch(name) or not _NAME.fullmatch(str(ns)):
            raise _HttpError(400, f"invalid repo name or type: {ns}/{name} ({rtype})")
        if ns != user:
            raise _HttpError(403, f'You don\'t have the rights to create a {rtype} under the namespace "{ns}"')
        vis = body.get("visibility")
        private = vis in ("private", "protected") if vis is not None else bool(body.get("private"))
        rid = f"{ns}/{name}"
        url = f"{self.base}/{PREFIX[rtype]}{rid}"
        with self.store.lock:
            if self.store.load(rtype, rid) is not None:
                raise _HttpError(409, "You already created this repo", extra={"url": url})
            self.store.create(rtype, rid, ns, private)
        self._send_json(200, {"url": url, "name": rid})

    def _delete(self) -> None:
        body = self._json()
        rtype, rid = body.get("type") or "model", f"{body.get('organization') or self._user()}/{body.get('name')}"
        self._repo(rtype, rid, write="delete a repository")
        with self.store.lock:
            shutil.rmtree(self.store.dir(rtype, rid))
        self._send_json(200, {})

    def _settings(self, rtype: str, rid: str) -> None:
        self._repo(rtype, rid, write="change repository settings")
        body = self._json()
        private = body["visibility"] in ("private", "protected") if "visibility" in body else body.get("private")
        with self.store.lock:
            meta = self.store.load(rtype, rid)
            meta["private"] = meta["private"] if private is None else bool(private)
            self.store.save(rtype, rid, meta)
        self._send_json(200, {})

    def _branch(self, rtype: str, rid: str, rev: str) -> None:
        self._repo(rtype, rid, write="create a branch")
        body = self._json()
        if not _NAME.fullmatch(rev):
            raise _HttpError(400, f"invalid branch name {rev!r}")
        with self.store.lock:
            meta = self.store.load(rtype, rid)
            if rev in meta["refs"]:
                raise _HttpError(409, "Reference already exists")
            meta["refs"][rev] = self.store.resolve(rtype, rid, meta, body.get("startingPoint") or "main")
            self.store.save(rtype, rid, meta)
        self._send_json(200, {})

    def _info(self, rtype: str, rid: str, rev: str = "main") -> None:
        meta = self._repo(rtype, rid, content=False)  # a gated repo's metadata stays public
        oid = self.store.resolve(rtype, rid, meta, rev)
        commit = self.store.commit(rtype, rid, oid)  # read once: its files and its time
        files = commit["files"]
        # File sizes and oids only when asked (`files_metadata=True` sends blobs=true), as the Hub does: a client that
        # forgets to ask must not pass here and fail there.
        blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for p in sorted(files):
            sib, e = {"rfilename": p}, _file_entry(p, files[p])
            if blobs:
                sib.update(size=e["size"], blobId=e["oid"])
            if blobs and "lfs" in e:
                sib["lfs"] = {"sha256": e["lfs"]["oid"], "size": e["size"], "pointerSize": e["lfs"]["pointerSize"]}
            siblings.append(sib)
        iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))  # noqa: E731
        self._send_json(200, {"id": rid, "author": rid.split("/")[0], "sha": oid, "private": meta["private"],
                              "gated": meta.get("gated") or False, "disabled": False, "downloads": 0, "likes": 0,
                              "tags": [], "createdAt": iso(meta["created"]), "siblings": siblings,
                              "lastModified": iso(commit["time"])})

    def _tree(self, rtype: str, rid: str, rev: str, path: str = "") -> None:
        _, oid, files = self._files(rtype, rid, rev)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        pre = path.strip("/") + "/" if path.strip("/") else ""
        if pre and not any(p.startswith(pre) for p in files):
            raise _HttpError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": oid})
        out, seen = [], set()
        for p in sorted(f for f in files if f.startswith(pre)):
            parts = p[len(pre):].split("/")
            for i in range(1, len(parts) if recursive else min(2, len(parts))):
                if (d := pre + "/".join(parts[:i])) not in seen:
                    seen.add(d)
                    out.append(_dir_entry(oid, d))
            if recursive or len(parts) == 1:
                out.append(_file_entry(p, files[p]))
        self._send_json(200, out)

    def _paths_info(self, rtype: str, rid: str, rev: str) -> None:
        _, oid, files = self._files(rtype, rid, rev)
        out = []  # the client posts form-encoded `paths=a&paths=b&expand=False`
        for p in (p.strip("/") for p in parse_qs(self._body().decode(errors="replace")).get("paths", [])[:10000]):
            if p in files:
                out.append(_file_entry(p, files[p]))
            elif any(f.startswith(p + "/") for f in files):
                out.append(_dir_entry(oid, p))
        self._send_json(200, out)

    # -- uploads -------------------------------------------------------------------------------------------------
    def _preupload(self, rtype: str, rid: str, rev: str) -> None:
        meta, body = self._repo(rtype, rid, write=UPLOAD), self._json()
        files = self.store.commit(rtype, rid, meta["refs"][rev])["files"] if rev in meta["refs"] else {}
        out = []
        for f in body.get("files", [])[:1000]:
            path, size, sample = _check_path(f.get("path")), int(f.get("size") or 0), f.get("sample") or ""
            lfs = path.lower().endswith(LFS_SUFFIXES) or size >= LFS_THRESHOLD or b"\0" in base64.b64decode(sample)
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": files[path][1] if path in files else None})  # a matching oid = unchanged file
        self._send_json(200, {"files": out})

    def _commit(self, rtype: str, rid: str, rev: str) -> None:
        self._repo(rtype, rid, write=UPLOAD)
        if self.query.get("create_pr", ["0"])[0].lower() not in ("0", "false"):
            raise _HttpError(400, "pull requests are not supported by the local hub")
        lines = [json.loads(x) for x in self._body(MAX_COMMIT_BODY).splitlines() if x.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        with self.store.lock:
            meta = self.store.load(rtype, rid)
            if (head := meta["refs"].get(rev)) is None:
                raise _HttpError(404, f"Invalid rev id: {rev} (commits go to a branch)", "RevisionNotFound")
            if header.get("parentCommit") and header["parentCommit"] != head:
                raise _HttpError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(self.store.commit(rtype, rid, head)["files"])
            for line in lines[1:]:
                key, v = line.get("key"), line.get("value") or {}
                path = _check_path(v.get("path"))
                if key == "file":
                    files[path] = self.store.put_blob(base64.b64decode(v.get("content") or ""))
                elif key == "lfsFile":
                    obj = self.store.root / "lfs" / str(v.get("oid"))
                    if not _SHA256.fullmatch(obj.name) or not obj.is_file():
                        raise _HttpError(422, f"LFS object {obj.name} for {path} was not uploaded")
                    files[path] = ["lfs", obj.name, obj.stat().st_size]
                elif key == "deletedFile":
                    files.pop(path, None)
                elif key == "deletedFolder":
                    files = {k: e for k, e in files.items() if not k.startswith(path.rstrip("/") + "/")}
                else:
                    raise _HttpError(400, f"unsupported commit operation {key!r}")
            msg = "\n\n".join(x for x in (header.get("summary"), header.get("description")) if x)
            meta["refs"][rev] = new = self.store.new_commit(rtype, rid, head, files, msg)
            self.store.save(rtype, rid, meta)
        self._send_json(200, {"success": True, "commitOid": new,
                              "commitUrl": f"{self.base}/{PREFIX[rtype]}{rid}/commit/{new}"})

    def _cap(self, oid: str, size: int) -> str:
        """Capability for one LFS upload: the client PUTs without an Authorization header."""
        return hmac.new(self.hub._secret, f"{oid}:{size}".encode(), hashlib.sha256).hexdigest()

    def _lfs_batch(self, rtype: str, rid: str) -> None:
        self._repo(rtype, rid, write=UPLOAD)
        body = self._json()
        if body.get("operation", "upload") != "upload":
            raise _HttpError(400, "only the upload operation is supported")
        out = []
        for o in body.get("objects", [])[:10000]:
            oid, size = str(o.get("oid")), o.get("size")
            if not _SHA256.fullmatch(oid) or not isinstance(size, int) or not 0 <= size <= MAX_LFS_OBJECT:
                raise _HttpError(422, f"invalid LFS object {oid} ({size} bytes)")
            entry = {"oid": oid, "size": size}
            if not (self.store.root / "lfs" / oid).is_file():  # objects already stored get no `actions`
                href = f"{self.base}/lfs-upload/{oid}?size={size}&cap={self._cap(oid, size)}"
                entry.update(authenticated=True, actions={"upload": {"href": href, "expires_in": 3600}})
            out.append(entry)
        self._send_json(200, {"transfer": "basic", "objects": out, "hash_algo": "sha256"},
                        ctype="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str) -> None:
        size = int(self.query["size"][0]) if self.query.get("size", [""])[0].isdigit() else -1
        if not hmac.compare_digest(self.query.get("cap", [""])[0], self._cap(oid, size)):
            raise _HttpError(403, "invalid or expired upload link")
        tmp, h, n = self.store.root / "tmp" / f"{oid}.{secrets.token_hex(4)}", hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as f:
                for chunk in self._iter_body(size):
                    h.update(chunk)
                    n += f.write(chunk)
            if n != size or h.hexdigest() != oid:
                raise _HttpError(400, f"uploaded content does not match oid {oid} / size {size}")
            os.replace(tmp, self.store.root / "lfs" / oid)
        finally:
            tmp.unlink(missing_ok=True)
        self._send_json(200, {})

    # -- downloads -------------------------------------------------------------------------------------------
    def _resolve(self, rtype: str, rid: str, rev: str, path: str) -> None:
        _, oid, files = self._files(rtype, rid, rev)
        if path not in files:
            raise _HttpError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": oid})
        kind, foid, size = files[path]
        hdr = {"X-Repo-Commit": oid, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if kind == "lfs":  # ETag of the pointer, X-Linked-* of the content (what the Hub sends before its redirect)
            hdr.update({"ETag": f'"{_git_sha1(_pointer(foid, size))}"', "X-Linked-Etag": f'"{foid}"',
                        "X-Linked-Size": str(size)})
        else:
            hdr["ETag"] = f'"{foid}"'
        start, end, status = 0, size - 1, 200
        if (rng := self.headers.get("Range")) and size > 0:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            a, b = m.groups() if m else ("", "")
            if a:
                start, end = int(a), min(int(b), size - 1) if b else size - 1
            elif b:
                start = max(0, size - int(b))
            if not (a or b) or start >= size or start > end:
                raise _HttpError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
            status, hdr["Content-Range"] = 206, f"bytes {start}-{end}/{size}"
        self.send_response(status)
        for k, v in {**hdr, "Content-Length": str(end - start + 1)}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "GET":
            with open(self.store.root / ("lfs" if kind == "lfs" else "objects") / foid, "rb") as f:
                f.seek(start)
                left = end - start + 1
                while left > 0 and (chunk := f.read(min(left, 1 << 20))):
                    self.wfile.write(chunk)
                    left -= len(chunk)

