"""The Hub's address, the token, and one error type for everything the user can fix (see `hubkit.hub`)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

log = logging.getLogger("hubkit.hub")

REPO_TYPES = ("model", "dataset", "space")
# hubkit's Spaces are Gradio apps (`hubkit space`): the SDK a new Space repo is created with
SPACE_SDK = "gradio"
_AUTH_HINT = "set HF_TOKEN or run `hf auth login`"


class HubError(Exception):
    """A Hub operation failed for a reason the user can act on (auth, connectivity, visibility, missing file)."""


class HubFileNotFound(HubError):
    """The repo is there, the file is not (callers may treat an optional file's absence as "none")."""


def hub_endpoint() -> str:
    """The Hub base URL: ``HF_ENDPOINT`` at call time, else huggingface_hub's configured endpoint."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def repo_url(repo_id: str, repo_type: str = "model") -> str:
    """The repo's page on the Hub (datasets live under /datasets/, Spaces under /spaces/)."""
    return f"{hub_endpoint()}/{ {'dataset': 'datasets/', 'space': 'spaces/'}.get(repo_type, '')}{repo_id}"


def _token(token: str | None, required: bool) -> str | None:
    tok = token or get_token()
    if required and not tok:
        raise HubError(f"No Hugging Face token found for {hub_endpoint()}: {_AUTH_HINT}.")
    return tok


def _api(token: str | None) -> HfApi:
    return HfApi(endpoint=hub_endpoint(), token=token)


def _check_type(repo_type: str) -> str:
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}, got {repo_type!r}")
    return repo_type


@contextlib.contextmanager
def hub_errors(repo_id: str, repo_type: str, action: str, what: str | None = None) -> Iterator[None]:
    """Translate client exceptions into `HubError` (messages carry no token; the original is kept as __cause__).

    Each message reads "<action> <what>: <what went wrong and what to do>", e.g. "download model repo me/x: not
    found at https://huggingface.co, or not visible with this token (...)": `action` is what the user asked for in
    plain words ("download", "push to", "read"), never a function's name; `what` defaults to "<type> repo <id>".
    """
    # Only `datasets.load_dataset` raises datasets' own not-found error: where datasets is not loaded (inference-only
    # installs, every plain Hub call) it cannot have been raised, and importing it here would cost every call.
    datasets_exc = sys.modules.get("datasets.exceptions")
    DatasetNotFoundError = getattr(datasets_exc, "DatasetNotFoundError", RepositoryNotFoundError)  # noqa: N806

    endpoint = hub_endpoint()
    page = repo_url(repo_id, repo_type)
    what = what or f"{repo_type} repo {repo_id}"
    head = f"{action} {what}"
    try:
        yield
    except HubError:
        raise
    except GatedRepoError as e:  # before RepositoryNotFoundError, its parent
        raise HubError(f"{head}: it is gated: accept its terms at {page} with the account of this token, then run "
                       "again.") from e
    except (RepositoryNotFoundError, DatasetNotFoundError) as e:
        raise HubError(f"{head}: not found at {endpoint}, or not visible with this token (private repos need their "
                       f"owner's token: {_AUTH_HINT}).") from e
    except RevisionNotFoundError as e:
        raise HubError(f"{head}: no such revision at {endpoint}.") from e
    except LocalEntryNotFoundError as e:  # before EntryNotFoundError, its parent: the Hub was not asked
        raise HubError(f"{head}: cannot reach the Hub at {endpoint} and the file is not cached; check the network "
                       "or HF_ENDPOINT.") from e
    except EntryNotFoundError as e:  # before HfHubHTTPError: the remote kind is both
        raise HubFileNotFound(f"{head}: no such file there (at {endpoint}).") from e
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401:
            raise HubError(f"{head}: the Hub at {endpoint} rejected the token (missing or invalid): "
                           f"{_AUTH_HINT}.") from e
        if status == 403:
            raise HubError(f"{head}: this token has no write access there (at {endpoint}); use a token of the "
                           f"repo's owner with write scope or push to your own namespace.") from e
        detail = (getattr(e, "server_message", None) or "").strip().replace("\n", " ")[:200]
        raise HubError(f"{head}: the Hub at {endpoint} answered HTTP {status}{': ' + detail if detail else ''}.") \
            from e
    except OfflineModeIsEnabled as e:
        raise HubError(f"{head}: offline mode is on (HF_HUB_OFFLINE); unset it to reach {endpoint}.") from e
    except Exception as e:  # noqa: BLE001 - only transport failures are turned into "cannot reach"
        if not _is_transport_error(e):
            raise
        raise HubError(f"{head}: cannot reach the Hub at {endpoint} ({type(e).__name__}); is the server running "
                       "and HF_ENDPOINT correct?") from e


def _is_transport_error(e: BaseException) -> bool:
    """A network failure (refused, reset, timed out, DNS), whichever HTTP client huggingface_hub uses (httpx in 1.x,
    httpx2 in 2.x, requests before): told by the exception's class names, so no client is imported here."""
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"TransportError", "ConnectError", "ConnectionError", "TimeoutException", "NetworkError",
                         "ReadTimeout", "ConnectTimeout", "RemoteProtocolError", "ProxyError"})
