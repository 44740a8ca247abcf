"""What the ``spectral-prior`` subcommands share: the model options, and checks made before any compute.

``eval``, ``reconstruct`` and ``demo`` build their parsers from these.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import cassi
from ..errors import InvalidInputError
from ..io import writable_folder


def check_output_folder(path: str | Path) -> Path:
    """Check, before any compute, that ``--output`` can be a folder (nothing is created yet)."""
    return writable_folder(path, what="--output", create=False)


def require_trained_weights(args: argparse.Namespace) -> None:
    """Refuse to run without a model, and an untrained ``--backbone`` unless ``--random-weights`` asks for it."""
    if args.checkpoint is None and args.backbone is None:
        raise InvalidInputError("pass --checkpoint, --backbone, or both")
    if args.checkpoint is None and not args.random_weights:
        raise InvalidInputError(f"no --checkpoint: the {args.backbone or 'model'} would run with random weights; pass a "
                         "trained --checkpoint (e.g. an embedded model: bisrnet-sdp), or --random-weights to test the "
                         "pipeline")


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
