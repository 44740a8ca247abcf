"""Loading the MST toolbox's checkpoints (``.pth`` state dicts) into our backbones, strictly."""
from __future__ import annotations

from collections.abc import Mapping
from os import PathLike

import torch
from torch import Tensor, nn

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile


def _strip_wrapper_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    stripped = {}
    for key, value in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        stripped[key] = value
    return stripped


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], *, source: str = "checkpoint") -> None:
    """Raise a ValueError naming the first missing, unexpected or mis-shaped key between ``model`` and ``state_dict``."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mis_shaped = [key for key in expected if key in state_dict and state_dict[key].shape != expected[key].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, first {missing[0]!r}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, first {unexpected[0]!r}")
    if mis_shaped:
        key = mis_shaped[0]
        problems.append(
            f"{len(mis_shaped)} keys of another shape, first {key!r}: "
            f"expected {list(expected[key].shape)}, got {list(state_dict[key].shape)}"
        )
    if problems:
        raise ValueError(
            f"{source} does not fit {type(model).__name__}: {'; '.join(problems)}. "
            "Is it a checkpoint of another architecture or configuration?"
        )


def load_toolbox_checkpoint(model: nn.Module, path: str | PathLike) -> nn.Module:
    """Load an MST-toolbox ``.pth`` state dict into ``model`` (strict), on the model's device; returns ``model``.

    Accepts a plain state dict or a dict holding one under ``state_dict``/``model``; strips the ``module.`` prefix of
    DataParallel checkpoints. Tensors are read with ``weights_only=True`` and mapped to the CPU first, so CUDA-saved
    checkpoints load on CPU-only machines.
    """
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping):
        for wrapper_key in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper_key), Mapping):
                loaded = loaded[wrapper_key]
                break
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, expected a state dict (a mapping of tensors)")
    state_dict = _strip_wrapper_prefixes(loaded)
    check_state_dict(model, state_dict, source=str(path))
    model.load_state_dict(state_dict, strict=True)
    return model
