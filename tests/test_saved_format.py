"""Folders saved in format 1 (tests/fixtures/v1) keep loading with today's code, with the same outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import spectral_prior as sp
from spectral_prior.io import load_tensors
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
    folder = sp.hub.PRETRAINED_DIR / name.replace("-", "_")
    assert json.loads((folder / "config.json").read_text())["format_version"] == 1
    assert isinstance(sp.load_model(name), nn.Module)


def test_a_v1_run_settings_file_gives_a_train_config():
    from spectral_prior.train import TrainConfig, upgrade_run_settings

    saved = json.loads((V1 / "run" / "train_config.json").read_text())
    config = TrainConfig(**upgrade_run_settings(saved))
    assert (config.backbone, config.steps, config.crop) == ("mst_s", 2, 32)
