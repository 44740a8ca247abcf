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


@pytest.mark.parametrize("name", ["mst_s-baseline", "bisrnet-sdp"])
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
