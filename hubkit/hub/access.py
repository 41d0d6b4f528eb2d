"""Who the token is and what it may do, checked before any long work (reads only: nothing is created here)."""

from __future__ import annotations

from typing import Any

from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from .core import _AUTH_HINT, SPACE_SDK, HubError, _api, _check_type, _token, hub_endpoint, hub_errors, repo_url

def ensure_repo(repo_id: str, repo_type: str = "model", private: bool = True, token: str | None = None) -> str:
    """Create `repo_id` (private by default) or check that the existing one has the requested visibility.

    Args:
        repo_id: ``namespace/name``.
        repo_type: ``"model"``, ``"dataset"`` or ``"space"`` (a Gradio Space).
        private: ask for a private repo (default). An existing *private* repo is accepted when ``private=False``.
        token: Hub token; default ``HF_TOKEN`` or the stored login token.

    Returns:
        The repo URL.

    Raises:
        HubError: no/invalid token, no write access, Hub unreachable, or the repo exists publicly while a private
            one was asked for.
    """
    _check_type(repo_type)
    return _ensure_repo(_api(_token(token, required=True)), repo_id, repo_type, private)[0]


def _ensure_repo(api, repo_id: str, repo_type: str, private: bool) -> tuple[str, Any]:
    """`ensure_repo` through `api`: (the repo URL, its `RepoInfo` read after creation, so that a push can take the
    head commit and the file list from it instead of asking again)."""
    with hub_errors(repo_id, repo_type, "push to"):
        sdk = {"space_sdk": SPACE_SDK} if repo_type == "space" else {}  # the Hub refuses a Space without one
        url = str(api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **sdk))
        info = api.repo_info(repo_id, repo_type=repo_type)
    _check_private(info, repo_id, repo_type, private)
    return url, info


def _check_private(info, repo_id: str, repo_type: str, private: bool) -> None:
    """HubError when a private repo was asked for and the existing one (`info`) is public."""
    if private and not info.private:
        raise HubError(f"{repo_type} repo {repo_id} already exists and is public, but a private repo was asked for: "
                       f"make it private in its settings on the Hub, or pass --public.")


def repo_is_private(repo_id: str, repo_type: str = "model", token: str | None = None) -> bool:
    """Whether the repo is private, in one metadata read. HubError when this token cannot read it (not found, not
    visible, bad token, Hub unreachable)."""
    _check_type(repo_type)
    with hub_errors(repo_id, repo_type, "read"):
        return bool(_api(_token(token, required=False)).repo_info(repo_id, repo_type=repo_type).private)


def whoami(token: str | None = None) -> dict:
    """The token's user as the Hub describes it (`name`, `orgs`, `auth.accessToken.role`).

    Raises:
        HubError: no token, the token is rejected, or the Hub cannot be reached.
    """
    tok = _token(token, required=True)
    with hub_errors("-", "model", "check", what="the token"):  # a 401 becomes "rejected the token" there
        return _api(tok).whoami(cache=True)


# Organisation roles that may create repos (contributor: only repos it then owns).
_WRITE_ROLES = ("write", "admin", "contributor")


def check_push_access(repo_id: str, repo_type: str = "model", private: bool = True, token: str | None = None) -> str:
    """Check, before any long work, that the token may push `repo_id` as asked; returns the user name.

    Reads only (whoami, repo info, auth-check); creates nothing.

    Raises:
        HubError: no or rejected token, a read-only token, a namespace the user cannot write to, an existing repo
            this token cannot write, or an existing public repo when a private one was asked for.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    _check_type(repo_type)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f"{repo_id!r} is not a Hub repo id (namespace/name): {e}") from None
    if "/" not in repo_id:
        raise HubError(f"{repo_id!r}: give the repo as namespace/name (e.g. your-user/{repo_id})")
    tok = _token(token, required=True)
    me = whoami(tok)
    user, owner = me.get("name"), repo_id.split("/")[0]
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubError(f"this token of {user} is read-only: pushing {repo_id} needs a token with write access "
                       f"({_AUTH_HINT}).")
    orgs = {o.get("name"): o.get("roleInOrg") for o in me.get("orgs") or []}
    if owner != user and orgs.get(owner) not in _WRITE_ROLES:
        raise HubError(f"{user} cannot create or write {repo_type} repos under {owner!r}"
                       f"{' (role ' + str(orgs[owner]) + ')' if owner in orgs else ''}: push to {user}/... or use "
                       f"a token of {owner}.")
    api = _api(tok)
    with hub_errors(repo_id, repo_type, "push to"):
        try:
            info = api.repo_info(repo_id, repo_type=repo_type)
        except RepositoryNotFoundError:
            return user  # a new repo: the namespace check above is all there is to check
        _check_private(info, repo_id, repo_type, private)
        try:  # a 403 becomes "no write access" in hub_errors
            api.auth_check(repo_id, repo_type=repo_type, write=True)
        except HfHubHTTPError as e:
            if e.response is None or e.response.status_code != 404:  # a Hub without auth-check: nothing to add
                raise
    return user


def check_readable(repo_id: str, repo_type: str = "dataset", token: str | None = None) -> str:
    """One quick metadata read: the repo's head commit if this token can read it; HubError at once otherwise (not
    found, private, gated, Hub unreachable), before a library that retries for half a minute is asked."""
    _check_type(repo_type)
    with hub_errors(repo_id, repo_type, "read"):
        return _api(_token(token, required=False)).repo_info(repo_id, repo_type=repo_type).sha


def check_model_readable(repo_id: str, token: str | None = None) -> None:
    """Check that this token can download model `repo_id`.

    Raises:
        HubError: gated (says where to accept the terms), not found or private, bad token, Hub unreachable.
    """
    from huggingface_hub.errors import GatedRepoError

    api = _api(_token(token, required=False))
    page = repo_url(repo_id)
    try:
        with hub_errors(repo_id, "model", "read", what=f"base model {repo_id}"):
            try:
                api.auth_check(repo_id, repo_type="model")
            except GatedRepoError as e:
                raise HubError(f"base model {repo_id} is gated: accept its terms at {page} with the account of "
                               f"this token (a fine-grained token also needs access to public gated repos), then "
                               f"run again.") from e
            except HfHubHTTPError as e:  # a Hub without auth-check: the model's metadata is the next best thing
                if e.response is None or e.response.status_code != 404 or isinstance(e, RepositoryNotFoundError):
                    raise
                api.model_info(repo_id)
    except HubError as e:
        if "not found" in str(e) and "gated" not in str(e):
            raise HubError(f"base model {repo_id} was not found at {hub_endpoint()}, or it is private and this "
                           f"token cannot see it: check the name, or {_AUTH_HINT} with an account that can.") from e
        raise


