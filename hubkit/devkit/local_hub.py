"""A loopback, Hugging Face Hub-compatible HTTP server: a local stand-in for development, demos and tests.

NOT a production hub: no git protocol, no Xet, no pull requests, no rate limits, plain-text tokens, no TLS. It
answers just enough of the Hub HTTP API (the route table in `hub_api`) for the *unmodified* ``huggingface_hub`` and
``datasets`` clients, run with ``HF_HUB_DISABLE_XET=1`` (see `hub_env`), to create repos, commit regular and git-LFS
files, list trees, download (with HTTP ranges) and stream datasets. State persists on disk under ``root``::

    tokens.json                               {token: "user" | "user:read"} (used when no `tokens` mapping is given)
    objects/<git blob sha1>, lfs/<sha256>     regular file contents, LFS objects
    repos/<type>s/<ns>/<name>/repo.json       {"owner", "private", "created", "refs": {branch: commit oid},
                                               "gated": "manual" | false (absent: false), "allowed": [users]}
    repos/<type>s/<ns>/<name>/commits/<oid>.json   {"parent", "message", "time", "files": {path: [kind, oid, size]}}

A user owns the namespace of their name. Private repos are invisible to others, gated repos show their metadata but
not their files, read tokens cannot write, and README.md metadata is checked as the Hub checks it
(`hubkit.cards.metadata`); the errors copy the Hub's (`hub_auth` lists them).

    with LocalHub("/tmp/hub", tokens={"hf_me": "me", "hf_ro": "me:read", "hf_al": "alice"}) as hub:
        HfApi(endpoint=hub.url, token="hf_me").create_repo("me/base")
        hub.set_gated("model", "me/base", allowed=("alice",))   # alice may download; anyone else: GatedRepo
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

from .hub_api import _Handler
from .hub_auth import parse_grant
from .hub_store import PREFIX, _atomic_write, _Store

class _Server(ThreadingHTTPServer):
    daemon_threads = allow_reuse_address = True

    def __init__(self, addr, hub: "LocalHub"):
        self.hub, self.conns = hub, set()
        super().__init__(addr, _Handler)


class LocalHub:
    """A Hub-compatible server on ``host:port`` (port 0 = a free one) persisting its repos under ``root``.

    ``tokens`` maps token -> ``"user"`` (a write token) or ``"user:read"`` (read-only); default
    ``<root>/tokens.json`` (created with one random token for user ``local`` when missing). Use
    ``with LocalHub(root) as hub:`` or ``start()``/``stop()``; ``hub.url`` is the HF_ENDPOINT to give clients. Keep
    the loopback host: no TLS, plain-text tokens.
    """

    def __init__(self, root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
                 tokens: dict[str, str] | None = None):
        self.root, self.host, self.port = Path(root), host, port
        self.root.mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens) if tokens is not None else self._load_tokens()
        self._grants = {tok: parse_grant(value) for tok, value in self.tokens.items()}  # token -> (user, Role)
        self._secret, self._store = secrets.token_bytes(32), _Store(self.root)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Called as request_hook(method, path) before each request is served (fault injection in tests, tracing);
        # it runs on the request's thread, so blocking in it stalls that request only.
        self.request_hook = None

    def _load_tokens(self) -> dict[str, str]:
        path = self.root / "tokens.json"
        if not path.is_file():
            _atomic_write(path, json.dumps({f"hf_local_{secrets.token_hex(16)}": "local"}, indent=1).encode())
            path.chmod(0o600)
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"{path}: expected a JSON object mapping token -> username (or username:read)")
        return data

    def set_gated(self, repo_type: str, repo_id: str, gated: bool = True, allowed: tuple[str, ...] = ()) -> None:
        """Gate an existing repo (``"gated": "manual"``) and set who besides its owner may read its files; persisted
        in its repo.json. ``gated=False`` ungates it."""
        if repo_type not in PREFIX:
            raise ValueError(f"repo_type must be one of {sorted(PREFIX)}, got {repo_type!r}")
        with self._store.lock:
            meta = self._store.load(repo_type, repo_id)
            if meta is None:
                raise ValueError(f"{repo_type} repo {repo_id} does not exist on this hub: create it first")
            meta["gated"] = "manual" if gated else False
            meta["allowed"] = sorted(set(allowed))
            self._store.save(repo_type, repo_id, meta)

    @property
    def netloc(self) -> str:
        return f"{'127.0.0.1' if self.host in ('', '0.0.0.0') else self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.netloc}"

    def start(self) -> "LocalHub":
        """Bind and serve from a daemon thread; returns self."""
        if self._server is None:
            try:
                self._server = _Server((self.host, self.port), self)
            except OSError as e:
                raise OSError(f"cannot serve on {self.host}:{self.port} ({e.strerror or e}): is another server "
                              "using it? choose another --port") from None
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"local-hub-{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and drop open keep-alive connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for conn in list(server.conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
          tokens: dict[str, str] | None = None) -> None:
    """Run a `LocalHub` in the foreground until interrupted (Ctrl-C); for ``hubkit hub serve``."""
    hub = LocalHub(root, host, port, tokens).start()
    where = "the tokens passed in" if tokens is not None else str(hub.root / "tokens.json")
    users = sorted({f"{user} ({role.value})" for user, role in hub._grants.values()})
    print(f"local hub (development stand-in, not a production hub) serving {hub.root} at {hub.url}\n"
          f"users: {', '.join(users)}; tokens: see {where}\n"
          f"client env: HF_ENDPOINT={hub.url} HF_HUB_DISABLE_XET=1 HF_TOKEN=<token>", flush=True)
    try:
        while hub._thread is not None and hub._thread.is_alive():
            hub._thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()


def hub_env(url: str, token: str | None, home_dir: str | os.PathLike) -> dict[str, str]:
    """Environment a client process needs for the local hub at `url` (set it before importing HF libraries)."""
    home = Path(home_dir)
    env = {"HF_ENDPOINT": url.rstrip("/"), "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
           "HF_DATASETS_CACHE": str(home / "datasets"), "HF_XET_CACHE": str(home / "xet"),
           "HF_ASSETS_CACHE": str(home / "assets")}
    if token:
        env["HF_TOKEN"] = token
    return env

