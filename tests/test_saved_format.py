"""Folders saved in format 1 (tests/fixtures/v1) keep loading with today's code, with the same outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import spectral_prior as sp
from spectral_prior.io import load_tensors
from spectral_prior.saving.format import FORMAT_VERSION, read_config
from tolerance import assert_close

V1 = Path(__file__).parent / "fixtures" / "v1"


class ToyBackbone(nn.Module):
    """The backbone the v1 injection was saved with (same names and sizes)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(28, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 28, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(torch.relu(self.stem(x)))))


def test_a_v1_injection_loads_and_computes_what_it_computed():
    model = sp.inject_prior(ToyBackbone(), prior=V1 / "injector").eval()
    recorded = load_tensors(V1 / "injector_io.safetensors")
    with torch.no_grad():
        output = model(recorded["input"])
    assert_close(output, recorded["output"], name="v1 injection output", rtol=1e-4, atol=1e-5)


def test_a_v1_prior_loads():
    prior = sp.SpectralDiffusionPrior.from_pretrained(V1 / "prior")
    assert prior.prior_dim == 8 and prior.config.steps == 2
    assert prior(torch.rand(1, 28, 12, 16)).shape == (1, 8)


@pytest.mark.parametrize("name", ["bisrnet-baseline", "bisrnet-sdp"])
def test_the_embedded_v1_models_load(name):
    folder = sp.saving.hub.PRETRAINED_DIR / name.replace("-", "_")
    assert json.loads((folder / "config.json").read_text())["format_version"] == 1
    assert isinstance(sp.load_model(name), nn.Module)


def test_a_v1_run_settings_file_gives_a_train_config():
    from spectral_prior.training import TrainConfig
    from spectral_prior.training.config import read_run_settings

    config = TrainConfig(**read_run_settings(V1 / "run"))
    assert (config.backbone, config.steps, config.crop) == ("mst_s", 2, 32)


# -- the schema and the upgrades -------------------------------------------------------------------------------------


