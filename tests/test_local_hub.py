"""The loopback Hub answers the real huggingface_hub client (the routes of hubkit.devkit.hub_api and hub_auth)."""

from __future__ import annotations

import hashlib
import json
import socket

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

from hubkit.devkit.local_hub import LocalHub, hub_env

WEIGHTS = bytes(range(256)) * 1200  # ~300 KB, "lfs" by suffix
CONFIG = b'{"hidden_size": 8}\n'


@pytest.fixture(scope="module")
def model_repo(local_hub, tmp_path_factory):
    """owner/lh-model (private) with an LFS file, a regular file and a nested file."""
    folder = tmp_path_factory.mktemp("lh-model")
    (folder / "model.safetensors").write_bytes(WEIGHTS)
    (folder / "config.json").write_bytes(CONFIG)
    (folder / "sub" / "deep").mkdir(parents=True)
    (folder / "sub" / "deep" / "notes.txt").write_text("hello\n")
    api = HfApi(endpoint=local_hub.url, token=local_hub.owner_token)
    api.create_repo("owner/lh-model", private=True)
    info = api.upload_folder(folder_path=folder, repo_id="owner/lh-model", commit_message="init")
    return "owner/lh-model", info.oid


def _get(local_hub, path, token=None, method="GET", **kw):
    headers = kw.pop("headers", {})
    if token:
        headers["authorization"] = f"Bearer {token}"
    return httpx.request(method, local_hub.url + path, headers=headers, **kw)


def test_create_is_private_and_409_carries_url(local_hub):
    api = HfApi(endpoint=local_hub.url, token=local_hub.owner_token)
    url = api.create_repo("owner/lh-create", private=True)
    assert str(url) == f"{local_hub.url}/owner/lh-create"
    assert str(api.create_repo("owner/lh-create", private=True, exist_ok=True)) == str(url)
    r = _get(local_hub, "/api/repos/create", local_hub.owner_token, "POST", json={"name": "lh-create", "type": "model"})
    assert r.status_code == 409 and r.json()["url"] == str(url)
    assert api.repo_info("owner/lh-create").private is True
    assert api.whoami()["name"] == "owner"
    with pytest.raises(HfHubHTTPError) as e:  # creating in someone else's namespace
        HfApi(endpoint=local_hub.url, token=local_hub.other_token).create_repo("owner/nope")
    assert e.value.response.status_code == 403


def test_private_repo_is_invisible_to_others(local_hub, model_repo, hub_cache):
    repo, _ = model_repo
    for token in (local_hub.other_token, False):
        with pytest.raises(RepositoryNotFoundError):
            HfApi(endpoint=local_hub.url).repo_info(repo, token=token)
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(repo, "config.json", token=token, cache_dir=hub_cache)
    anon, other = _get(local_hub, f"/api/models/{repo}"), _get(local_hub, f"/api/models/{repo}", local_hub.other_token)
    assert (anon.status_code, other.status_code) == (401, 404)
    assert anon.headers["X-Error-Code"] == other.headers["X-Error-Code"] == "RepoNotFound"
    assert _get(local_hub, f"/api/models/{repo}", "hf_unknown").status_code == 401


def test_settings_visibility_and_foreign_write_is_403(local_hub, tmp_path):
    owner = HfApi(endpoint=local_hub.url, token=local_hub.owner_token)
    other = HfApi(endpoint=local_hub.url, token=local_hub.other_token)
    owner.create_repo("owner/lh-vis", private=True)
    owner.update_repo_settings("owner/lh-vis", private=False)
    assert other.repo_info("owner/lh-vis").private is False
    with pytest.raises(HfHubHTTPError) as e:
        other.create_commit("owner/lh-vis", [CommitOperationAdd("x.txt", b"x")], commit_message="intrude")
    assert e.value.response.status_code == 403
    r = _get(local_hub, "/api/models/owner/lh-vis/settings", local_hub.owner_token, "PUT",
             json={"visibility": "private"})
    assert r.status_code == 200
    with pytest.raises(RepositoryNotFoundError):
        other.repo_info("owner/lh-vis")
    owner.delete_repo("owner/lh-vis")
    with pytest.raises(RepositoryNotFoundError):
        owner.repo_info("owner/lh-vis")


