"""Test-wide isolation: every Hugging Face client talks to one loopback `LocalHub`, never to huggingface.co.

The environment is set here, at conftest import, before any test module imports huggingface_hub / datasets /
transformers (they read it once at import). Caches and the token store live in a temporary HF_HOME.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from hubkit.local_hub import LocalHub, hub_env  # stdlib only: imports no HF client

OWNER_TOKEN, OTHER_TOKEN = "hf_owner_token", "hf_other_token"
_TMP = Path(tempfile.mkdtemp(prefix="hubkit-tests-"))
_HUB = LocalHub(_TMP / "hub-root", tokens={OWNER_TOKEN: "owner", OTHER_TOKEN: "other"}).start()
for _var in ("HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH", "HUGGINGFACE_CO_STAGING"):
    os.environ.pop(_var, None)
os.environ.update(hub_env(_HUB.url, OWNER_TOKEN, _TMP / "hf-home"))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def _stop() -> None:
    _HUB.stop()
    shutil.rmtree(_TMP, ignore_errors=True)


atexit.register(_stop)

# Modules imported before this conftest (e.g. by a plugin) read the old environment: patch what they cached.
if (_hc := sys.modules.get("huggingface_hub.constants")) is not None:
    _hc.ENDPOINT = _HUB.url
    _hc.HUGGINGFACE_CO_URL_TEMPLATE = _HUB.url + "/{repo_id}/resolve/{revision}/{filename}"
    _hc.HF_HUB_DISABLE_XET = True
    _hc.HF_URL_HOSTS = frozenset(_hc.HF_URL_HOSTS | {"127.0.0.1"})
if (_dc := sys.modules.get("datasets.config")) is not None:
    _dc.HF_ENDPOINT = _HUB.url
    _dc.HUB_DATASETS_URL = _HUB.url + "/datasets/{repo_id}/resolve/{revision}/{path}"


@dataclass(frozen=True)
class LocalHubInfo:
    url: str
    owner_token: str
    other_token: str
    root: Path
    hub: LocalHub


@pytest.fixture(scope="session")
def local_hub():
    """The session's loopback Hub (users `owner` and `other`); HF_ENDPOINT/HF_TOKEN (owner) already point at it."""
    import datasets.config

    datasets.config.USE_PARQUET_EXPORT = False  # no datasets-server lookups
    yield LocalHubInfo(_HUB.url, OWNER_TOKEN, OTHER_TOKEN, _HUB.root, _HUB)
    _HUB.stop()


@pytest.fixture
def hub_cache(tmp_path):
    """A fresh, empty cache dir (negative tests must not be answered from an earlier cached download)."""
    d = tmp_path / "hf-cache"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def one_thread():
    """Tiny CPU models run faster on one thread than on two busy ones (use with pytest.mark.usefixtures)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
