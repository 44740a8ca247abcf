"""`spectral-prior demo` and the embedded default prior: offline, quick, a valid figure."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

import spectral_prior as sp
from spectral_prior import cli
from spectral_prior.adapters import mst_s
from spectral_prior.hub import PRETRAINED_DIR


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_default_prior_loads_offline_into_a_fresh_mst_s():
    model = sp.inject_prior(mst_s(), layers="mst", prior="default").eval()
    reference = sp.load_model("default")
    h, phi = torch.rand(1, 28, 32, 32), torch.rand(1, 28, 32, 86)
    assert torch.equal(model(h, phi), reference(h, phi))
    config = (PRETRAINED_DIR / "mst_s_sdp" / "config.json").read_text()
    assert '"name": "mst_s"' in config
    assert (PRETRAINED_DIR / "mst_s_sdp" / "README.md").read_text().startswith("---")


def test_demo_quick_prints_both_models_and_writes_a_png(tmp_path, capsys):
    figure = tmp_path / "demo.png"
    assert cli.main(["demo", "--quick", "--output", str(figure)]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (bare|\+ SDP) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", out, re.M)
    assert [row[0] for row in rows] == ["bare", "+ SDP"]
    assert all(5 < float(row[1]) < 60 for row in rows)
    with Image.open(figure) as image:
        image.verify()
        assert image.format == "PNG"


def test_demo_on_a_user_cube_and_mask(tmp_path, capsys):
    cube = tmp_path / "cube.npy"
    np.save(cube, sp.data.ProceduralCubes(1, size=40, seed=5)[0].numpy())
    mask = tmp_path / "mask.npy"
    np.save(mask, (np.random.default_rng(0).random((48, 48)) > 0.5).astype("float32"))
    assert cli.main(["demo", "--cube", str(cube), "--mask", str(mask), "--output", str(tmp_path / "f.png")]) == 0
    assert "40x40" in capsys.readouterr().out
    assert (tmp_path / "f.png").is_file()


def test_demo_on_a_measurement_writes_two_previews(tmp_path):
    mask = tmp_path / "mask.npy"
    np.save(mask, (np.random.default_rng(0).random((32, 32)) > 0.5).astype("float32"))
    measurement = tmp_path / "meas.npy"
    np.save(measurement, np.random.default_rng(1).random((32, 86)).astype("float32"))
    output = tmp_path / "real.png"
    argv = ["demo", "--measurement", str(measurement), "--mask", str(mask), "--output", str(output)]
    assert cli.main(argv) == 0
    assert sorted(p.name for p in tmp_path.glob("real-*.png")) == ["real-bare.png", "real-sdp.png"]


def test_demo_errors_are_one_line(tmp_path, capsys):
    measurement = tmp_path / "meas.npy"
    np.save(measurement, np.zeros((32, 86), dtype="float32"))
    assert cli.main(["demo", "--measurement", str(measurement)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spectral-prior demo: error:") and "--mask" in err
    small = tmp_path / "small.npy"
    np.save(small, np.ones((16, 16), dtype="float32"))
    assert cli.main(["demo", "--quick", "--mask", str(small), "--output", str(tmp_path / "x.png")]) == 2
    assert "smaller than the scene" in capsys.readouterr().err
