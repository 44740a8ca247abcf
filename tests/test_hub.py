"""spectral_prior.hub against a local Hub stand-in: real huggingface_hub code, no internet."""
from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

import pytest
import torch
from hub_server import (  # noqa: F401 - the *_fixture imports register the "hub_server"/"hub_client" fixtures
    HubClient,
    LocalHub,
    hub_client_fixture,
    hub_env,
    hub_server_fixture,
    run_python,
)
from huggingface_hub import HfApi, snapshot_download
from safetensors.torch import load_file, save

from spectral_prior.saving import hub
from spectral_prior.saving.hub import PriorDownloadError, download_prior, push_to_hub, resolve_prior_source

try:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
except ImportError:  # huggingface_hub < 0.24
    from huggingface_hub.utils import (  # type: ignore[no-redef]
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

REPO = "acme/mst-prior"


def _prior_files() -> dict[str, bytes]:
    """The two files of a saved prior: a JSON config and real safetensors weights."""
    weights = {"denoiser.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4), "bias": torch.ones(5)}
    config = {"backbone": "mst_s", "channels": 28, "steps": 3}
    return {"config.json": json.dumps(config).encode(), "model.safetensors": save(weights)}


def _read(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in ("config.json", "model.safetensors")}


def _resolve_requests(log: list[tuple[str, str]], method: str) -> set[str]:
    """File names requested with ``method`` on the resolve endpoint."""
    return {path.rsplit("/", 1)[-1] for m, path in log if m == method and "/resolve/" in path}


# -- source names ---------------------------------------------------------------------------------


def test_resolve_prior_source_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(hub.PUBLISHED_PRIORS, "mst_m-sdp", "spectral-prior/mst_m-sdp")
    assert resolve_prior_source("mst_m-sdp") == "spectral-prior/mst_m-sdp"
    assert resolve_prior_source("mst_s-sdp") == str(hub.PRETRAINED_DIR / "mst_s_sdp")  # embedded names win
    assert resolve_prior_source(str(tmp_path)) == str(tmp_path)
    assert resolve_prior_source(tmp_path) == str(tmp_path)
    for repo in ("owner/name", "spectral-prior/mst_s-sdp", "a.b/c_d@v1.0", "o/n@refs/pr/3", "o/n@" + "f" * 40):
        assert resolve_prior_source(repo) == repo

    with pytest.raises(ValueError, match=r"unknown prior name 'mst_l-sdp'.*name \(bisrnet-baseline, bisrnet-official, bisrnet-sdp, default, mst_s-baseline, "
                       r"mst_s-sdp, mst_m-sdp\)"):
        resolve_prior_source("mst_l-sdp")
    for bad in ("", "a/b/c", "./not/here", "owner/", "owner/name@", "-owner/name", "own--er/name", "a b/c"):
        with pytest.raises(ValueError, match=r"not a local directory nor a Hub repo id.*'owner/name@revision'"):
            resolve_prior_source(bad)


def test_unknown_name_lists_the_embedded_and_published_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "PUBLISHED_PRIORS", {})
    with pytest.raises(ValueError, match=r"unknown prior name 'nope': .*published name \(bisrnet-baseline, bisrnet-official, bisrnet-sdp, "
                       r"default, mst_s-baseline, mst_s-sdp\)"):
        download_prior("nope")


# -- local directories ----------------------------------------------------------------------------


def test_local_directory(tmp_path: Path) -> None:
    for name, data in _prior_files().items():
        (tmp_path / name).write_bytes(data)
    assert download_prior(str(tmp_path)) == tmp_path.resolve()
    assert download_prior(tmp_path, optional=["README.md"]) == tmp_path.resolve()

    with pytest.raises(FileNotFoundError, match=rf"prior directory {tmp_path.resolve()} has no extra\.json"):
        download_prior(tmp_path, filenames=["config.json", "extra.json"])
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no model\.safetensors"):
        download_prior(tmp_path)
    with pytest.raises(ValueError, match=r"revision='main' only applies to Hub repos"):
        download_prior(tmp_path, revision="main")


# -- through the local Hub, in subprocesses configured by environment variables -----------------

_DOWNLOAD = """
import json
from spectral_prior.saving.hub import download_prior
path = download_prior({source!r})
print(json.dumps({{"dir": str(path)}}))
"""


@pytest.mark.slow
def test_download_then_offline_from_cache(hub_server: LocalHub, tmp_path: Path) -> None:
    files = _prior_files()
    commit = hub_server.add_repo(REPO, {**files, "README.md": b"# a prior\n"})
    home = tmp_path / "hf_home"

    # (b) online: every file goes through HEAD (metadata) then GET (bytes).
    out = run_python(_DOWNLOAD.format(source=REPO), hub_env(hub_server.endpoint, home))
    snapshot = Path(json.loads(out)["dir"])
    assert snapshot == home / "hub" / "models--acme--mst-prior" / "snapshots" / commit
    assert _read(snapshot) == files
    assert not (snapshot / "README.md").exists()  # not asked for
    log = hub_server.log()
    assert _resolve_requests(log, "HEAD") == _resolve_requests(log, "GET") == {"config.json", "model.safetensors"}
    assert ("HEAD", f"/{REPO}/resolve/main/config.json") in log
    loaded = load_file(str(snapshot / "model.safetensors"))
    assert torch.equal(loaded["denoiser.weight"], torch.arange(12, dtype=torch.float32).reshape(3, 4))

    # (c) HF_HUB_OFFLINE=1 and the same cache: served from disk, the running server hears nothing.
    hub_server.clear_log()
    out = run_python(_DOWNLOAD.format(source=REPO), hub_env(hub_server.endpoint, home, offline=True))
    assert Path(json.loads(out)["dir"]) == snapshot
    assert hub_server.log() == []

    # ... and once the server is gone: offline, or online with the connection refused.
    hub_server.stop()
    for offline in (True, False):
        out = run_python(_DOWNLOAD.format(source=REPO), hub_env(hub_server.endpoint, home, offline=offline))
        assert _read(Path(json.loads(out)["dir"])) == files
    assert hub_server.log() == []


def test_offline_and_not_cached_in_subprocess(hub_server: LocalHub, tmp_path: Path) -> None:
    hub_server.add_repo(REPO, _prior_files())
    code = """
from spectral_prior.saving.hub import PriorDownloadError, download_prior
try:
    download_prior("acme/mst-prior")
except PriorDownloadError as err:
    print(type(err.__cause__).__name__, err)
"""
    out = run_python(code, hub_env(hub_server.endpoint, tmp_path / "fresh_home", offline=True))
    assert out.startswith("LocalEntryNotFoundError acme/mst-prior")
    assert f"not in the cache at {tmp_path / 'fresh_home' / 'hub'}" in out
    assert "HF_HUB_OFFLINE=1 or no network" in out
    assert hub_server.log() == []


# -- through the local Hub, in-process with huggingface_hub's constants patched ------------------


def test_download_in_process_cache_layout(hub_server: LocalHub, hub_client: HubClient, tmp_path: Path) -> None:
    files = _prior_files()
    commit = hub_server.add_repo(REPO, files)
    snapshot = download_prior(REPO)
    assert snapshot == hub_client.cache_dir / "models--acme--mst-prior" / "snapshots" / commit
    assert _read(snapshot) == files
    # Blobs are named by ETag: git sha1 for the plain file, sha256 (X-Linked-Etag) for the LFS-style one.
    blobs = {p.name for p in (snapshot.parents[1] / "blobs").iterdir()}
    git_sha1 = hashlib.sha1(b"blob %d\0" % len(files["config.json"]) + files["config.json"]).hexdigest()
    assert blobs == {git_sha1, hashlib.sha256(files["model.safetensors"]).hexdigest()}

    # A second call finds everything cached at the pinned commit: metadata checks only, no GET.
    hub_server.clear_log()
    assert download_prior(REPO) == snapshot
    assert _resolve_requests(hub_server.log(), "GET") == set()

    # An explicit cache_dir is honoured.
    other = download_prior(REPO, cache_dir=tmp_path / "other_cache")
    assert other == tmp_path / "other_cache" / "models--acme--mst-prior" / "snapshots" / commit
    assert _read(other) == files


def test_published_name_and_revisions(
    hub_server: LocalHub, hub_client: HubClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _prior_files()
    commit = hub_server.add_repo(REPO, files)
    monkeypatch.setitem(hub.PUBLISHED_PRIORS, "mst_m-sdp", REPO)
    assert _read(download_prior("mst_m-sdp")) == files

    hub_server.clear_log()
    assert download_prior(f"{REPO}@{commit}").name == commit
    assert download_prior(REPO, revision=commit).name == commit
    assert download_prior(f"{REPO}@main", revision="main").name == commit

    with pytest.raises(ValueError, match=r"conflicting revisions for acme/mst-prior: 'main' .* revision='dev'"):
        download_prior(f"{REPO}@main", revision="dev")
    with pytest.raises(PriorDownloadError, match=r"repo acme/mst-prior has no revision v9") as info:
        download_prior(REPO, revision="v9")
    assert isinstance(info.value.__cause__, RevisionNotFoundError)


def test_hub_errors(hub_server: LocalHub, hub_client: HubClient) -> None:
    hub_server.add_repo(REPO, _prior_files())

    missing_repo = r"^no Hub repo acme/missing \(check the id, or pass token= for a private repo\)$"
    with pytest.raises(PriorDownloadError, match=missing_repo) as info:
        download_prior("acme/missing")
    assert isinstance(info.value.__cause__, RepositoryNotFoundError)

    missing_file = r"^repo acme/mst-prior has no file extra\.bin at revision main$"
    with pytest.raises(PriorDownloadError, match=missing_file) as info:
        download_prior(REPO, filenames=["config.json", "extra.bin"])
    cause = info.value.__cause__
    assert isinstance(cause, EntryNotFoundError) and not isinstance(cause, LocalEntryNotFoundError)

    # A missing optional file is skipped; present optional files are fetched.
    hub_server.add_repo("acme/with-card", {**_prior_files(), "README.md": b"card"})
    snapshot = download_prior("acme/with-card", optional=["README.md", "notes.txt"])
    assert (snapshot / "README.md").read_bytes() == b"card" and not (snapshot / "notes.txt").exists()

    # Not cached + offline (or local_files_only): a clear message, and no request at all.
    hub_server.clear_log()
    not_cached = r"^acme/never-fetched .* is not in the cache at .* and the Hub cannot be reached \({}\)"
    with pytest.raises(PriorDownloadError, match=not_cached.format("local_files_only=True")) as info:
        download_prior("acme/never-fetched", local_files_only=True)
    assert isinstance(info.value.__cause__, LocalEntryNotFoundError)
    hub_client.set_offline(True)
    with pytest.raises(PriorDownloadError, match=not_cached.format("HF_HUB_OFFLINE=1 or no network")) as info:
        download_prior("acme/never-fetched")
    assert isinstance(info.value.__cause__, LocalEntryNotFoundError)
    assert f"not in the cache at {hub_client.cache_dir} " in str(info.value)
    assert hub_server.log() == []

    hub_client.set_offline(False)
    with pytest.raises(ValueError, match=r"filenames must name at least one required file"):
        download_prior(REPO, filenames=[])


def test_private_repo_needs_token(hub_server: LocalHub, hub_client: HubClient) -> None:
    files = _prior_files()
    hub_server.add_repo("acme/private", files, token="s3cret")
    with pytest.raises(PriorDownloadError, match=r"no Hub repo acme/private"):
        download_prior("acme/private")
    with pytest.raises(PriorDownloadError, match=r"no Hub repo acme/private"):
        download_prior("acme/private", token="wrong")
    assert _read(download_prior("acme/private", token="s3cret")) == files


def test_server_speaks_snapshot_download_and_ranges(hub_server: LocalHub, hub_client: HubClient) -> None:
    files = {**_prior_files(), "extra/notes.txt": b"0123456789"}
    commit = hub_server.add_repo(REPO, files)
    folder = Path(snapshot_download(REPO))
    assert folder.name == commit
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files
    assert ("GET", f"/api/models/{REPO}/revision/main") in hub_server.log()
    # download_prior returns the snapshot root even when the first file sits in a subfolder.
    assert download_prior(REPO, filenames=["extra/notes.txt", "config.json"]) == folder

    request = urllib.request.Request(f"{hub_server.endpoint}/{REPO}/resolve/main/extra/notes.txt")
    request.add_header("Range", "bytes=3-6")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 206 and response.read() == b"3456"
        assert response.headers["Content-Range"] == "bytes 3-6/10"
        assert response.headers["X-Repo-Commit"] == commit


# -- push_to_hub: argument handling, with HfApi's network methods replaced ------------------------


def test_push_to_hub_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict]] = []

    def fake_create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, "token": self.token, **kwargs}))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def fake_upload_folder(self, **kwargs):
        calls.append(("upload_folder", kwargs))
        return type("CommitInfo", (), {"commit_url": f"https://hub.invalid/{kwargs['repo_id']}/commit/abc"})()

    monkeypatch.setattr(HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)
    import spectral_prior as sp
    from spectral_prior.adapters import create_backbone

    sp.save_backbone(tmp_path, create_backbone("mst_s"), name="mst_s")  # a baseline run's final/: no model.safetensors

    url = push_to_hub(tmp_path, "acme/new-prior", token="hf_xyz", private=True, commit_message="v1")
    assert url == "https://hub.invalid/acme/new-prior/commit/abc"
    assert calls == [
        (
            "create_repo",
            {"repo_id": "acme/new-prior", "token": "hf_xyz", "private": True, "exist_ok": True, "repo_type": "model"},
        ),
        (
            "upload_folder",
            {"repo_id": "acme/new-prior", "folder_path": str(tmp_path), "commit_message": "v1", "repo_type": "model"},
        ),
    ]

    calls.clear()
    for bad in ("no-namespace", "a/b@main", "a/b/c"):
        with pytest.raises(ValueError, match=r"repo_id must look like 'owner/name'"):
            push_to_hub(tmp_path, bad)
    with pytest.raises(FileNotFoundError, match=r"no prior directory at"):
        push_to_hub(tmp_path / "absent", "acme/new-prior")
    (tmp_path / "backbone.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no backbone\.safetensors; save the prior before pushing it"):
        push_to_hub(tmp_path, "acme/new-prior")
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no config\.json; save the prior before pushing it"):
        push_to_hub(tmp_path, "acme/new-prior")
    assert calls == []  # nothing is created or uploaded when the arguments are wrong


