"""hubkit.hub against the loopback Hub: private dataset push + streaming round trip, uploads, failure modes."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError
from PIL import Image as PILImage

from hubkit import hub
from hubkit.devkit.local_hub import LocalHub

datasets = pytest.importorskip("datasets")
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, List, Value  # noqa: E402

CARD = "---\nlicense: cc-by-4.0\ntags:\n- medical\n- radiology\n---\n# Tiny lumbar set\n\nSynthetic rows for tests.\n"
FEATURES = Features({"study_id": Value("string"), "images": List(Image()), "target": Value("string"),
                     "severity": ClassLabel(names=["normal", "moderate", "severe"])})


@pytest.fixture(autouse=True)
def no_token_leaks(local_hub, caplog, capsys):
    """Every test here: no token may show up in log records or in captured stdout/stderr."""
    caplog.set_level(logging.DEBUG)
    yield
    out, err = capsys.readouterr()
    for text in (caplog.text, out, err):
        for tok in (local_hub.owner_token, local_hub.other_token, "hf_wrong_token_123"):
            assert tok not in text


def _assert_clean(exc: BaseException, *tokens: str) -> None:
    chain, e = [], exc
    while e is not None and len(chain) < 10:
        chain.append(f"{e}\n{e!r}")
        e = e.__cause__ or e.__context__
    assert not any(t in text for t in tokens for text in chain)


def _img(rng, size=12):
    return PILImage.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8))


def _make_dataset() -> DatasetDict:
    rng = np.random.default_rng(0)
    train = {"study_id": ["s1", "s2", "s3"], "images": [[_img(rng), _img(rng)], [_img(rng)], [_img(rng, 20)] * 3],
             "target": ["normal", "unknown", "severe"], "severity": [0, -1, 2]}
    val = {"study_id": ["s4"], "images": [[_img(rng)]], "target": ["moderate"], "severity": [1]}
    return DatasetDict(train=Dataset.from_dict(train, features=FEATURES),
                       validation=Dataset.from_dict(val, features=FEATURES))


@pytest.fixture(scope="module")
def pushed(local_hub, tmp_path_factory):
    """A private dataset repo pushed by hub.push_dataset from a save_to_disk folder with its README card."""
    ds_dir = tmp_path_factory.mktemp("ds") / "tiny"
    dd = _make_dataset()
    dd.save_to_disk(str(ds_dir))
    (ds_dir / "README.md").write_text(CARD)
    url = hub.push_dataset(ds_dir, "owner/tiny-lumbar", token=local_hub.owner_token).url
    return "owner/tiny-lumbar", ds_dir, url


def test_push_dataset_private_with_merged_card(local_hub, pushed):
    repo, _, url = pushed
    assert url == f"{local_hub.url}/datasets/{repo}"
    api = HfApi(endpoint=local_hub.url, token=local_hub.owner_token)
    assert api.repo_info(repo, repo_type="dataset").private is True
    files = api.list_repo_files(repo, repo_type="dataset")
    assert any(f.startswith("data/train-") and f.endswith(".parquet") for f in files)
    assert any(f.startswith("data/validation-") for f in files)
    card = hub.download_file(repo, "README.md", "dataset").read_text()
    assert "# Tiny lumbar set" in card and "Synthetic rows for tests." in card
    for key in ("license: cc-by-4.0", "- radiology", "configs:", "dataset_info:", "class_label:"):
        assert key in card


def test_private_dataset_invisible_to_other_user_and_anonymous(local_hub, pushed, hub_cache):
    repo, _, _ = pushed
    for token in (local_hub.other_token, False):
        with pytest.raises(RepositoryNotFoundError):
            HfApi(endpoint=local_hub.url).repo_info(repo, repo_type="dataset", token=token)
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(repo, "README.md", repo_type="dataset", token=token, cache_dir=hub_cache)
    # datasets says "doesn't exist on the Hub or cannot be accessed" in its own words (DatasetNotFoundError)
    from datasets.exceptions import DatasetNotFoundError

    with pytest.raises((RepositoryNotFoundError, DatasetNotFoundError)):
        datasets.load_dataset(repo, streaming=True, token=local_hub.other_token, cache_dir=str(hub_cache / "ds"))
    with pytest.raises(hub.HubError) as e:
        hub.download_file(repo, "README.md", "dataset", token=local_hub.other_token, cache_dir=hub_cache)
    _assert_clean(e.value, local_hub.other_token)


def test_streaming_load_matches_local_copy(local_hub, pushed, hub_cache):
    repo, ds_dir, _ = pushed
    local = datasets.load_from_disk(str(ds_dir))
    remote = datasets.load_dataset(repo, streaming=True, token=local_hub.owner_token, cache_dir=str(hub_cache))
    assert set(remote) == {"train", "validation"}
    raw = Features({**FEATURES, "images": List(Image(decode=False))})
    for split in ("train", "validation"):
        rows = list(remote[split])
        assert [r["study_id"] for r in rows] == local[split]["study_id"]
        assert [r["target"] for r in rows] == local[split]["target"]
        assert [r["severity"] for r in rows] == local[split]["severity"]
        for r, l in zip(rows, local[split]):
            assert [np.asarray(i).tolist() for i in r["images"]] == [np.asarray(i).tolist() for i in l["images"]]
            assert all(i.mode == "L" for i in r["images"])
        remote_raw = list(remote[split].cast(raw))
        local_raw = local[split].cast(raw)
        for r, l in zip(remote_raw, local_raw):
            assert [i["bytes"] for i in r["images"]] == [i["bytes"] for i in l["images"]]
    assert remote["train"].features["severity"].names == ["normal", "moderate", "severe"]
    assert -1 in [r["severity"] for r in remote["train"]]


def _model_folder(path):
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_model.safetensors").write_bytes(np.random.default_rng(1).bytes(200_000))
    (path / "adapter_config.json").write_text('{"r": 16, "lora_alpha": 16}\n')
    return path


def _digests(folder, names):
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}


def test_dataset_repush_drops_stale_shards_and_an_unchanged_one_makes_no_commit(local_hub, tmp_path):
    repo, dd = "owner/repushed", _make_dataset()
    dd.save_to_disk(str(tmp_path / "both"))
    first = hub.push_dataset(tmp_path / "both", repo, card_text=CARD)
    assert first.changed and not hub.push_dataset(tmp_path / "both", repo, card_text=CARD).changed
    DatasetDict(train=dd["train"]).save_to_disk(str(tmp_path / "train-only"))
    again = hub.push_dataset(tmp_path / "train-only", repo, card_text=CARD)
    files = HfApi(endpoint=local_hub.url, token=local_hub.owner_token).list_repo_files(repo, repo_type="dataset")
    assert again.changed and any(f.startswith("data/train-") for f in files)
    assert not any(f.startswith("data/validation-") for f in files)


def test_upload_folder_snapshot_roundtrip_and_noop(local_hub, tmp_path):
    src = _model_folder(tmp_path / "adapter")
    names = ["adapter_model.safetensors", "adapter_config.json"]
    commit = hub.upload_folder(src, "owner/tiny-adapter", "model", "Add adapter")
    api = HfApi(endpoint=local_hub.url, token=local_hub.owner_token)
    sha = api.repo_info("owner/tiny-adapter").sha
    assert commit.endswith(sha) and api.repo_info("owner/tiny-adapter").private is True
    snap = hub.download_snapshot("owner/tiny-adapter", "model", local_dir=tmp_path / "snap")
    assert _digests(snap, names) == _digests(src, names)
    cached = hub.download_snapshot("owner/tiny-adapter", "model", allow_patterns="*.json")
    assert [p.name for p in cached.iterdir()] == ["adapter_config.json"]
    assert hub.upload_folder(src, "owner/tiny-adapter", "model", "Same again").endswith(sha)
    assert api.repo_info("owner/tiny-adapter").sha == sha  # unchanged re-upload: no new commit


def test_public_repo_refused_when_private_asked(local_hub, tmp_path):
    url = hub.ensure_repo("owner/was-public", "model", private=False)
    assert url.endswith("/owner/was-public")
    api = HfApi(endpoint=local_hub.url, token=local_hub.owner_token)
    sha = api.repo_info("owner/was-public").sha
    with pytest.raises(hub.HubError, match="public.*--public"):
        hub.ensure_repo("owner/was-public", "model")
    with pytest.raises(hub.HubError, match="private"):
        hub.upload_folder(_model_folder(tmp_path / "m"), "owner/was-public", "model", "x")
    assert api.repo_info("owner/was-public").sha == sha
    assert hub.ensure_repo("owner/was-public", "model", private=False) == url


def test_wrong_or_missing_token_uploads_nothing(local_hub, tmp_path, monkeypatch, pushed):
    api = HfApi(endpoint=local_hub.url, token=local_hub.owner_token)
    with pytest.raises(hub.HubError, match="HF_TOKEN.*hf auth login") as e:
        hub.upload_folder(_model_folder(tmp_path / "m"), "owner/never-made", "model", "x", token="hf_wrong_token_123")
    _assert_clean(e.value, "hf_wrong_token_123")
    with pytest.raises(hub.HubError, match="hf auth login"):
        hub.push_dataset(pushed[1], "owner/never-made-ds", token="hf_wrong_token_123")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(hub.HubError, match="No Hugging Face token.*HF_TOKEN"):
        hub.upload_folder(tmp_path / "m", "owner/never-made", "model", "x")
    for repo, rtype in (("owner/never-made", "model"), ("owner/never-made-ds", "dataset")):
        with pytest.raises(RepositoryNotFoundError):
            api.repo_info(repo, repo_type=rtype)


def test_foreign_namespace_is_refused(local_hub, tmp_path):
    with pytest.raises(hub.HubError, match="write access|not found") as e:
        hub.upload_folder(_model_folder(tmp_path / "m"), "owner/tiny-adapter", "model", "x",
                          token=local_hub.other_token)
    _assert_clean(e.value, local_hub.other_token)


def test_server_down_then_restart(local_hub, tmp_path, monkeypatch):
    """Stop the server mid-way: a clear error naming the endpoint; restart on the same root/port and finish."""
    tokens = {local_hub.owner_token: "owner"}
    src = _model_folder(tmp_path / "adapter")
    names = ["adapter_model.safetensors", "adapter_config.json"]
    before = _digests(src, names)
    srv = LocalHub(tmp_path / "root", tokens=tokens).start()
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    try:
        hub.upload_folder(src, "owner/flaky", "model", "first", allow_patterns="*.json")
        srv.stop()
        with pytest.raises(hub.HubError, match="cannot reach") as e:
            hub.upload_folder(src, "owner/flaky", "model", "second")
        assert srv.url in str(e.value)
        _assert_clean(e.value, local_hub.owner_token)
        srv = LocalHub(tmp_path / "root", port=srv.port, tokens=tokens).start()
        hub.upload_folder(src, "owner/flaky", "model", "second")
        snap = hub.download_snapshot("owner/flaky", "model", local_dir=tmp_path / "snap")
        assert _digests(snap, names) == before == _digests(src, names)
    finally:
        srv.stop()


def test_endpoint_follows_hf_endpoint(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    assert hub.hub_endpoint() == "http://127.0.0.1:9"
    with pytest.raises(hub.HubError, match=r"http://127\.0\.0\.1:9"):
        hub.ensure_repo("owner/x")
    with pytest.raises(ValueError):
        hub.ensure_repo("owner/x", repo_type="bucket")


def test_push_killed_mid_upload_keeps_previous_commit(local_hub, tmp_path):
    """SIGKILL a push while its LFS upload is in flight: the repo stays at its previous commit; a re-run completes."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    repo = "owner/interrupted-push"
    src = _model_folder(tmp_path / "adapter")
    names = ["adapter_model.safetensors", "adapter_config.json"]
    hub.upload_folder(src, repo, "model", "v1")
    api = HfApi(endpoint=local_hub.url, token=local_hub.owner_token)
    v1_sha, v1 = api.repo_info(repo).sha, _digests(src, names)
    (src / "adapter_model.safetensors").write_bytes(os.urandom(300_000))
    (src / "adapter_config.json").write_text('{"r": 32}')
    v2 = _digests(src, names)

    in_upload, release = threading.Event(), threading.Event()

    def stall_lfs(method: str, path: str) -> None:
        if method == "PUT" and path.startswith("/lfs-upload/"):
            in_upload.set()
            release.wait(30)

    code = f"from hubkit import hub; hub.upload_folder({str(src)!r}, {repo!r}, 'model', 'v2')"
    local_hub.hub.request_hook = stall_lfs
    try:
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # test_metrics sets it at import
        proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, env=env)
        assert in_upload.wait(60), "the push never reached its LFS upload"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        release.set()
        local_hub.hub.request_hook = None
    assert api.repo_info(repo).sha == v1_sha
    snap = hub.download_snapshot(repo, "model", local_dir=tmp_path / "after-kill")
    assert _digests(snap, names) == v1

    commit = hub.upload_folder(src, repo, "model", "v2 again")
    new_sha = api.repo_info(repo).sha
    assert new_sha != v1_sha and commit.endswith(new_sha)
    snap = hub.download_snapshot(repo, "model", local_dir=tmp_path / "after-rerun")
    assert _digests(snap, names) == v2