def _copy(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_a_v1_injection_without_positions_is_upgraded_to_block_outputs(tmp_path):
    folder = _copy(V1 / "injector", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    del config["positions"]  # as files written before positions existed
    (folder / "config.json").write_text(json.dumps(config))
    upgraded = read_config(folder / "config.json")
    assert upgraded["positions"] == {"body": "output"} and upgraded["format_version"] == FORMAT_VERSION
    assert sp.get_injector(sp.inject_prior(ToyBackbone(), prior=folder)).positions == {"body": "output"}


@pytest.mark.parametrize("damage, message", [
    (lambda c: c.pop("targets"), r"is damaged: a 'injector' config needs 'targets'"),
    (lambda c: c.update(kind="adapter"), r"unknown kind of saved model 'adapter'"),
    (lambda c: c.pop("format_version"), r"is not a spectral-prior config \(no format_version\)"),
    (lambda c: c.update(format_version=FORMAT_VERSION + 1), r"reads format \d+ at most: upgrade with pip install -U"),
])
def test_a_damaged_config_is_one_clear_error(tmp_path, damage, message):
    folder = _copy(V1 / "injector", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    damage(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        sp.inject_prior(ToyBackbone(), prior=folder)


def test_saving_again_writes_todays_format_and_the_same_weights(tmp_path):
    model = sp.inject_prior(ToyBackbone(), prior=V1 / "injector")
    sp.get_injector(model).save_pretrained(tmp_path / "again", backbone=model)
    assert read_config(tmp_path / "again" / "config.json")["format_version"] == FORMAT_VERSION
    for name in ("model.safetensors", "backbone.safetensors"):
        old, new = load_tensors(V1 / "injector" / name), load_tensors(tmp_path / "again" / name)
        assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)


def test_saving_replaces_a_saved_folder_as_a_unit_and_keeps_a_users_other_files(tmp_path):
    model = sp.inject_prior(ToyBackbone(), prior=V1 / "injector")
    injector = sp.get_injector(model)
    injector.save_pretrained(tmp_path / "saved", backbone=model)
    injector.save_pretrained(tmp_path / "saved")  # without the backbone now: its old weights file must go
    assert not (tmp_path / "saved" / "backbone.safetensors").exists()
    (tmp_path / "saved" / "notes.txt").write_text("mine")
    injector.save_pretrained(tmp_path / "saved", backbone=model)
    assert (tmp_path / "saved" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "saved" / "backbone.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]  # no temporary folder left beside it
    assert not [p for p in (tmp_path / "saved").iterdir() if p.name.startswith(".")]


# -- loading asks only for what it reads; saving replaces folders safely ---------------------------------------------


def test_the_prior_of_an_injection_and_an_injection_without_its_backbone_load_without_the_backbone_file(tmp_path):
    folder = _copy(V1 / "injector", tmp_path)
    (folder / "backbone.safetensors").unlink()
    assert sp.SpectralDiffusionPrior.from_pretrained(folder).prior_dim == 8
    sp.load_injection(ToyBackbone(), folder, load_backbone=False)
    with pytest.raises(FileNotFoundError, match="has no backbone.safetensors"):
        sp.load_injection(ToyBackbone(), folder)


def test_options_given_with_a_saved_prior_are_honoured_and_with_a_saved_injection_checked(tmp_path):
    model = sp.load_injection(ToyBackbone(), V1 / "prior", layers=["body"], position="input", channel_axis=1,
                              example_inputs=torch.zeros(1, 28, 8, 8))
    assert sp.get_injector(model).positions == {"body": "input"}
    with pytest.raises(ValueError, match="prior_dim=16 but the prior produces vectors of length 8"):
        sp.load_injection(ToyBackbone(), V1 / "prior", layers=["body"], prior_dim=16, channels=8)
    with pytest.raises(ValueError, match=r"position= disagrees with the injection saved in .*'input' given, 'output'"):
        sp.inject_prior(ToyBackbone(), prior=V1 / "injector", position="input")
    with pytest.raises(TypeError, match="holds a bare prior, which records no blocks: pass layers="):
        sp.load_injection(ToyBackbone(), V1 / "prior")


def _saved_injector() -> sp.SpectralPriorInjector:
    return sp.get_injector(sp.inject_prior(ToyBackbone(), prior=V1 / "injector"))


def test_saving_into_the_current_folder_and_through_a_link(tmp_path, monkeypatch):
    injector = _saved_injector()
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    injector.save_pretrained(".")
    assert read_config(here / "config.json")["kind"] == "injector"
    target = tmp_path / "target"
    injector.save_pretrained(target)
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    injector.save_pretrained(tmp_path / "link", extra_config={"note": "through the link"})
    assert (tmp_path / "link").is_symlink()
    assert read_config(target / "config.json")["note"] == "through the link"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here", "link", "target"]


def test_a_failed_replacement_puts_the_old_folder_back_and_stale_leftovers_go(tmp_path, monkeypatch):
    import os

    from spectral_prior import io as sp_io

    injector = _saved_injector()
    folder = injector.save_pretrained(tmp_path / "saved", extra_config={"note": "old"})
    (tmp_path / ".saved.0123456789ab.tmp").mkdir()  # what a killed writer leaves behind
    real_replace, moved_away = os.replace, []

    def renaming_in_fails(source, target):
        if Path(target) == folder.resolve() and ".tmp" in Path(source).name:  # the new folder taking its place
            raise OSError("disk full")
        if Path(source) == folder.resolve():
            moved_away.append(target)
        real_replace(source, target)

    monkeypatch.setattr(sp_io.os, "replace", renaming_in_fails)
    with pytest.raises(OSError, match="disk full"):
        injector.save_pretrained(folder, extra_config={"note": "new"})
    monkeypatch.setattr(sp_io.os, "replace", real_replace)
    assert moved_away and read_config(folder / "config.json")["note"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_the_library_stamp_wins_over_a_stale_one_in_the_config(tmp_path):
    _saved_injector().save_pretrained(tmp_path / "saved", extra_config={"format_version": 1, "library_version": "0"})
    written = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert written["format_version"] == FORMAT_VERSION and written["library_version"] == sp.__version__
