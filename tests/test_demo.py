"""`spectral-prior demo` and the embedded CAVE-trained models: offline, on the shipped real scene, a valid figure."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import spectral_prior as sp
from spectral_prior import cli
from spectral_prior import cassi
from spectral_prior.adapters import bisrnet, mst_s
from spectral_prior.saving.hub import EMBEDDED_MODELS, PRETRAINED_DIR
from spectral_prior.io import load_tensors
from spectral_prior.saving.format import mask_sha256
from spectral_prior.saving.load import load_saved_mask

EMBEDDED = {"bisrnet-official": "bisrnet", "bisrnet-sdp": "bisrnet", "bisrnet-baseline": "bisrnet", "mst_s-sdp": "mst_s", "mst_s-baseline": "mst_s"}
ROW = re.compile(r"^\| ([\w.-]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", re.M)
DEMO_MODELS = ["bisrnet-official", "bisrnet-baseline", "bisrnet-sdp"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("name, backbone", EMBEDDED.items())
def test_the_embedded_models_load_offline_with_their_mask_and_card(name, backbone, shared_data):
    model = sp.load_model(name)
    folder = PRETRAINED_DIR / EMBEDDED_MODELS[name]
    config = json.loads((folder / "config.json").read_text())
    assert config["backbone"]["name"] == backbone and type(model).__name__ == config["backbone"]["class"]
    assert config["kind"] == ("injector" if name.endswith("-sdp") else "backbone")
    assert torch.equal(load_saved_mask(name), cassi.load_mask(shared_data / "mask_256.mat"))
    assert config["mask"]["sha256"] == mask_sha256(cassi.load_mask(shared_data / "mask_256.mat"))
    card = (folder / "README.md").read_text()
    own = ("source", "terms", "not held out") if name == "bisrnet-official" else ("recipe", "training time")
    for entry in ("training data", "CAVE", "coded aperture", "test (CAVE", "mask_256", *own):
        assert entry in card, entry
    if name == "bisrnet-official":
        assert (folder / "LICENSE.txt").read_text().startswith("MIT License")


@pytest.mark.parametrize("name", ["bisrnet-sdp", "mst_s-sdp"])
def test_inference_models_ship_without_the_stage1_teacher(name):
    folder = PRETRAINED_DIR / EMBEDDED_MODELS[name]
    assert not any("teacher" in key for key in load_tensors(folder / "model.safetensors"))
    prior = sp.get_injector(sp.load_model(name)).prior
    assert prior.teacher_hfe is None and not prior.config.teacher
    with pytest.raises(ValueError, match="has no stage-1 teacher"):
        prior.teacher(torch.rand(1, 28, 32, 32), torch.rand(1, 28, 32, 32))


def test_default_is_the_official_bisrnet_and_no_prior():
    official, default = sp.load_model("bisrnet-official"), sp.load_model("default")
    assert not hasattr(default, "spectral_prior")
    for name, tensor in official.state_dict().items():
        assert torch.equal(default.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="holds a bare backbone, not a prior: load it with load_model"):
        sp.load_injection(bisrnet(), "default")


def test_bisrnet_sdp_injects_into_a_fresh_bisrnet():
    model = sp.inject_prior(bisrnet(), layers="bisrnet", prior="bisrnet-sdp").eval()
    reference = sp.load_model("bisrnet-sdp")
    h, mask = torch.rand(1, 28, 32, 32), torch.rand(1, 28, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(h, mask), reference(h, mask))
    mst = sp.inject_prior(mst_s(), layers="mst", prior="mst_s-sdp").eval()
    h, phi = torch.rand(1, 28, 32, 32), torch.rand(1, 28, 32, 86)
    with torch.no_grad():
        assert torch.equal(mst(h, phi), sp.load_model("mst_s-sdp")(h, phi))


def test_demo_on_the_shipped_real_scene_scores_three_named_models_above_28_db(tmp_path, capsys):
    figure = tmp_path / "demo.png"
    assert cli.main(["demo", "--output", str(figure)]) == 0
    out = capsys.readouterr().out
    rows = ROW.findall(out)
    assert [row[0] for row in rows] == DEMO_MODELS
    assert all(float(row[1]) >= 28 for row in rows), out
    assert "CAVE feathers" in out and "256x256" in out
    assert "bisrnet-official: trained by its authors on all of CAVE, this scene included" in out
    with Image.open(figure) as image:
        image.verify()
        assert image.format == "PNG"


def test_demo_quick_names_the_models_it_was_given_and_writes_a_png(tmp_path, capsys):
    figure = tmp_path / "demo.png"
    assert cli.main(["demo", "--quick", "--models", "mst_s-sdp", "bisrnet-baseline", "--output", str(figure)]) == 0
    out = capsys.readouterr().out
    rows = ROW.findall(out)
    assert [row[0] for row in rows] == ["mst_s-sdp", "bisrnet-baseline"] and "128x128" in out
    assert "not held out" not in out
    with Image.open(figure) as image:
        image.verify()


def test_demo_on_a_user_cube_and_mask(tmp_path, capsys):
    cube = tmp_path / "cube.npy"
    np.save(cube, sp.data.ProceduralCubes(1, size=40, seed=5)[0].numpy())
    mask = tmp_path / "mask.npy"
    np.save(mask, (np.random.default_rng(0).random((48, 48)) > 0.5).astype("float32"))
    assert cli.main(["demo", "--cube", str(cube), "--mask", str(mask), "--output", str(tmp_path / "f.png")]) == 0
    out, err = capsys.readouterr()
    assert "40x40" in out
    warnings = [line for line in err.splitlines() if line.startswith("spectral-prior demo: warning: ")]
    assert warnings and all("trained with another coded aperture" in line for line in warnings)
    assert (tmp_path / "f.png").is_file()


def test_demo_on_a_measurement_writes_one_preview_per_model(tmp_path):
    mask = tmp_path / "mask.npy"
    np.save(mask, (np.random.default_rng(0).random((32, 32)) > 0.5).astype("float32"))
    measurement = tmp_path / "meas.npy"
    np.save(measurement, np.random.default_rng(1).random((32, 86)).astype("float32"))
    output = tmp_path / "real.png"
    argv = ["demo", "--measurement", str(measurement), "--mask", str(mask), "--output", str(output)]
    assert cli.main(argv) == 0
    assert sorted(p.name for p in tmp_path.glob("real-*.png")) == sorted(f"real-{name}.png" for name in DEMO_MODELS)


def test_demo_errors_are_one_line(tmp_path, capsys):
    measurement = tmp_path / "meas.npy"
    np.save(measurement, np.zeros((32, 86), dtype="float32"))
    assert cli.main(["demo", "--measurement", str(measurement)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spectral-prior demo: error:") and "--mask" in err
    small = tmp_path / "small.npy"
    np.save(small, np.ones((16, 16), dtype="float32"))
    assert cli.main(["demo", "--quick", "--mask", str(small), "--output", str(tmp_path / "x.png")]) == 2
    assert "is smaller than scene 'demo' (128x128): give a mask at least" in capsys.readouterr().err
    assert cli.main(["demo", "--models", "bisrnet-sdp", "bisrnet-sdp", "--output", str(tmp_path / "x.png")]) == 2
    assert "--models lists bisrnet-sdp more than once" in capsys.readouterr().err
    assert cli.main(["demo", "--output", str(tmp_path)]) == 2
    assert "is a folder: give the figure's file name" in capsys.readouterr().err