# ------------------------------------------------------------------------------------- the CLI's Hub failures
INTERNAL_NAMES = ("download_snapshot", "ensure_repo", "dataset_info", "repo_info", "push_dataset", "whoami",
                  "download_file", "check push access")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """A built dataset folder (local) for the verbs that also need one."""
    from hubkit.config import BuildConfig
    from hubkit.dataset_builder.build import build_dataset
    from hubkit.devkit.synth import synth_cohort

    root = tmp_path_factory.mktemp("failing-hub")
    synth_cohort(root / "cohort", 3, seed=3, progress=False)
    build_dataset(BuildConfig(data_dir=str(root / "cohort"), slice_size=32, validation_fraction=0.34), root / "ds")
    return root / "ds"


def _verbs(ds, tmp_path) -> dict[str, list[str]]:
    """Every verb that reads or writes a Hub repo, pointed at a repo that is not there."""
    missing = "owner/no-such-repo"
    return {
        "train": ["train", "--dataset", missing, "--base-model", "owner/no-such-base", "--output",
                  str(tmp_path / "run")],
        "evaluate (dataset)": ["evaluate", "--model", str(tmp_path), "--dataset", missing, "--output",
                               str(tmp_path / "e1")],
        "evaluate (model)": ["evaluate", "--model", missing, "--dataset", str(ds), "--output", str(tmp_path / "e2")],
        "predict": ["predict", str(ds.parent / "cohort" / "train_images"), "--model", missing, "--output",
                    str(tmp_path / "s.csv")],
    }


