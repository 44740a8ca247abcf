"""What the ``spectral-prior`` subcommands share: the model options, the device, and checks made before any compute.

``eval``, ``reconstruct`` and ``demo`` build their parsers from these; ``train`` resolves its device here.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import nn

from . import cassi
from .errors import InvalidInputError
from .models import load_model
from .saving.load import open_saved


def _saved_backbone_name(checkpoint: str) -> str:
    """The backbone named in a saved directory's (or Hub repo's) config."""
    config = open_saved(checkpoint, weights=False).config
    name = (config.get("backbone") or {}).get("name")
    if name is None:
        raise InvalidInputError(f"{checkpoint} does not name its backbone: pass --backbone")
    return name


def load_model_and_backbone(checkpoint: Optional[str], backbone: Optional[str]) -> Tuple[nn.Module, str]:
    """:func:`~spectral_prior.load_model` of ``checkpoint``, with the name of its backbone (``backbone``, or the
    one its saved config names)."""
    if checkpoint is None and backbone is None:
        raise InvalidInputError("pass --checkpoint, --backbone, or both")
    model = load_model(checkpoint, backbone=backbone)
    return model, backbone or _saved_backbone_name(checkpoint)


def check_output_folder(path: str | Path) -> Path:
    """Check, before any compute, that ``--output`` can be a folder: not a file, and under a writable folder.

    Nothing is created: a run that fails later leaves no empty folder behind.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"--output {folder} is a file, not a folder")
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInputError(f"cannot write the --output folder {folder}: {existing} is not a writable folder")
    return folder


def require_trained_weights(args: argparse.Namespace) -> None:
    """Refuse to run an untrained ``--backbone`` unless ``--random-weights`` asks for it."""
    if args.checkpoint is None and not args.random_weights:
        raise InvalidInputError(f"no --checkpoint: the {args.backbone or 'model'} would run with random weights; pass a "
                         "trained --checkpoint (e.g. an embedded model: bisrnet-sdp), or --random-weights to test the "
                         "pipeline")


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
                             f"built for CUDA: {torch.version.cuda or 'no'}): use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidInputError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA devices")
    return device


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--backbone``, ``--random-weights`` and ``--device``: which model a command runs, and where."""
    parser.add_argument("--checkpoint", help="a saved run directory, Hub repo id, embedded model name, or weights file "
                        "(with --backbone)")
    parser.add_argument("--random-weights", action="store_true", help="without --checkpoint: run a freshly "
                        "initialised --backbone (untrained: to test a pipeline, never to reconstruct)")
    parser.add_argument("--backbone", help="the architecture (mst_s, mst_m, mst_l, bisrnet, ...); read from the "
                        "checkpoint's config when left out")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1...")


def add_mask_key_argument(parser: argparse.ArgumentParser) -> None:
    """``--mask-key``: the variable of a ``--mask`` .mat file that is not named as a mask (``cassi.MASK_KEYS``)."""
    parser.add_argument("--mask-key", help=f"the mask's variable in a .mat --mask file (default: one of "
                        f"{', '.join(cassi.MASK_KEYS)}; a file with none of them is refused)")
