"""The examples run as a user would run them, and print what they promise."""
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_reconstructs_a_real_scene_with_the_official_checkpoint(shared_data):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), "--data", str(shared_data)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    psnr = {label.strip(): float(value) for label, value in re.findall(r"^\s+(.+?)\s+PSNR\s+([\d.]+) dB", result.stdout, re.M)}
    assert set(psnr) == {"input 'H'", "BiSRNet", "BiSRNet + prior"}
    assert psnr["BiSRNet"] > psnr["input 'H'"] + 5, "the official network must beat its own input by a wide margin"
    assert psnr["BiSRNet + prior"] == psnr["BiSRNet"], "an untrained, zero-initialised SPIM changes nothing"


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