@pytest.mark.parametrize("hub_state", ["missing repo", "unreachable hub"])
def test_every_verb_fails_on_the_hub_in_one_line_within_seconds(tiny_dataset, tmp_path, monkeypatch, hub_state):
    import time

    from click.testing import CliRunner

    from hubkit.cli import cli

    verbs = _verbs(tiny_dataset, tmp_path)
    if hub_state == "unreachable hub":
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: connection refused
        verbs["push"] = ["push", str(tiny_dataset), "owner/no-such-repo"]  # (where it answers, a push creates it)
    for verb, args in verbs.items():
        t0 = time.perf_counter()
        res = CliRunner().invoke(cli, args)
        took = time.perf_counter() - t0
        lines = [x for x in res.output.splitlines() if x.strip()]
        assert res.exit_code == 1, (verb, res.output)
        assert len(lines) == 1 and lines[0].startswith("Error: "), (verb, res.output)  # no retry lines
        assert not any(name in lines[0] for name in INTERNAL_NAMES), (verb, lines[0])
        want = "cannot reach the Hub" if hub_state == "unreachable hub" else "not found"
        assert want in lines[0] and "Traceback" not in res.output, (verb, lines[0])
        assert took < 8, f"{verb}: {took:.1f} s before the error"  # datasets alone retried for 25-33 s
    assert not (tmp_path / "e1").exists() and not (tmp_path / "e2").exists()  # nothing left behind
