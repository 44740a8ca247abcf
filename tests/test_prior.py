"""SpectralDiffusionPrior: student/teacher paths, determinism, save/load (strict, safetensors), clear errors."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import spectral_prior as sp
from spectral_prior.adapters import mst_s

SMALL = sp.PriorConfig(prior_dim=32, hfe_dim=16, hfe_depth=1, steps=3, denoiser_hidden=64, denoiser_depth=2)


@pytest.fixture
def prior():
    return sp.SpectralDiffusionPrior(SMALL)


def test_student_and_teacher_paths(prior):
    h, gt = torch.rand(2, 28, 32, 32), torch.rand(2, 28, 32, 32)
    assert prior(h).shape == (2, 32)
    assert prior.teacher(h, gt).shape == (2, 32)
    z_teacher = prior.teacher(h, gt)
    z_student = prior.train()(h, z_teacher=z_teacher)
    (z_student - z_teacher).abs().mean().backward()
    assert all(p.grad is not None for p in prior.student.parameters())
    assert all(p.grad is not None for p in prior.diffusion.parameters())


def test_eval_mode_is_deterministic_and_batch_independent(prior):
    prior.eval()
    h = torch.rand(3, 28, 32, 32)
    torch.testing.assert_close(prior(h), prior(h))
    torch.testing.assert_close(prior(h[1:2]), prior(h)[1:2], rtol=1e-5, atol=1e-6)
    prior.train()
    assert not torch.equal(prior(h), prior(h)), "training mode draws fresh noise"


def test_save_and_load_round_trip_with_model_card(prior, tmp_path):
    prior.eval()
    prior.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["kind"] == "prior" and config["class"] == "SpectralDiffusionPrior"
    assert config["config"]["prior_dim"] == 32 and config["library_version"] == sp.__version__
    card = (tmp_path / "README.md").read_text()
    assert "library_name: spectral-prior" in card and "hyperspectral" in card
    loaded = sp.SpectralDiffusionPrior.from_pretrained(tmp_path)
    assert not loaded.training
    h = torch.rand(2, 28, 32, 32)
    torch.testing.assert_close(loaded(h), prior(h), rtol=0, atol=0)


def test_a_saved_bare_prior_feeds_an_injection(prior, tmp_path):
    prior.save_pretrained(tmp_path)
    model = sp.inject_prior(mst_s().eval(), "mst", prior=tmp_path)
    injector = model.spectral_prior
    assert isinstance(injector.prior, sp.SpectralDiffusionPrior) and injector.prior_dim == 32
    for name, tensor in prior.state_dict().items():
        assert torch.equal(injector.prior.state_dict()[name], tensor)
    assert all(torch.count_nonzero(p) == 0 for p in injector.spims.parameters())


def test_the_prior_of_a_saved_injection_loads_alone(prior, tmp_path):
    model = sp.inject_prior(mst_s().eval(), "mst", prior=prior)
    model.spectral_prior.save_pretrained(tmp_path)
    loaded = sp.SpectralDiffusionPrior.from_pretrained(tmp_path)
    assert loaded.state_dict().keys() == prior.state_dict().keys()
    assert all(torch.equal(value, prior.state_dict()[key]) for key, value in loaded.state_dict().items())
    sp.save_backbone(tmp_path / "bare", sp.remove_prior(model), name="mst_s")
    with pytest.raises(ValueError, match="holds a 'backbone' checkpoint, not a saved prior or injection"):
        sp.SpectralDiffusionPrior.from_pretrained(tmp_path / "bare")


def test_loading_is_strict(prior, tmp_path):
    prior.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights.pop("diffusion.denoiser.net.0.weight")
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"1 missing keys, first 'diffusion.denoiser.net.0.weight'"):
        sp.SpectralDiffusionPrior.from_pretrained(tmp_path)
    weights["unexpected.weight"] = torch.zeros(1)
    weights["diffusion.denoiser.net.0.weight"] = torch.zeros(1)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected keys, first 'unexpected.weight'.*another shape"):
        sp.SpectralDiffusionPrior.from_pretrained(tmp_path)


def test_truncated_or_corrupted_weights_are_named(prior, tmp_path):
    prior.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors is not a readable safetensors file"):
        sp.SpectralDiffusionPrior.from_pretrained(tmp_path)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"not a readable safetensors file"):
        sp.SpectralDiffusionPrior.from_pretrained(tmp_path)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        sp.SpectralDiffusionPrior.from_pretrained(tmp_path)


def test_newer_or_foreign_configs_are_refused(prior, tmp_path):
    prior.save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "format_version": 99, "library_version": "9.0"}))
    with pytest.raises(ValueError, match=r"written by spectral-prior 9.0 in format 99.*pip install -U spectral-prior"):
        sp.SpectralDiffusionPrior.from_pretrained(tmp_path)
    config_path.write_text(json.dumps({**config, "config": {**config["config"], "width": 3}}))
    with pytest.raises(ValueError, match=r"unknown PriorConfig fields \['width'\]"):
        sp.SpectralDiffusionPrior.from_pretrained(tmp_path)
    config_path.write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        sp.SpectralDiffusionPrior.from_pretrained(tmp_path)
    config_path.write_text(json.dumps({"hidden_size": 3}))
    with pytest.raises(ValueError, match="not a spectral-prior config"):
        sp.SpectralDiffusionPrior.from_pretrained(tmp_path)


def test_a_failed_write_leaves_the_previous_file_intact(prior, tmp_path, monkeypatch):
    prior.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("spectral_prior.io.save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        prior.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "model.safetensors"]


@pytest.mark.parametrize("field, value", [("prior_dim", 0), ("steps", -1), ("hfe_dim", 2.5), ("bands", True)])
def test_a_config_with_a_size_below_one_is_refused_by_name(field, value):
    with pytest.raises(ValueError, match=rf"PriorConfig.{field} must be a positive integer, got {value!r}"):
        sp.PriorConfig(**{field: value})
