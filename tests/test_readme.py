"""README.md's Python snippets run as written, in order, offline.

The files they name are made here the way a user would have them: the coded aperture ``mask.mat`` and toolbox
checkpoints ``mst_l.pth`` / ``bisrnet.pth`` in the working folder, and the Hub repo ``owner/mst_l-sdp`` on the local
Hub server (``tests/hub_server.py``). The timm snippet runs where timm is installed (always in CI).
"""
import pytest
import importlib.util
import os
import re
import shutil
from pathlib import Path

import torch

import spectral_prior as sp
from hub_server import hub_client_fixture, hub_server_fixture  # noqa: F401 - registers the fixtures
from spectral_prior.adapters import mst_l

README = Path(__file__).resolve().parents[1] / "README.md"
_SNIPPET = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def snippets() -> list[str]:
    return _SNIPPET.findall(README.read_text())


def test_readme_has_the_snippets_this_test_runs():
    found = snippets()
    assert len(found) >= 5
    assert any("inject_prior(" in code for code in found)
    assert any("load_toolbox_checkpoint" in code for code in found)


@pytest.mark.slow
def test_readme_snippets_run_as_written(tmp_path, monkeypatch, shared_data, hub_server, hub_client):
    torch.manual_seed(0)
    published = mst_l()
    sp.inject_prior(published, "mst", prior=sp.SpectralDiffusionPrior())
    published.spectral_prior.save_pretrained(tmp_path / "published", backbone=published)
    hub_server.add_repo("owner/mst_l-sdp", tmp_path / "published")

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(shared_data / "mask_256.mat", work / "mask.mat")
    torch.save(mst_l().state_dict(), work / "mst_l.pth")
    shutil.copy(shared_data / "checkpoints" / "bisrnet_simulation.pth", work / "bisrnet.pth")
    monkeypatch.chdir(work)

    has_timm = importlib.util.find_spec("timm") is not None
    in_ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    namespace: dict = {"__name__": "readme"}
    ran = 0
    for code in snippets():
        if "import timm" in code and not has_timm:
            assert not in_ci, "CI must run README's timm snippet"
            continue
        exec(compile(code, f"README.md snippet {ran + 1}", "exec"), namespace)
        ran += 1
    assert (work / "my-prior" / "config.json").is_file()
    assert namespace["reconstruction"].shape == (1, 28, 256, 256)
    assert namespace["out"].shape == (1, 28, 256, 256) and namespace["bare"].shape == (1, 28, 64, 96)
    published_prior = published.spectral_prior.prior.state_dict()
    assert all(torch.equal(value, published_prior[key]) for key, value in namespace["prior"].state_dict().items())
