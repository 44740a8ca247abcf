"""Loading the MST toolbox's checkpoints (``.pth`` state dicts) into our backbones, strictly."""
from __future__ import annotations

import zipfile
from collections.abc import Mapping
from os import PathLike

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError
from ..io import existing_file, load_state_dict_strict

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile


def _strip_wrapper_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    stripped = {}
    for key, value in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        stripped[key] = value
    return stripped


def load_toolbox_checkpoint(model: nn.Module, path: str | PathLike) -> nn.Module:
    """Load an MST-toolbox ``.pth`` state dict into ``model`` (strict), on the model's device; returns ``model``.

    Accepts a plain state dict or a dict holding one under ``state_dict``/``model``; strips the ``module.`` prefix of
    DataParallel checkpoints. Tensors are read with ``weights_only=True`` and mapped to the CPU first, so CUDA-saved
    checkpoints load on CPU-only machines.
    """
    path = existing_file(path, "checkpoint file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a file that is no checkpoint fails anywhere in the unpickler (KeyError, EOFError, ...)
        if zipfile.is_zipfile(path) and "Weights only load failed" in str(err):  # a torch.save file, not only tensors
            raise InvalidInputError(
                f"{path} holds Python objects besides tensors; checkpoints are read with torch.load(weights_only=True) "
                "so that a file cannot run code: save its state_dict alone (torch.save(model.state_dict(), path))"
            ) from err
        raise InvalidInputError(f"{path} is not a PyTorch checkpoint (a .pth state dict): torch.load cannot read it") from err
    if isinstance(loaded, Mapping):
        for wrapper_key in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper_key), Mapping):
                loaded = loaded[wrapper_key]
                break
    if not isinstance(loaded, Mapping):
        raise InvalidInputError(f"{path} holds a {type(loaded).__name__}, expected a state dict (a mapping of tensors)")
    state_dict = _strip_wrapper_prefixes(loaded)
    load_state_dict_strict(model, state_dict, source=str(path))
    return model
