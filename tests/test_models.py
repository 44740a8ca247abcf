"""load_model / save_backbone and the backbone registry."""
import pytest
import torch

import spectral_prior as sp
from spectral_prior.adapters import backbone_preset, create_backbone, list_backbones

SMALL_PRIOR = sp.PriorConfig(prior_dim=16, hfe_dim=8, hfe_depth=1, denoiser_hidden=16, denoiser_depth=1)


def _inputs(width_extra: int = 54):
    torch.manual_seed(0)
    return torch.rand(1, 28, 32, 32), torch.rand(1, 28, 32, 32 + width_extra)


def test_registry_names_and_presets():
    assert {"mst_s", "mst_m", "mst_l", "bisrnet"} <= set(list_backbones())
    assert backbone_preset("bisrnet").mask_setting == "Mask"
    assert backbone_preset("mst_s").mask_setting == "Phi"
    with pytest.raises(KeyError, match="known backbones"):
        create_backbone("mst_xl")


def test_bare_backbone_round_trip(tmp_path):
    model = create_backbone("mst_s").eval()
    sp.save_backbone(tmp_path, model, name="mst_s")
    loaded = sp.load_model(tmp_path)
    assert not hasattr(loaded, "spectral_prior")
    assert torch.equal(model(*_inputs()), loaded(*_inputs()))


def test_injected_round_trip_rebuilds_the_named_backbone(tmp_path):
    model = sp.inject_prior(create_backbone("mst_s"), "mst", prior=sp.SpectralDiffusionPrior(SMALL_PRIOR))
    for spim in sp.get_injector(model).spims.values():
        torch.nn.init.normal_(spim.proj.weight, std=0.1)  # a non-identity injection, so loading it matters
    sp.get_injector(model).save_pretrained(tmp_path, backbone=model, backbone_name="mst_s")
    loaded = sp.load_model(tmp_path)
    model.eval()
    assert torch.equal(model(*_inputs()), loaded(*_inputs()))
    with sp.get_injector(loaded).disable():
        assert not torch.equal(model(*_inputs()), loaded(*_inputs()))


def test_load_model_and_backbone_names_the_saved_backbone_from_one_read(tmp_path, monkeypatch):
    from spectral_prior import models

    sp.save_backbone(tmp_path, create_backbone("mst_s"), name="mst_s")
    opened = []
    monkeypatch.setattr(models, "open_saved", lambda *a, **k: opened.append(a) or sp.saving.open_saved(*a, **k))
    model, name = models.load_model_and_backbone(tmp_path, None)
    assert name == "mst_s" and len(opened) == 1
    assert models.load_model_and_backbone(None, "bisrnet")[1] == "bisrnet"
    with pytest.raises(sp.errors.InvalidInputError, match="pass a checkpoint, a backbone name, or both"):
        models.load_model_and_backbone(None, None)


def test_weights_file_needs_a_backbone_name(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(create_backbone("mst_s").state_dict(), path)
    with pytest.raises(ValueError, match="backbone='mst_s'"):
        sp.load_model(path)
    assert type(sp.load_model(path, backbone="mst_s")).__name__ == "MST"
    with pytest.raises(ValueError, match="BiSRNet|unexpected|missing"):
        sp.load_model(path, backbone="bisrnet")


def test_named_checkpoint_refuses_another_backbone(tmp_path):
    sp.save_backbone(tmp_path, create_backbone("mst_s"), name="mst_s")
    with pytest.raises(ValueError, match="holds a 'mst_s' checkpoint, but backbone='bisrnet'"):
        sp.load_model(tmp_path, backbone="bisrnet")


def test_prior_without_backbone_weights_is_refused(tmp_path):
    model = sp.inject_prior(create_backbone("mst_s"), "mst", prior=sp.SpectralDiffusionPrior(SMALL_PRIOR))
    sp.get_injector(model).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="without the backbone"):
        sp.load_model(tmp_path, backbone="mst_s")


def test_files_that_are_not_checkpoints_are_one_line_errors(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=r"notes.pth is not a PyTorch checkpoint"):
        sp.load_model(text, backbone="mst_s")
    pickled = tmp_path / "training_state.pth"
    torch.save({"optimizer": torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)}, pickled)
    with pytest.raises(ValueError, match=r"holds Python objects besides tensors; .*weights_only=True"):
        sp.load_model(pickled, backbone="mst_s")


def test_an_invalid_layers_regex_is_named():
    with pytest.raises(ValueError, match=r"layers='\(enc' is not a valid regular expression"):
        sp.inject_prior(create_backbone("mst_s"), layers="(enc", prior_dim=8)


@pytest.mark.slow
def test_compile_true_compiles_the_loaded_injected_model_in_place(tmp_path, monkeypatch):
    """load_model(compile=True) compiles statically; the compiled injected model equals the eager one."""
    model = sp.inject_prior(create_backbone("mst_s"), "mst", prior=sp.SpectralDiffusionPrior(SMALL_PRIOR))
    for spim in sp.get_injector(model).spims.values():
        torch.nn.init.normal_(spim.proj.weight, std=0.1)
    sp.get_injector(model).save_pretrained(tmp_path, backbone=model, backbone_name="mst_s")
    calls, real_compile = [], torch.nn.Module.compile

    def compile_for_test(self, **kwargs):  # aot_eager traces as inductor does, without its minute of codegen
        calls.append(kwargs)
        real_compile(self, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", compile_for_test)
    compiled = sp.load_model(tmp_path, compile=True)
    assert calls == [{"dynamic": False}] and compiled._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(model.state_dict())  # in place: no _orig_mod. prefix
    eager = sp.load_model(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(compiled(*_inputs()), eager(*_inputs()), rtol=1e-4, atol=1e-5)