def test_tree_paths_info_and_resolve_headers(local_hub, model_repo):
    repo, oid = model_repo
    api = HfApi(endpoint=local_hub.url, token=local_hub.owner_token)
    info = api.repo_info(repo)
    assert info.sha == oid
    assert {s.rfilename for s in info.siblings} == {".gitattributes", "config.json", "model.safetensors",
                                                   "sub/deep/notes.txt"}
    tree = {e.path: e for e in api.list_repo_tree(repo, recursive=True)}
    assert {"sub", "sub/deep", "sub/deep/notes.txt"} <= set(tree)
    assert tree["model.safetensors"].lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert tree["config.json"].blob_id == hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()
    assert {e.path for e in api.list_repo_tree(repo)} == {".gitattributes", "config.json", "model.safetensors", "sub"}
    assert [e.path for e in api.list_repo_tree(repo, path_in_repo="sub/deep")] == ["sub/deep/notes.txt"]
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo, path_in_repo="nope"))
    assert {e.path for e in api.get_paths_info(repo, ["config.json", "sub", "missing"])} == {"config.json", "sub"}

    head = _get(local_hub, f"/{repo}/resolve/main/model.safetensors", local_hub.owner_token, "HEAD")
    assert head.status_code == 200 and head.headers["X-Repo-Commit"] == oid
    assert head.headers["X-Linked-Etag"] == f'"{hashlib.sha256(WEIGHTS).hexdigest()}"'
    assert head.headers["X-Linked-Size"] == head.headers["Content-Length"] == str(len(WEIGHTS))
    assert head.headers["Accept-Ranges"] == "bytes" and head.headers["ETag"]
    missing = _get(local_hub, f"/{repo}/resolve/main/nope.bin", local_hub.owner_token, "HEAD")
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
    assert missing.headers["X-Repo-Commit"] == oid


