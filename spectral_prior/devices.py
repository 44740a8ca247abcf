"""Which device to run on: ``'auto'`` and torch's device names, checked against this machine."""
from __future__ import annotations

import torch

from .errors import InvalidInputError


def resolve_device(name: str) -> torch.device:
    """``'auto'``: CUDA when available, else the CPU; anything else as torch reads it (``'cuda:1'``...).

    ValueError for a name torch does not know, and for a CUDA device this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise InvalidInputError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device {name!r} asked for, but CUDA is not available here (torch {torch.__version__}, "
                             f"built for CUDA: {torch.version.cuda or 'no'}): use the device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidInputError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA devices")
    return device
