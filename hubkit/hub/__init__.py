"""The only hubkit package that talks to the Hugging Face Hub (through `huggingface_hub.HfApi`).

* Endpoint: ``HF_ENDPOINT`` (read at call time; defaults to https://huggingface.co), so the same code targets the
  real Hub or the loopback server of `hubkit.devkit.local_hub`.
* Token: the explicit ``token`` argument, else ``HF_TOKEN``, else the token stored by ``hf auth login``. Tokens are
  never printed, logged or put into exception messages.
* Every failure the user can fix surfaces as `HubError` with a one-line message saying how.

core (endpoint, token, errors) · access (whoami, what a token may push or read; checked before long work) ·
transfer (one-commit uploads, downloads) · dataset_push (a built dataset in one commit).
"""

from .access import check_model_readable, check_push_access, check_readable, ensure_repo, repo_is_private, whoami
from .core import REPO_TYPES, HubError, HubFileNotFound, hub_endpoint, hub_errors, repo_url
from .dataset_push import push_dataset
from .transfer import (PushResult, dataset_revision, download_file, download_snapshot, push_files, read_text_file,
                       repo_file_sizes, update_text_file, upload_folder)

__all__ = ["REPO_TYPES", "HubError", "HubFileNotFound", "PushResult", "check_model_readable", "check_push_access",
           "check_readable",
           "dataset_revision", "download_file", "download_snapshot", "ensure_repo", "hub_endpoint", "hub_errors",
           "push_dataset", "push_files", "read_text_file", "repo_file_sizes", "repo_is_private", "repo_url",
           "update_text_file", "upload_folder", "whoami"]