def test_range_requests(local_hub, model_repo):
    repo, _ = model_repo
    url = f"/{repo}/resolve/main/model.safetensors"
    r = _get(local_hub, url, local_hub.owner_token, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == WEIGHTS[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(WEIGHTS)}"
    r = _get(local_hub, url, local_hub.owner_token, headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == WEIGHTS[-5:]
    r = _get(local_hub, url, local_hub.owner_token, headers={"Range": f"bytes={len(WEIGHTS) - 3}-99999999"})
    assert r.status_code == 206 and r.content == WEIGHTS[-3:]
    assert _get(local_hub, url, local_hub.owner_token, headers={"Range": "bytes=99999999-"}).status_code == 416
    assert _get(local_hub, url, local_hub.owner_token).content == WEIGHTS


def test_parent_commit_412_and_branches(local_hub, tmp_path):
    api = HfApi(endpoint=local_hub.url, token=local_hub.owner_token)
    api.create_repo("owner/lh-branch", private=True)
    first = api.repo_info("owner/lh-branch").sha
    api.create_commit("owner/lh-branch", [CommitOperationAdd("a.txt", b"a")], commit_message="a")
    with pytest.raises(HfHubHTTPError) as e:
        api.create_commit("owner/lh-branch", [CommitOperationAdd("b.txt", b"b")], commit_message="b",
                          parent_commit=first)
    assert e.value.response.status_code == 412
    api.create_branch("owner/lh-branch", branch="dev")
    api.create_branch("owner/lh-branch", branch="dev", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as e:
        api.create_branch("owner/lh-branch", branch="dev")
    assert e.value.response.status_code == 409
    api.create_commit("owner/lh-branch", [CommitOperationAdd("d.bin", b"\0dev")], commit_message="d", revision="dev")
    assert set(api.list_repo_files("owner/lh-branch", revision="dev")) == {".gitattributes", "a.txt", "d.bin"}
    assert "d.bin" not in api.list_repo_files("owner/lh-branch")
    path = hf_hub_download("owner/lh-branch", "d.bin", revision="dev", cache_dir=tmp_path)
    assert open(path, "rb").read() == b"\0dev"


def test_lfs_upload_checks_capability_and_hash(local_hub):
    data = b"payload" * 100
    oid = hashlib.sha256(data).hexdigest()
    HfApi(endpoint=local_hub.url, token=local_hub.owner_token).create_repo("owner/lh-lfs", private=True)
    body = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}
    batch = _get(local_hub, "/owner/lh-lfs.git/info/lfs/objects/batch", local_hub.owner_token, "POST", json=body)
    href = batch.json()["objects"][0]["actions"]["upload"]["href"]
    assert local_hub.owner_token not in href
    assert httpx.put(href.replace("cap=", "cap=0"), content=data).status_code == 403
    assert httpx.put(href, content=data[:-1] + b"X").status_code == 400
    assert httpx.put(href, content=data).status_code == 200
    again = _get(local_hub, "/owner/lh-lfs.git/info/lfs/objects/batch", local_hub.owner_token, "POST", json=body)
    assert "actions" not in again.json()["objects"][0]
    foreign = _get(local_hub, "/owner/lh-lfs.git/info/lfs/objects/batch", local_hub.other_token, "POST", json=body)
    assert foreign.status_code == 404  # private repo: invisible, not even 403


def test_oversized_body_is_refused(local_hub):
    host, port = local_hub.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 99999999999\r\n\r\n{}")
        assert s.recv(4096).split(b"\r\n")[0].endswith(b"413 Request Entity Too Large")


def test_repos_persist_across_restarts(tmp_path):
    tokens = {"t1": "alice"}
    with LocalHub(tmp_path / "root", tokens=tokens) as hub:
        api = HfApi(endpoint=hub.url, token="t1")
        api.create_repo("alice/keep", repo_type="dataset", private=True)
        api.create_commit("alice/keep", [CommitOperationAdd("x.parquet", b"PAR1data")], commit_message="x",
                          repo_type="dataset")
        sha = api.repo_info("alice/keep", repo_type="dataset").sha
        port = hub.port
    with LocalHub(tmp_path / "root", port=port, tokens=tokens) as hub:
        api = HfApi(endpoint=hub.url, token="t1")
        assert api.repo_info("alice/keep", repo_type="dataset").sha == sha
        r = httpx.get(f"{hub.url}/datasets/alice/keep/resolve/main/x.parquet", headers={"authorization": "Bearer t1"})
        assert r.content == b"PAR1data"
    stored = json.loads((tmp_path / "root" / "repos" / "datasets" / "alice" / "keep" / "repo.json").read_text())
    assert stored["private"] is True and stored["refs"]["main"] == sha


def test_hub_env_and_default_tokens_file(tmp_path):
    env = hub_env("http://127.0.0.1:1/", "tok", tmp_path)
    assert env["HF_ENDPOINT"] == "http://127.0.0.1:1" and env["HF_HUB_DISABLE_XET"] == "1"
    assert env["HF_HUB_CACHE"].startswith(str(tmp_path)) and env["HF_TOKEN"] == "tok"
    hub = LocalHub(tmp_path / "r")
    assert list(hub.tokens.values()) == ["local"]
    assert json.loads((tmp_path / "r" / "tokens.json").read_text()) == hub.tokens


# -- README.md metadata, checked as the Hub checks it ------------------------------------------------------------------
def test_commit_with_invalid_card_metadata_is_refused(local_hub):
    api = HfApi(endpoint=local_hub.url, token=local_hub.owner_token)
    api.create_repo("owner/lh-card", private=True)
    bad = b"---\nlicense: not-a-licence\n---\n# Card\n"
    with pytest.raises(ValueError, match=r'Invalid metadata in README.md.\n- "license" "not-a-licence" is not a Hub'):
        api.create_commit("owner/lh-card", [CommitOperationAdd("README.md", bad)], commit_message="bad card")
    assert "README.md" not in api.list_repo_files("owner/lh-card")  # refused before anything was committed
    good = b"---\nlicense: cc-by-4.0\npipeline_tag: image-text-to-text\ntags: [medical]\n---\n# Card\n"
    api.create_commit("owner/lh-card", [CommitOperationAdd("README.md", good)], commit_message="good card")
    assert "README.md" in api.list_repo_files("owner/lh-card")
    with pytest.warns(UserWarning, match="empty or missing yaml metadata"):
        api.create_commit("owner/lh-card", [CommitOperationAdd("README.md", b"# No metadata\n")],
                          commit_message="no metadata")
    r = _get(local_hub, "/api/validate-yaml", None, "POST", json={"content": bad.decode(), "repoType": "dataset"})
    assert r.status_code == 400 and r.json()["warnings"] == [] and "not-a-licence" in r.json()["errors"][0]["message"]
    assert _get(local_hub, "/api/validate-yaml", None, "POST", json={"content": 3}).status_code == 400


# -- token roles, whoami-v2, auth-check ------------------------------------------------------------------------------
@pytest.fixture
def role_hub(tmp_path):
    """A hub with alice (write token "w", read token "r") and bob ("b"); alice/pub is public, alice/priv private."""
    with LocalHub(tmp_path / "roles", tokens={"w": "alice", "r": "alice:read", "b": "bob:write"}) as hub:
        api = HfApi(endpoint=hub.url, token="w")
        for name, private in (("pub", False), ("priv", True)):
            api.create_repo(f"alice/{name}", private=private)
            api.create_commit(f"alice/{name}", [CommitOperationAdd("config.json", CONFIG)], commit_message="c")
        yield hub


def test_whoami_reports_the_token_role(role_hub):
    for token, role in (("w", "write"), ("r", "read")):
        me = HfApi(endpoint=role_hub.url, token=token).whoami()
        assert me["type"] == "user" and me["name"] == "alice" and me["orgs"] == []
        assert me["auth"]["type"] == "access_token" and me["auth"]["accessToken"]["role"] == role
        assert me["auth"]["accessToken"]["displayName"]
    for bad in ("alice:admin", ":read", ""):
        with pytest.raises(ValueError, match="expected USER, USER:read or USER:write"):
            LocalHub(role_hub.root, tokens={"x": bad})


def test_read_token_reads_but_every_write_is_403(role_hub, tmp_path):
    ro = HfApi(endpoint=role_hub.url, token="r")
    assert ro.repo_info("alice/priv").private is True  # its owner's private repo: readable
    path = hf_hub_download("alice/priv", "config.json", token="r", endpoint=role_hub.url, cache_dir=tmp_path)
    assert open(path, "rb").read() == CONFIG
    writes = [
        lambda: ro.create_repo("alice/new"),
        lambda: ro.create_commit("alice/pub", [CommitOperationAdd("x.txt", b"x")], commit_message="x"),
        lambda: ro.update_repo_settings("alice/pub", private=True),
        lambda: ro.create_branch("alice/pub", branch="dev"),
        lambda: ro.delete_repo("alice/pub"),
    ]
    for write in writes:
        with pytest.raises(HfHubHTTPError) as e:
            write()
        assert e.value.response.status_code == 403 and "X-Error-Code" not in e.value.response.headers
        assert "you must use a write token to " in e.value.response.headers["X-Error-Message"]
    body = {"operation": "upload", "objects": [{"oid": "0" * 64, "size": 1}]}
    assert _lfs(role_hub, "alice/pub", "r", body).status_code == 403
    # as on the Hub, create_repo(exist_ok=True) falls back to repo_info on a 403: no error for an existing repo
    assert str(ro.create_repo("alice/pub", exist_ok=True)).endswith("/alice/pub")
    assert HfApi(endpoint=role_hub.url, token="w").repo_info("alice/pub").private is False  # nothing changed


def _lfs(hub, repo, token, body):
    return httpx.post(f"{hub.url}/{repo}.git/info/lfs/objects/batch", json=body,
                      headers={"authorization": f"Bearer {token}"})


def test_auth_check(role_hub):
    def check(repo, token, write=False):
        HfApi(endpoint=role_hub.url).auth_check(repo, token=token, write=write)

    check("alice/pub", "w", write=True)
    check("alice/priv", "w", write=True)
    check("alice/priv", "r")
    check("alice/pub", "b")
    check("alice/pub", False)
    for repo, token in (("alice/priv", "r"), ("alice/pub", "b"), ("alice/pub", False)):
        with pytest.raises(HfHubHTTPError) as e:  # no write: a plain 403, not "not found"
            check(repo, token, write=True)
        assert type(e.value) is HfHubHTTPError and e.value.response.status_code == 403
    for repo, token in (("alice/priv", "b"), ("alice/priv", False), ("alice/missing", "w")):
        for write in (False, True):
            with pytest.raises(RepositoryNotFoundError):
                check(repo, token, write)
    r = httpx.get(f"{role_hub.url}/api/models/alice/pub/auth-check/write", headers={"authorization": "Bearer w"})
    assert r.status_code == 200 and r.content == b""


def test_cli_serve_passes_read_roles_through(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import hubkit.devkit.local_hub as lh
    from hubkit.cli import cli

    seen = {}
    monkeypatch.setattr(lh, "serve", lambda root, host, port, tokens: seen.update(tokens))
    result = CliRunner().invoke(cli, ["hub", "serve", "--root", str(tmp_path), "--token", "hf_ro=me:read",
                                      "--token", "hf_rw=me"])
    assert result.exit_code == 0, result.output
    with LocalHub(tmp_path / "hub", tokens=seen) as hub:
        roles = {t: HfApi(endpoint=hub.url, token=t).whoami()["auth"]["accessToken"]["role"] for t in seen}
    assert roles == {"hf_ro": "read", "hf_rw": "write"}


# -- gated repos --------------------------------------------------------------------------------------------------
def test_gated_repo_shows_metadata_but_not_files(local_hub, hub_cache):
    from transformers import AutoConfig

    repo = "owner/lh-gated"
    owner = HfApi(endpoint=local_hub.url, token=local_hub.owner_token)
    owner.create_repo(repo, private=False)
    owner.create_commit(repo, [CommitOperationAdd("config.json", b'{"model_type": "bert"}')], commit_message="c")
    local_hub.hub.set_gated("model", repo)
    other = HfApi(endpoint=local_hub.url, token=local_hub.other_token)
    assert other.model_info(repo).gated == "manual" and HfApi().repo_exists(repo, token=False)
    denied = (f"Access to model {repo} is restricted and you are not in the authorized list. "
              f"Visit {local_hub.url}/{repo} to ask for access.")
    for token, status, text in ((local_hub.other_token, 403, denied), (False, 401, "Please log in.")):
        with pytest.raises(GatedRepoError) as e:
            hf_hub_download(repo, "config.json", token=token, cache_dir=hub_cache)
        assert e.value.response.status_code == status and text in str(e.value)
        api = HfApi(token=token)
        for call in (lambda: api.auth_check(repo), lambda: list(api.list_repo_tree(repo)),
                     lambda: api.get_paths_info(repo, ["config.json"])):
            with pytest.raises(GatedRepoError):
                call()
    with pytest.raises(OSError) as e:  # transformers wraps it, the Hub's error kept as the cause
        AutoConfig.from_pretrained(repo, token=local_hub.other_token, cache_dir=hub_cache)
    assert isinstance(e.value.__cause__, GatedRepoError)
    owner.auth_check(repo)  # the owner is never gated
    local_hub.hub.set_gated("model", repo, allowed=("other",))
    other.auth_check(repo)
    assert AutoConfig.from_pretrained(repo, token=local_hub.other_token, cache_dir=hub_cache).model_type == "bert"
    stored = json.loads((local_hub.root / "repos" / "models" / "owner" / "lh-gated" / "repo.json").read_text())
    assert stored["gated"] == "manual" and stored["allowed"] == ["other"]
    local_hub.hub.set_gated("model", repo, gated=False)
    assert HfApi().model_info(repo, token=False).gated is False
    with pytest.raises(ValueError, match="does not exist on this hub: create it first"):
        local_hub.hub.set_gated("model", "owner/nope")


# -- model info --------------------------------------------------------------------------------------------------
def test_model_info_sizes_only_with_files_metadata(local_hub, model_repo):
    repo, _ = model_repo
    api = HfApi(endpoint=local_hub.url, token=local_hub.owner_token)
    sizes = {s.rfilename: s.size for s in api.model_info(repo, files_metadata=True).siblings}
    assert sizes["model.safetensors"] == len(WEIGHTS) and sizes["config.json"] == len(CONFIG)
    lfs = {s.rfilename: s.lfs for s in api.model_info(repo, files_metadata=True).siblings}
    assert lfs["model.safetensors"].sha256 == hashlib.sha256(WEIGHTS).hexdigest() and lfs["config.json"] is None
    assert {s.size for s in api.model_info(repo).siblings} == {None}  # as on the Hub: sizes only when asked
