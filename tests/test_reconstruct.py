"""`spectral-prior reconstruct` and spectral_prior.reconstruct: real measurements, the toolbox's real-data way."""
import contextlib
import io

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch import nn

import spectral_prior as sp
from spectral_prior import cassi, cli
from spectral_prior.adapters import backbone_preset
from spectral_prior.data import CASSI_WAVELENGTHS, ProceduralCubes, read_cube
from spectral_prior.inference import prepare_measurement, read_measurement, reconstruct_measurement


def _reconstruct(*argv):
    """Run `spectral-prior reconstruct ARGV`; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["reconstruct", *map(str, argv)])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def tiny_system(tmp_path):
    """A 32x32 random mask and the 32x86 measurement of a procedural scene through it, as .mat files."""
    mask = cassi.random_mask(32, seed=1)
    measurement = cassi.measure(ProceduralCubes(1, size=32)[0][None], cassi.mask3d(mask))[0]
    measurement /= measurement.max()  # a sensor reading in [0, 1], like the TSA real measurements
    scipy.io.savemat(tmp_path / "mask.mat", {"mask": mask.numpy()})
    scipy.io.savemat(tmp_path / "scene.mat", {"meas_real": measurement.numpy()})
    return tmp_path / "scene.mat", tmp_path / "mask.mat"


class _Echo(nn.Module):
    """Returns its input cube; remembers the mask it was given."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x, mask):
        self.mask = mask
        return x + self.weight


def test_cli_writes_cube_mat_and_preview(tiny_system, tmp_path):
    measurement, mask = tiny_system
    out = tmp_path / "out"
    status, stdout, stderr = _reconstruct(
        "--backbone", "mst_s", "--random-weights", "--measurement", measurement, "--mask", mask, "--output", out, "--device", "cpu"
    )
    assert status == 0, stderr
    assert "saved" in stdout and "cube.mat" in stdout
    cube = read_cube(out / "cube.safetensors")
    assert cube.data.shape == (28, 32, 32) and torch.equal(cube.wavelengths, CASSI_WAVELENGTHS)
    assert 0 <= cube.data.min() and cube.data.max() <= 1
    img = scipy.io.loadmat(out / "cube.mat")["img"]
    assert img.shape == (32, 32, 28) and np.array_equal(img, cube.data.permute(1, 2, 0).numpy())
    with Image.open(out / "preview.png") as preview:
        assert preview.format == "PNG" and preview.size == (32, 32)
    assert sorted(p.name for p in out.iterdir()) == ["cube.mat", "cube.safetensors", "preview.png"]


def test_wrong_width_is_a_one_line_error(tiny_system, tmp_path):
    _, mask = tiny_system
    scipy.io.savemat(tmp_path / "narrow.mat", {"meas_real": np.zeros((32, 80), np.float32)})
    status, _, stderr = _reconstruct(
        "--backbone", "mst_s", "--random-weights", "--measurement", tmp_path / "narrow.mat", "--mask", mask, "--output", tmp_path / "o"
    )
    assert status == 2 and stderr.count("\n") == 1
    assert stderr.startswith("spectral-prior reconstruct: error: ")
    assert "the measurement is 32x80 but the 32x32 mask needs 32x86" in stderr
    assert not (tmp_path / "o").exists()


def test_measurement_files_are_checked(tmp_path):
    scipy.io.savemat(tmp_path / "two.mat", {"a": np.zeros((2, 3)), "b": np.zeros((2, 3))})
    with pytest.raises(KeyError, match="cannot tell which variable"):
        read_measurement(tmp_path / "two.mat")
    assert read_measurement(tmp_path / "two.mat", key="b").shape == (2, 3)
    with pytest.raises(KeyError, match="no variable 'c'"):
        read_measurement(tmp_path / "two.mat", key="c")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="must be 2-D"):
        read_measurement(tmp_path / "cube.npy")
    with pytest.raises(FileNotFoundError, match="measurement file not found"):
        read_measurement(tmp_path / "nope.mat")


def test_toolbox_real_data_convention():
    """The 'H' input is shift_back(clip(meas, 0, 1) / max * 0.8), the mask input the backbone's; output in [0, 1]."""
    measurement = torch.rand(8, 8 + 54) * 1.5 - 0.2
    mask = torch.rand(8, 8)
    echo = _Echo()
    cube = reconstruct_measurement(echo, measurement, mask, input_setting="H", mask_setting="Phi")
    normalised = measurement.clamp(0, 1) / measurement.clamp(0, 1).max() * 0.8
    expected = torch.stack([normalised[:, 2 * band : 2 * band + 8] for band in range(28)])
    assert torch.allclose(cube, expected.clamp(0, 1), atol=1e-6)
    assert torch.equal(echo.mask, cassi.shift(cassi.mask3d(mask)))
    assert prepare_measurement(measurement).max() == pytest.approx(0.8)
    assert echo.training  # the model's mode is restored


def test_real_measurement_crop(shared_data):
    measurement = read_measurement(shared_data / "real_measurements" / "scene1.mat")
    mask = cassi.load_mask(shared_data / "mask_real_660.mat")
    assert measurement.shape == (660, 714) and mask.shape == (660, 660)
    model = sp.load_model(backbone="mst_s")
    preset = backbone_preset("mst_s")
    cube = reconstruct_measurement(
        model, measurement[:256, :310], mask[:256, :256], input_setting=preset.input_setting,
        mask_setting=preset.mask_setting,
    )
    assert cube.shape == (28, 256, 256) and torch.isfinite(cube).all()
    assert 0 <= cube.min() and cube.max() <= 1 and cube.std() > 0


def test_a_measurement_in_sensor_counts_is_refused_unless_its_scale_is_given(tiny_system, tmp_path):
    """Clipping 8-bit counts to [0, 1] would saturate the measurement: refused before the model loads; --scale 255."""
    measurement, mask = tiny_system
    counts = np.round(scipy.io.loadmat(measurement)["meas_real"] * 255).astype(np.uint8)
    scipy.io.savemat(tmp_path / "counts.mat", {"meas_real": counts})
    common = ("--backbone", "mst_s", "--random-weights", "--measurement", tmp_path / "counts.mat", "--mask", mask)
    status, _, stderr = _reconstruct(*common, "--output", tmp_path / "refused")
    assert status == 2 and stderr.count("\n") == 1
    assert "the measurement ranges over [0, 255] (8-bit counts?), but values in [0, 1] are expected" in stderr
    assert "its full scale, the scale option (255 for 8-bit counts)" in stderr and not (tmp_path / "refused").exists()
    status, _, stderr = _reconstruct(*common, "--scale", "255", "--output", tmp_path / "scaled", "--device", "cpu")
    assert status == 0, stderr
    with pytest.raises(ValueError, match="scale must be the measurement's full scale, a positive number"):
        prepare_measurement(torch.ones(2, 2), scale=0)
    reading = torch.rand(8, 62)
    assert torch.allclose(prepare_measurement(reading * 4095, scale=4095), prepare_measurement(reading))
    assert torch.equal(prepare_measurement(reading * 1.2), prepare_measurement((reading * 1.2).clamp(0, 1)))
