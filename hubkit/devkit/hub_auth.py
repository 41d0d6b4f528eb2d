"""The loopback hub's access rules: who a token is, what its role lets it do, which repos it sees, and gating.

    from huggingface_hub import HfApi
    from hubkit.devkit.local_hub import LocalHub
    hub = LocalHub("/tmp/hub", tokens={"hf_w": "alice", "hf_r": "alice:read", "hf_b": "bob"}).start()
    HfApi(endpoint=hub.url, token="hf_w").create_repo("alice/base")
    hub.set_gated("model", "alice/base", allowed=("bob",))   # bob may download; anyone else gets GatedRepo
    HfApi(endpoint=hub.url, token="hf_r").whoami()["auth"]["accessToken"]["role"]   # "read"

A token's value is ``USER`` (a write token) or ``USER:read`` / ``USER:write``. The answers copy the Hub's, status
*and* ``X-Error-Code``, because huggingface_hub picks its exception from them and, on a plain http:// endpoint, a
401 without a code becomes a bare HfHubHTTPError rather than RepositoryNotFoundError:

- a repo the user may not see (missing, or someone else's private one): 401 (anonymous) / 404, ``RepoNotFound``;
- the files of a gated repo, for anyone but its owner and the users it allows: 401 (anonymous) / 403, ``GatedRepo``,
  with the Hub's message; the repo's metadata stays readable and says ``"gated": "manual"``;
- a write with a read token, or to someone else's repo: 403 without a code.

Routes here: ``GET /api/whoami-v2`` and ``GET /api/{models|datasets|spaces}/{owner}/{name}/auth-check[/write]``.
"""

from __future__ import annotations

import enum

from .hub_store import _NAME, PREFIX, REPO_API, _HttpError

AUTH_ROUTES = [
    ("GET", r"/api/whoami-v2", "_whoami"),
    ("GET", REPO_API + r"/auth-check(?P<write>/write)?", "_auth_check"),
]


class Role(str, enum.Enum):
    """A token's role, as whoami-v2 reports it (fine-grained tokens are not modelled)."""

    READ = "read"
    WRITE = "write"


def parse_grant(value: str) -> tuple[str, Role]:
    """``"alice"`` -> (alice, write); ``"alice:read"`` -> (alice, read). ValueError says the expected form."""
    user, _, role = value.partition(":")
    if _NAME.fullmatch(user) and role in ("", *(r.value for r in Role)):
        return user, Role(role or Role.WRITE.value)
    raise ValueError(f"token value {value!r}: expected USER, USER:read or USER:write (USER: letters, digits, -_.)")


def gate_message(rtype: str, rid: str, base: str, anonymous: bool) -> str:
    """The Hub's GatedRepo text; `base` is the hub's URL (huggingface.co on the real Hub)."""
    if anonymous:
        return (f"Access to {rtype} {rid} is restricted. You must have access to it and be authenticated to access "
                f"it. Please log in.")
    return (f"Access to {rtype} {rid} is restricted and you are not in the authorized list. "
            f"Visit {base}/{PREFIX[rtype]}{rid} to ask for access.")


class _AccessRules:
    """Mixin of the request handler (`hub_api._Handler`): identity, visibility, gating and write checks."""

    def _identity(self) -> tuple[str, Role] | None:
        """(user, role) of the request's bearer token; None when there is none; 401 for an unknown token."""
        if not (auth := self.headers.get("Authorization")):
            return None
        grant = self.hub._grants.get(auth[7:].strip() if auth[:7].lower() == "bearer " else "")
        if grant is None:
            raise _HttpError(401, "Invalid credentials in Authorization header")
        return grant

    def _user(self) -> str | None:
        return who[0] if (who := self._identity()) else None

    def _need_write_token(self, action: str) -> str:
        """The user of a write token; 401 without a token, 403 (the Hub's words) for a read token."""
        if (who := self._identity()) is None:
            raise _HttpError(401, f"Authentication required to {action}")
        if who[1] is not Role.WRITE:
            raise _HttpError(403, f"you must use a write token to {action}")
        return who[0]

    def _repo(self, rtype: str, rid: str, write: str | None = None, content: bool = False) -> dict:
        """The repo's metadata if this request may see it (`content`: may read its files; `write`: the action, when
        it writes), else the Hub's error."""
        user, meta = self._user(), self.store.load(rtype, rid)
        if meta is None or (meta["private"] and user != meta["owner"]):
            raise _HttpError(401 if user is None else 404, f"Repository Not Found for {rid}", "RepoNotFound")
        if content and meta.get("gated") and user != meta["owner"] and user not in meta.get("allowed", ()):
            raise _HttpError(401 if user is None else 403, gate_message(rtype, rid, self.base, user is None),
                             "GatedRepo")
        if write is not None:
            if self._need_write_token(write) != meta["owner"]:
                raise _HttpError(403, f"You don't have write access to {rtype} {rid}")
        return meta

    # -- routes ----------------------------------------------------------------------------------------------------
    def _whoami(self) -> None:
        if (who := self._identity()) is None:
            raise _HttpError(401, "Invalid user token")
        user, role = who
        self._send_json(200, {"type": "user", "name": user, "fullname": user, "orgs": [],
                              "auth": {"type": "access_token",
                                       "accessToken": {"displayName": f"local {role.value} token",
                                                       "role": role.value}}})

    def _auth_check(self, rtype: str, rid: str, write: str = "") -> None:
        """200 with an empty body when the token may read (``/write``: write) the repo's content."""
        meta = self._repo(rtype, rid, content=True)  # not found / gated first, then the write check
        if write:
            user = self._user()
            if user is None or user != meta["owner"]:
                raise _HttpError(403, f"You don't have write access to {rtype} {rid}")
            self._need_write_token("write to this repository")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
