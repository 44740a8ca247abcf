"""The timm extra: names in timm's registry, toolbox keys, SDP variants, weights through timm's pretrained_cfg.

Without timm these tests skip on a developer's machine, and fail where ``CI`` is set (CI installs the extra).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hub_server import (  # noqa: F401 - the *_fixture imports register the "hub_server"/"hub_client" fixtures
    HubClient,
    LocalHub,
    hub_client_fixture,
    hub_server_fixture,
)
from test_backbones import read_spec

import spectral_prior as sp
from spectral_prior.adapters import (
    backbone_preset,
    bisrnet,
    create_backbone,
    list_backbones,
    load_toolbox_checkpoint,
    mst_s,
)
from spectral_prior.saving.hub import EMBEDDED_MODELS, PRETRAINED_DIR

ALL_BACKBONES = ["bisrnet", "mst_l", "mst_m", "mst_plus_plus", "mst_s"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def timm() -> ModuleType:
    """timm, with spectral-prior's models registered."""
    if importlib.util.find_spec("timm") is None:
        message = "timm is not installed (pip install -e '.[timm]', see .ci/run for a CPU-only torch)"
        if _in_ci():
            pytest.fail(f"{message}: CI must run the timm tests", pytrace=False)
        pytest.skip(message)
    import timm

    import spectral_prior.integrations.timm  # noqa: F401 - registers the models

    return timm


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MST-S injection (small prior, SPIMs away from zero) saved with its backbone by save_pretrained."""
    torch.manual_seed(1)
    model = sp.inject_prior(mst_s().eval(), "mst", sp.SpectralDiffusionPrior(sp.PriorConfig(prior_dim=16)))
    with torch.no_grad():
        for spim in model.spectral_prior.spims.values():
            spim.proj.bias.normal_()
    directory = tmp_path_factory.mktemp("timm") / "mst_s-sdp"
    model.spectral_prior.save_pretrained(directory, backbone=model, backbone_name="mst_s")
    return directory


def _inputs(backbone: str) -> tuple:
    args, _ = backbone_preset(backbone).example_inputs(torch.device("cpu"), torch.float32)
    return args


def _assert_same_outputs(model: torch.nn.Module, expected: torch.nn.Module, backbone: str = "mst_s") -> None:
    args = _inputs(backbone)
    with torch.no_grad():
        assert torch.equal(model.eval()(*args), expected.eval()(*args))


# -- the registry --------------------------------------------------------------------------------------------------


def test_every_backbone_and_its_sdp_variant_is_a_timm_model(timm: ModuleType) -> None:
    assert sorted(list_backbones()) == ALL_BACKBONES
    ours = ALL_BACKBONES + [name + "_sdp" for name in ALL_BACKBONES]
    assert sorted(timm.list_models(module="timm")) == sorted(ours)
    assert set(timm.list_models("mst*")) >= {"mst_s", "mst_m", "mst_l", "mst_plus_plus", "mst_l_sdp", "mst_s_sdp"}
    assert EMBEDDED_MODELS["default"] == EMBEDDED_MODELS["bisrnet-official"] == "bisrnet_official"
    assert {"mst_s_sdp.cave", "mst_s.cave"} <= set(timm.list_pretrained("mst*"))
    assert {"bisrnet_sdp.cave", "bisrnet.cave"} <= set(timm.list_pretrained("bisrnet*"))
    with_weights = timm.list_models(module="timm", pretrained=True, include_tags=True)
    assert sorted(with_weights) == sp.integrations.timm.pretrained_names()


@pytest.mark.parametrize("name", ["mst_s", "mst_l", "bisrnet"])
def test_bare_backbone_has_the_toolbox_state_dict(timm: ModuleType, name: str) -> None:
    model = timm.create_model(name)
    assert {key: list(value.shape) for key, value in model.state_dict().items()} == read_spec(name)
    assert not hasattr(model, "spectral_prior")
    assert type(model) is type(create_backbone(name))
    assert model.pretrained_cfg["architecture"] == name and model.pretrained_cfg["input_size"] == (28, 256, 256)


def test_a_toolbox_checkpoint_through_pretrained_cfg_file(timm: ModuleType, shared_data: Path) -> None:
    checkpoint = shared_data / "checkpoints" / "bisrnet_simulation.pth"
    model = timm.create_model("bisrnet", pretrained=True, pretrained_cfg_overlay={"file": str(checkpoint)})
    expected = load_toolbox_checkpoint(bisrnet(), checkpoint).state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())
    assert model.training and model.pretrained_cfg["file"] == str(checkpoint)


# -- SDP variants --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_fresh_sdp_variant_is_the_bare_backbone_bit_for_bit(timm: ModuleType, name: str) -> None:
    torch.manual_seed(0)
    bare = timm.create_model(name)
    torch.manual_seed(0)
    model = timm.create_model(name + "_sdp")
    injector = sp.get_injector(model)
    assert injector.preset == backbone_preset(name).name and injector.targets
    backbone_weights = {k: v for k, v in model.state_dict().items() if not k.startswith("spectral_prior.")}
    assert backbone_weights.keys() == bare.state_dict().keys()
    assert all(torch.equal(value, bare.state_dict()[key]) for key, value in backbone_weights.items())
    _assert_same_outputs(model, bare, name)


def test_prior_config_sizes_the_prior(timm: ModuleType) -> None:
    model = timm.create_model("mst_s_sdp", prior_config={"prior_dim": 16, "steps": 2})
    assert sp.get_injector(model).prior.config == sp.PriorConfig(prior_dim=16, steps=2)
    with pytest.raises(TypeError, match=r"prior_config= sizes the prior of 'mst_s_sdp'; 'mst_s' has no prior"):
        timm.create_model("mst_s", prior_config={"prior_dim": 16})


# -- pretrained weights through pretrained_cfg ---------------------------------------------------------------------


@pytest.mark.parametrize("timm_name, embedded", [("mst_s_sdp", "mst_s-sdp"), ("bisrnet", "bisrnet-baseline")])
def test_pretrained_is_the_embedded_cave_model(timm: ModuleType, timm_name: str, embedded: str) -> None:
    model = timm.create_model(timm_name, pretrained=True)
    assert model.training  # as every timm model
    assert model.pretrained_cfg["file"] == str(PRETRAINED_DIR / EMBEDDED_MODELS[embedded])
    assert model.pretrained_cfg["tag"] == "cave"
    _assert_same_outputs(model, sp.load_model(embedded), timm_name.removesuffix("_sdp"))
    _assert_same_outputs(timm.create_model(f"{timm_name}.cave", pretrained=True), model, timm_name.removesuffix("_sdp"))


def test_the_official_bisrnet_is_tagged_by_its_source(timm: ModuleType) -> None:
    model = timm.create_model("bisrnet.bisci", pretrained=True)
    assert model.pretrained_cfg["file"] == str(PRETRAINED_DIR / EMBEDDED_MODELS["bisrnet-official"])
    _assert_same_outputs(model, sp.load_model("bisrnet-official"), "bisrnet")


def test_pretrained_cfg_overlay_file_loads_a_saved_directory(timm: ModuleType, saved: Path) -> None:
    model = timm.create_model("mst_s_sdp", pretrained=True, pretrained_cfg_overlay={"file": str(saved)})
    assert model.pretrained_cfg["file"] == str(saved)
    assert sp.get_injector(model).prior_dim == 16
    _assert_same_outputs(model, sp.load_model(saved))


def test_pretrained_cfg_hub_id_downloads_through_the_hub(
    timm: ModuleType, saved: Path, hub_server: LocalHub, hub_client: HubClient, tmp_path: Path
) -> None:
    commit = hub_server.add_repo("acme/mst_s-sdp", saved)
    cache = tmp_path / "timm-cache"
    model = timm.create_model(
        "mst_s_sdp", pretrained=True, pretrained_cfg_overlay={"hf_hub_id": "acme/mst_s-sdp"}, cache_dir=cache
    )
    assert model.pretrained_cfg["hf_hub_id"] == "acme/mst_s-sdp" and "file" not in model.pretrained_cfg
    _assert_same_outputs(model, sp.load_model(saved))
    fetched = {path.rsplit("/", 1)[-1] for method, path in hub_server.log() if method == "GET"}
    assert fetched == {"config.json", "model.safetensors", "backbone.safetensors"}
    assert (cache / "models--acme--mst_s-sdp" / "snapshots" / commit / "backbone.safetensors").is_file()

    pinned = timm.create_model("mst_s_sdp", pretrained=True, pretrained_cfg={"hf_hub_id": f"acme/mst_s-sdp@{commit}"})
    _assert_same_outputs(pinned, model)


# -- clear errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mst_l_sdp", "mst_m", "mst_plus_plus_sdp"])
def test_pretrained_without_weights_names_those_that_exist(timm: ModuleType, name: str) -> None:
    expected = rf"no pretrained weights for {name}: the spectral-prior models with weights are [^;]*mst_s_sdp\.cave"
    with pytest.raises(RuntimeError, match=expected + r"[^;]*; .*file=.*hf_hub_id="):
        timm.create_model(name, pretrained=True)


def test_a_checkpoint_of_another_variant_is_refused(timm: ModuleType, saved: Path) -> None:
    with pytest.raises(ValueError, match=r"holds mst_s with a prior injected: create 'mst_s_sdp'"):
        timm.create_model("mst_s", pretrained=True, pretrained_cfg_overlay={"file": str(saved)})
    with pytest.raises(ValueError, match=r"holds a 'mst_s' checkpoint, but backbone='mst_l' was asked for"):
        timm.create_model("mst_l_sdp", pretrained=True, pretrained_cfg_overlay={"file": str(saved)})
    with pytest.raises(ValueError, match=r"url= is not supported for mst_s_sdp: .*file=.*hf_hub_id="):
        timm.create_model("mst_s_sdp", pretrained=True, pretrained_cfg_overlay={"url": "https://x/y.pth"})
    with pytest.raises(ValueError, match=r"mst_s_sdp with pretrained=True is built by its checkpoint; drop stage"):
        timm.create_model("mst_s_sdp", pretrained=True, stage=3)


# -- the core does not need timm -----------------------------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", code]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=120)


def test_the_core_never_imports_timm() -> None:
    """Every module of the package but the timm integration (and its old alias) imports without pulling in timm or torchvision."""
    result = _python(
        "import importlib, pkgutil, sys\n"
        "import spectral_prior\n"
        "for module in pkgutil.walk_packages(spectral_prior.__path__, 'spectral_prior.'):\n"
        "    if module.name not in ('spectral_prior.integrations.timm', 'spectral_prior.timm_models'):\n"
        "        importlib.import_module(module.name)\n"
        "print(sorted(name for name in ('timm', 'torchvision') if name in sys.modules))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_integration_without_timm_says_how_to_install_it() -> None:
    result = _python("import sys; sys.modules['timm'] = None; import spectral_prior.integrations.timm")
    assert result.returncode != 0
    assert "spectral_prior.integrations.timm needs timm" in result.stderr
    assert "pip install 'spectral-prior[timm]'" in result.stderr
