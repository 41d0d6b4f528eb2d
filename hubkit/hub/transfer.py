"""Moving files to and from the Hub: upload a folder or a built dataset in one commit, download files."""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from pathlib import Path
from typing import Sequence

from .access import _ensure_repo
from .core import HubError, _api, _check_type, _token, hub_endpoint, hub_errors, log, repo_url


@dataclasses.dataclass(frozen=True)
class PushResult:
    url: str  # the repo's URL
    commit: str  # the head commit after the push
    changed: bool  # False: nothing differed, no commit was made


def _commit(tok: str, repo_id: str, repo_type: str, private: bool, ops: list, message: str, action: str,
            replace_under: str | None = None) -> PushResult:
    """Create the repo if needed (`ensure_repo`), then push `ops` in one commit. `replace_under`: a folder whose
    files `ops` replace; the repo's other files there are deleted in the same commit."""
    from huggingface_hub import CommitOperationDelete

    _check_type(repo_type)
    api = _api(tok)
    url, info = _ensure_repo(api, repo_id, repo_type, private)  # its head and files: no second metadata read
    keep = {op.path_in_repo for op in ops}
    stale = [s.rfilename for s in info.siblings or []
             if replace_under and s.rfilename.startswith(f"{replace_under}/") and s.rfilename not in keep]
    with hub_errors(repo_id, repo_type, action):
        commit = api.create_commit(repo_id, ops + [CommitOperationDelete(f) for f in stale], repo_type=repo_type,
                                   commit_message=message)
    if not commit.oid:
        raise HubError(f"{action} {repo_type} repo {repo_id}: the Hub answered without a commit")
    return PushResult(url, commit.oid, commit.oid != info.sha)


def _matches(rel: str, patterns: Sequence[str] | str | None) -> bool:
    if patterns is None:
        return True
    return any(fnmatch.fnmatch(rel, p) for p in ([patterns] if isinstance(patterns, str) else patterns))


def push_files(folder: str | os.PathLike, repo_id: str, repo_type: str = "model", commit_message: str = "Upload",
               allow_patterns: Sequence[str] | str | None = None, private: bool = True, token: str | None = None,
               validate=None) -> PushResult:
    """Upload `folder`'s files (those matching `allow_patterns`) to `repo_id` in exactly one commit, creating the
    repo first (private by default). Unchanged files are skipped; if nothing changed no commit is made.

    Args:
        validate: called with README.md's text, when it is among the files, before anything is uploaded.

    Raises:
        HubError: see `ensure_repo`; also when the upload itself fails.
        FileNotFoundError: `folder` is not a directory, or holds no file to upload.
    """
    from huggingface_hub import CommitOperationAdd

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory")
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and _matches(p.relative_to(folder).as_posix(), allow_patterns))
    if not files:
        raise FileNotFoundError(f"{folder}: nothing to upload (patterns {allow_patterns})")
    if validate is not None and (folder / "README.md") in files:
        validate((folder / "README.md").read_text(encoding="utf-8"))
    ops = [CommitOperationAdd(p.relative_to(folder).as_posix(), str(p)) for p in files]
    res = _commit(_token(token, required=True), repo_id, repo_type, private, ops, commit_message, "push to")
    log.info("uploaded %s to %s (%s)", folder, repo_id, res.commit)
    return res


def upload_folder(folder: str | os.PathLike, repo_id: str, repo_type: str = "model", commit_message: str = "Upload",
                  allow_patterns: Sequence[str] | str | None = None, private: bool = True,
                  token: str | None = None) -> str:
    """`push_files`, returning the commit URL (it ends with the commit oid)."""
    res = push_files(folder, repo_id, repo_type, commit_message, allow_patterns, private, token)
    return f"{repo_url(repo_id, repo_type)}/commit/{res.commit}"


def dataset_revision(repo_id: str, token: str | None = None) -> str:
    """The commit sha `main` of a dataset repo points at now (what a stream opened now reads).

    Raises:
        HubError: repo not found or not visible, bad token, Hub unreachable.
    """
    with hub_errors(repo_id, "dataset", "read"):
        return _api(_token(token, required=False)).dataset_info(repo_id).sha


def repo_file_sizes(repo_id: str, repo_type: str = "model", revision: str | None = None,
                    token: str | None = None) -> dict[str, int]:
    """{path: size in bytes} of a repo's files.

    Raises:
        HubError: repo not found or not visible, bad token, Hub unreachable.
    """
    with hub_errors(repo_id, repo_type, "read"):
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
    with hub_errors(repo_id, repo_type, f"download {filename} from"):
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
    with hub_errors(repo_id, repo_type, "download"):
        return Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision, local_dir=local_dir,
                                      token=_token(token, required=False), allow_patterns=allow_patterns,
                                      endpoint=hub_endpoint(), cache_dir=cache_dir))


def read_text_file(repo_id: str, path: str, repo_type: str = "model", token: str | None = None) -> str:
    """The text of `path` in the repo as it is now (downloaded into a throwaway cache, never an older cached copy).

    Raises:
        HubError: repo or file not found or not visible, bad token, Hub unreachable.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        return download_file(repo_id, path, repo_type, token=token, cache_dir=cache).read_text(encoding="utf-8")


def update_text_file(repo_id: str, path: str, edit, repo_type: str = "model", commit_message: str = "Update",
                     token: str | None = None, validate=None):
    """Read `path` of the repo, write `edit(text)` back in one commit (checked by `validate(text)` first); no
    commit when the text is unchanged. Returns the commit's id, or None when nothing changed.

    Raises:
        HubError: repo or file not found, no write access, Hub unreachable.
    """
    from huggingface_hub import CommitOperationAdd

    tok = _token(token, required=True)
    text = read_text_file(repo_id, path, repo_type, token=tok)
    new = edit(text)
    if new == text:
        return None
    if validate is not None:
        validate(new)
    with hub_errors(repo_id, repo_type, "push to"):
        commit = _api(tok).create_commit(repo_id, [CommitOperationAdd(path, new.encode("utf-8"))],
                                         repo_type=repo_type, commit_message=commit_message)
    return commit.oid
