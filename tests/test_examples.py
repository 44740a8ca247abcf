"""The examples run as a user would run them, and print what they promise."""
import pytest
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
def test_quickstart_reconstructs_a_real_scene_with_the_official_checkpoint(shared_data, tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), "--data", str(shared_data), "--quick",
         "--figure", str(tmp_path / "demo.png")],
        capture_output=True, text=True, timeout=300, check=True,
    )
    psnr = {label.strip(): float(value) for label, value in re.findall(r"^\s+(.+?)\s+PSNR\s+([\d.]+) dB", result.stdout, re.M)}
    assert set(psnr) == {"input 'H'", "BiSRNet", "BiSRNet + prior"}
    assert psnr["BiSRNet"] > psnr["input 'H'"] + 5, "the official network must beat its own input by a wide margin"
    assert psnr["BiSRNet + prior"] == psnr["BiSRNet"], "an untrained, zero-initialised SPIM changes nothing"
    demo_rows = re.findall(r"^\| ([\w.-]+) \| [\d.]+ \|", result.stdout, re.M)
    assert demo_rows == ["bisrnet-official", "bisrnet-baseline", "bisrnet-sdp"], result.stdout
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_wrap_any_model_trains_only_the_injection_and_removes_it():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "wrap_any_model.py"), "--steps", "12"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert "modulated blocks: down1.conv (16 ch), down2.conv (32 ch), mid.conv (64 ch)" in result.stdout
    assert re.search(r"^trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: [\d.]+$", result.stdout, re.M)
    first, last = map(float, re.search(r"^loss ([\d.]+) -> ([\d.]+)$", result.stdout, re.M).groups())
    assert last < first, "training the prior and SPIMs lowers the loss"
    assert "bare outputs restored exactly: True" in result.stdout


def test_mst_toolbox_integration_runs_the_modified_loop(shared_data):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "mst_toolbox_integration.py"), "--mask", str(shared_data / "mask_256.mat"),
         "--steps", "2", "--crop", "32"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert re.findall(r"^stage 1 step (\d): rmse [\d.]+$", result.stdout, re.M) == ["1", "2"]
    assert "test-time output [2, 28, 32, 32]" in result.stdout


def test_real_data_reconstructs_a_real_measurement(shared_data, tmp_path):
    preview = tmp_path / "real.png"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "real_data.py"), "--data", str(shared_data), "--crop", "64",
         "--output", str(preview)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert "measurement [64, 118] -> cube [28, 64, 64]" in result.stdout
    with Image.open(preview) as image:
        assert image.format == "PNG" and image.size == (64, 64)
