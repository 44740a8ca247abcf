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
