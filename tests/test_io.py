"""File helpers: atomic writes keep the usual permissions."""
import os

import torch

from spectral_prior.io import save_json, save_tensors


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    save_tensors({"a": torch.zeros(2)}, tmp_path / "a.safetensors")
    save_json({"a": 1}, tmp_path / "a.json")
    for name in ("a.safetensors", "a.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask
