"""The only hubkit module that talks to the Hugging Face Hub (through `huggingface_hub.HfApi` and `datasets`).

* Endpoint: ``HF_ENDPOINT`` (read at call time; defaults to https://huggingface.co), so the same code targets the
  real Hub or the loopback server of `hubkit.devkit.local_hub`.
* Token: the explicit ``token`` argument, else ``HF_TOKEN``, else the token stored by ``hf auth login``. Tokens are
  never printed, logged or put into exception messages.
* Every failure the user can fix surfaces as `HubError` with a one-line message saying how.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import httpx
from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

log = logging.getLogger(__name__)

REPO_TYPES = ("model", "dataset")
_AUTH_HINT = "set HF_TOKEN or run `hf auth login`"


class HubError(Exception):
    """A Hub operation failed for a reason the user can act on (auth, connectivity, visibility, missing file)."""


class HubFileNotFound(HubError):
    """The repo is there, the file is not (callers may treat an optional file's absence as "none")."""


def hub_endpoint() -> str:
    """The Hub base URL: ``HF_ENDPOINT`` at call time, else huggingface_hub's configured endpoint."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


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
def hub_errors(repo_id: str, repo_type: str, action: str) -> Iterator[None]:
    """Translate client exceptions into `HubError` (messages carry no token; the original is kept as __cause__)."""
    try:  # datasets is not installed for inference-only use
        from datasets.exceptions import DatasetNotFoundError
    except ImportError:
        DatasetNotFoundError = RepositoryNotFoundError  # noqa: N806

    endpoint = hub_endpoint()
    what = f"{repo_type} repo {repo_id}"
    try:
        yield
    except HubError:
        raise
    except (RepositoryNotFoundError, DatasetNotFoundError) as e:
        raise HubError(f"{action}: {what} not found at {endpoint}, or not visible with this token "
                       f"(private repos need their owner's token: {_AUTH_HINT}).") from e
    except RevisionNotFoundError as e:
        raise HubError(f"{action}: revision not found in {what} at {endpoint}.") from e
    except LocalEntryNotFoundError as e:  # before EntryNotFoundError, its parent: the Hub was not asked
        raise HubError(f"{action}: cannot reach the Hub at {endpoint} and the file is not cached; check the "
                       f"network or HF_ENDPOINT.") from e
    except EntryNotFoundError as e:  # before HfHubHTTPError: the remote kind is both
        raise HubFileNotFound(f"{action}: file not found in {what} at {endpoint}.") from e
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401:
            raise HubError(f"{action}: the Hub at {endpoint} rejected the token (missing or invalid): "
                           f"{_AUTH_HINT}.") from e
        if status == 403:
            raise HubError(f"{action}: this token has no write access to {what} at {endpoint}; use a token of the "
                           f"repo's owner with write scope or push to your own namespace.") from e
        detail = (getattr(e, "server_message", None) or "").strip().replace("\n", " ")[:200]
        raise HubError(f"{action}: the Hub at {endpoint} answered HTTP {status} for {what}"
                       f"{': ' + detail if detail else ''}.") from e
    except OfflineModeIsEnabled as e:
        raise HubError(f"{action}: offline mode is on (HF_HUB_OFFLINE); unset it to reach {endpoint}.") from e
    except (httpx.TransportError, ConnectionError) as e:
        raise HubError(f"{action}: cannot reach the Hub at {endpoint} ({type(e).__name__}); is the server running "
                       f"and HF_ENDPOINT correct?") from e


def ensure_repo(repo_id: str, repo_type: str = "model", private: bool = True, token: str | None = None) -> str:
    """Create `repo_id` (private by default) or check that the existing one has the requested visibility.

    Args:
        repo_id: ``namespace/name``.
        repo_type: ``"model"`` or ``"dataset"``.
        private: ask for a private repo (default). An existing *private* repo is accepted when ``private=False``.
        token: Hub token; default ``HF_TOKEN`` or the stored login token.

    Returns:
        The repo URL.

    Raises:
        HubError: no/invalid token, no write access, Hub unreachable, or the repo exists publicly while a private
            one was asked for.
    """
    _check_type(repo_type)
    tok = _token(token, required=True)
    api = _api(tok)
    with hub_errors(repo_id, repo_type, "ensure_repo"):
        url = str(api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True))
        info = api.repo_info(repo_id, repo_type=repo_type)
    if private and not info.private:
        raise HubError(f"{repo_type} repo {repo_id} already exists and is public, but a private repo was asked for: "
                       f"make it private in its settings on the Hub, or pass --public.")
    return url


def upload_folder(folder: str | os.PathLike, repo_id: str, repo_type: str = "model", commit_message: str = "Upload",
                  allow_patterns: Sequence[str] | str | None = None, private: bool = True,
                  token: str | None = None) -> str:
    """Upload `folder` to `repo_id` in one commit (creating the repo, private by default, first).

    Unchanged files are skipped; if nothing changed no commit is made and the current head is returned.

    Args:
        folder: local directory to upload.
        repo_id: ``namespace/name``.
        repo_type: ``"model"`` or ``"dataset"``.
        commit_message: commit summary.
        allow_patterns: optional glob(s) of files to include.
        private: visibility asked for (see `ensure_repo`).
        token: Hub token; default ``HF_TOKEN`` or the stored login token.

    Returns:
        The commit URL (ends with the commit oid).

    Raises:
        HubError: see `ensure_repo`; also when the upload itself fails.
        FileNotFoundError: `folder` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory")
    tok = _token(token, required=True)
    ensure_repo(repo_id, repo_type, private=private, token=tok)
    with hub_errors(repo_id, repo_type, "upload_folder"):
        info = _api(tok).upload_folder(folder_path=folder, repo_id=repo_id, repo_type=repo_type,
                                       commit_message=commit_message, allow_patterns=allow_patterns)
    log.info("uploaded %s to %s (%s)", folder, repo_id, info.oid)
    return str(info.commit_url)


def dataset_revision(repo_id: str, token: str | None = None) -> str:
    """The commit sha `main` of a dataset repo points at now (what a stream opened now reads).

    Raises:
        HubError: repo not found or not visible, bad token, Hub unreachable.
    """
    with hub_errors(repo_id, "dataset", "dataset_info"):
        return _api(_token(token, required=False)).dataset_info(repo_id).sha


def repo_file_sizes(repo_id: str, repo_type: str = "model", revision: str | None = None,
                    token: str | None = None) -> dict[str, int]:
    """{path: size in bytes} of a repo's files.

    Raises:
        HubError: repo not found or not visible, bad token, Hub unreachable.
    """
    with hub_errors(repo_id, repo_type, "repo_info"):
        info = _api(_token(token, required=False)).repo_info(repo_id, repo_type=repo_type, revision=revision,
                                                             files_metadata=True)
    return {s.rfilename: int(s.size or 0) for s in (info.siblings or [])}


def download_file(repo_id: str, filename: str, repo_type: str = "model", revision: str | None = None,
                  token: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Download one file into the HF cache and return its local path.

    Args:
        repo_id: ``namespace/name``.
        filename: path of the file in the repo.
        repo_type: ``"model"`` or ``"dataset"``.
        revision: branch, tag or commit (default ``main``).
        token: Hub token (optional for public repos).
        cache_dir: HF cache to use (default ``HF_HUB_CACHE``). Note: when the Hub cannot be asked (unreachable,
            or the repo is not visible with this token), a copy already in this cache is returned.

    Raises:
        HubError: repo/file not found or not visible, bad token, Hub unreachable and file not cached.
    """
    from huggingface_hub import hf_hub_download

    _check_type(repo_type)
    with hub_errors(repo_id, repo_type, f"download_file {filename}"):
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type, revision=revision,
                                    token=_token(token, required=False), endpoint=hub_endpoint(), cache_dir=cache_dir))


def download_snapshot(repo_id: str, repo_type: str = "model", revision: str | None = None,
                      local_dir: str | os.PathLike | None = None, token: str | None = None,
                      allow_patterns: Sequence[str] | str | None = None,
                      cache_dir: str | os.PathLike | None = None) -> Path:
    """Download a whole repo revision (optionally filtered) and return the folder holding it.

    Args:
        repo_id: ``namespace/name``.
        repo_type: ``"model"`` or ``"dataset"``.
        revision: branch, tag or commit (default ``main``).
        local_dir: copy the files into this folder instead of returning the cache snapshot folder.
        token: Hub token (optional for public repos).
        allow_patterns: optional glob(s) of files to download.
        cache_dir: HF cache to use (default ``HF_HUB_CACHE``).

    Raises:
        HubError: repo not found or not visible, bad token, Hub unreachable.
    """
    from huggingface_hub import snapshot_download

    _check_type(repo_type)
    with hub_errors(repo_id, repo_type, "download_snapshot"):
        return Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision, local_dir=local_dir,
                                      token=_token(token, required=False), allow_patterns=allow_patterns,
                                      endpoint=hub_endpoint(), cache_dir=cache_dir))


@contextlib.contextmanager
def _datasets_endpoint(endpoint: str) -> Iterator[None]:
    """`datasets` reads HF_ENDPOINT once at import; point it at the current endpoint for the push."""
    import datasets.config as dcfg

    saved = dcfg.HF_ENDPOINT, dcfg.HUB_DATASETS_URL
    dcfg.HF_ENDPOINT = endpoint
    dcfg.HUB_DATASETS_URL = endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"
    try:
        yield
    finally:
        dcfg.HF_ENDPOINT, dcfg.HUB_DATASETS_URL = saved


def _merge_card(our_text: str, pushed_text: str) -> str:
    """Our card's prose and metadata, plus the ``configs``/``dataset_info`` (and any other keys) push_to_hub wrote."""
    from huggingface_hub import DatasetCard, DatasetCardData

    ours, pushed = DatasetCard(our_text), DatasetCard(pushed_text)
    meta = pushed.data.to_dict()
    meta.update({k: v for k, v in ours.data.to_dict().items() if k not in ("configs", "dataset_info")})
    ours.data = DatasetCardData(**meta)
    return str(ours)


def push_dataset(dataset_dir: str | os.PathLike, repo_id: str, private: bool = True, token: str | None = None,
                 card_path: str | os.PathLike | None = None, max_shard_size: str | int = "100MB",
                 card_text: str | None = None, extra_files: Sequence[str | os.PathLike] = ()) -> str:
    """Push a `DatasetDict.save_to_disk` folder to a (private by default) dataset repo as Parquet, then its card.

    The repo is created first (so ``private`` is honoured), the splits are pushed with `DatasetDict.push_to_hub`,
    then the dataset card (``card_text``, else ``card_path``, default ``<dataset_dir>/README.md`` if present) is
    committed with the ``configs``/``dataset_info`` metadata that push_to_hub wrote merged into its YAML front
    matter, together with ``extra_files`` (paths; uploaded under their file names: the manifest, the card's chart).

    Args:
        dataset_dir: folder written by `DatasetDict.save_to_disk`.
        repo_id: ``namespace/name`` of the dataset repo.
        private: visibility asked for (see `ensure_repo`).
        token: Hub token; default ``HF_TOKEN`` or the stored login token.
        card_path: dataset card (README.md with YAML front matter) to publish.
        max_shard_size: Parquet shard size limit passed to push_to_hub.
        card_text: the card's text (instead of a file).
        extra_files: more files for the card's commit.

    Returns:
        The dataset repo URL.

    Raises:
        HubError: see `ensure_repo`; also when the push fails.
        FileNotFoundError: `dataset_dir` is not a save_to_disk folder, or `card_path` is missing.
    """
    import datasets

    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "dataset_dict.json").is_file():
        raise FileNotFoundError(f"{dataset_dir}: not a DatasetDict.save_to_disk folder (no dataset_dict.json)")
    card = Path(card_path) if card_path else dataset_dir / "README.md"
    if card_path and not card.is_file():
        raise FileNotFoundError(f"{card}: dataset card not found")
    tok = _token(token, required=True)
    url = ensure_repo(repo_id, "dataset", private=private, token=tok)
    dd = datasets.load_from_disk(str(dataset_dir))
    if not isinstance(dd, datasets.DatasetDict):
        raise FileNotFoundError(f"{dataset_dir}: holds a single Dataset, expected a DatasetDict")
    endpoint = hub_endpoint()
    with hub_errors(repo_id, "dataset", "push_dataset"), _datasets_endpoint(endpoint):
        info = dd.push_to_hub(repo_id, private=private, token=tok, max_shard_size=max_shard_size,
                              commit_message="Upload dataset (Parquet shards)")
        if card_text is None and card.is_file():
            card_text = card.read_text(encoding="utf-8")
        if card_text is not None:
            from huggingface_hub import CommitOperationAdd

            api = _api(tok)
            with tempfile.TemporaryDirectory() as tmp:
                pushed = Path(api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=info.oid,
                                                  cache_dir=tmp)).read_text(encoding="utf-8")
            merged = _merge_card(card_text, pushed)
            ops = [CommitOperationAdd("README.md", merged.encode("utf-8"))]
            ops += [CommitOperationAdd(Path(f).name, str(f)) for f in extra_files]
            api.create_commit(repo_id, ops, repo_type="dataset", commit_message="Dataset card and manifest",
                              parent_commit=info.oid)
    log.info("pushed %s to %s", dataset_dir, url)
    return url