def test_inject_prior_by_repo_id_online_then_offline_from_the_cache(
    hub_server: LocalHub, hub_client: HubClient, tmp_path: Path
) -> None:
    """The one-line promise end to end: a published injection (prior + SPIMs + backbone) by its repo id."""
    import torch

    import spectral_prior as sp
    from spectral_prior.adapters import mst_s

    trained = sp.inject_prior(mst_s().eval(), "mst", sp.SpectralDiffusionPrior(sp.PriorConfig(prior_dim=16)))
    with torch.no_grad():
        for spim in trained.spectral_prior.spims.values():
            spim.proj.bias.normal_()
    trained.spectral_prior.save_pretrained(tmp_path / "published", backbone=trained)
    hub_server.add_repo("acme/mst_s-sdp", tmp_path / "published")

    x, phi = torch.rand(1, 28, 32, 32), torch.rand(1, 28, 32, 86)
    with torch.no_grad():
        expected = trained(x, phi)
        online = sp.inject_prior(mst_s().eval(), "mst", prior="acme/mst_s-sdp")
        assert torch.equal(online(x, phi), expected)
        fetched = {path.rsplit("/", 1)[-1] for method, path in hub_server.log() if method == "GET"}
        assert fetched == {"config.json", "model.safetensors", "backbone.safetensors"}

        hub_server.stop()
        hub_server.clear_log()
        hub_client.set_offline(True)
        offline = sp.inject_prior(mst_s().eval(), "mst", prior="acme/mst_s-sdp")
        assert torch.equal(offline(x, phi), expected)
    assert hub_server.log() == []


def test_a_missing_path_under_an_existing_folder_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ValueError, match="'runs' exists here.*Hub was not asked"):
        resolve_prior_source("runs/mst_s")


def test_loading_a_prior_fetches_only_its_files_and_all_from_the_commit_of_its_config(
    hub_server: LocalHub, hub_client: HubClient, tmp_path: Path
) -> None:
    import spectral_prior as sp
    from spectral_prior.adapters import mst_s

    model = sp.inject_prior(mst_s().eval(), "mst", sp.SpectralDiffusionPrior(sp.PriorConfig(prior_dim=16)))
    model.spectral_prior.save_pretrained(tmp_path / "published", backbone=model)
    commit = hub_server.add_repo("acme/with-backbone", tmp_path / "published")
    hub_server.clear_log()
    assert sp.SpectralDiffusionPrior.from_pretrained("acme/with-backbone").prior_dim == 16
    fetched = [path for method, path in hub_server.log() if method == "GET"]
    assert sorted(path.rsplit("/", 1)[-1] for path in fetched) == ["config.json", "model.safetensors"]
    weights = next(path for path in fetched if path.endswith("model.safetensors"))
    assert f"/{commit}/" in weights  # pinned to the commit the config came from, not to the moving branch
