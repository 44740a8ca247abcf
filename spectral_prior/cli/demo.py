"""The demo: one CASSI measurement reconstructed by several models, scored and drawn, offline.

With no options it takes the shipped real scene (a 256x256 crop of CAVE's feathers, a test scene that none of the
models this library trained saw), simulates its measurement through the coded aperture the models were trained with
(saved beside them), and reconstructs it with three embedded models: ``bisrnet-official`` (the authors' weights,
which were trained on all of CAVE, this scene included), ``bisrnet-baseline`` (those weights fine-tuned on the CAVE
train scenes without a prior) and ``bisrnet-sdp`` (the same with the Spectral Diffusion Prior, at the same budget;
``benchmarks/quality.py --study bisrnet-cave``). It prints PSNR/SSIM/SAM of each, one row per model name, and writes
one figure: sRGB renderings of the ground truth and every reconstruction, their error maps and spectral curves.
``--quick`` uses the central 128x128 crop.

Options point it at your own cube (``--cube``), mask (``--mask``), models (``--models``) or a real 2-D measurement
(``--measurement``; there is no ground truth then, so it writes one sRGB preview per model instead).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Optional

from torch import Tensor, nn

from .. import cassi
from ..adapters.registry import backbone_preset
from ..data import read_cube, to_cassi_bands
from ..errors import InvalidInputError, MaskTooSmallError
from ..evaluation import center_crop, evaluate, size_multiple
from ..inference import read_measurement, reconstruct_measurement
from ..io import writable_folder
from ..models import load_model_and_backbone, mask_for_models
from ..saving.hub import PRETRAINED_DIR
from ..viz import figure_format, save_comparison_figure, save_preview
from .common import add_mask_key_argument

DEFAULT_MODELS = ("bisrnet-official", "bisrnet-baseline", "bisrnet-sdp")


NOT_HELD_OUT = {"bisrnet-official": "trained by its authors on all of CAVE, this scene included: its score is not "
                                    "held out"}


DEMO_SCENE = PRETRAINED_DIR / "scenes" / "cave_feathers_256.safetensors"


QUICK_SIZE = 128


def demo_scene(cube: Optional[str] = None, *, size: Optional[int] = None) -> Tensor:
    """The ground truth [28, H, W]: the shipped CAVE crop or the user's ``cube`` file, centre-cropped to ``size``."""
    gt = to_cassi_bands(read_cube(cube or DEMO_SCENE))
    if size is None:
        return gt
    top, left = max(0, (gt.shape[1] - size) // 2), max(0, (gt.shape[2] - size) // 2)
    return gt[:, top : top + size, left : left + size]


def _scored(model: nn.Module, backbone: str, gt: Tensor, mask2d: Tensor) -> dict:
    """``gt`` measured through ``mask2d`` and reconstructed by ``model``, scored by the evaluation protocol."""
    preset = backbone_preset(backbone)
    try:
        return evaluate(model, [(gt, "demo")], mask2d, input_setting=preset.input_setting,
                        mask_setting=preset.mask_setting, crop_multiple=1, return_cubes=True)[0]
    except MaskTooSmallError as err:
        raise InvalidInputError(f"{err.what}: give a mask at least the scene's size") from err


def _simulated(args: argparse.Namespace, models: dict[str, tuple[nn.Module, str]]) -> int:
    """Score every model on the ground-truth scene; one table row per model name, one figure."""
    gt = demo_scene(args.cube, size=QUICK_SIZE if args.quick else None)
    multiple = max(size_multiple(model) for model, _ in models.values())
    gt = center_crop(gt, multiple)
    mask2d = mask_for_models(list(models), cassi.load_mask(args.mask, key=args.mask_key) if args.mask else None)
    source = args.cube or "CAVE feathers (test split)"
    mask_name = args.mask or "the models' own (saved with them)"
    print(f"scene: {source}, {gt.shape[-2]}x{gt.shape[-1]}, 28 bands; mask: {mask_name}\n")
    print("| model | PSNR (dB) | SSIM | SAM (deg) |\n|---|---|---|---|")
    reconstructions = {}
    for name, (model, backbone) in models.items():
        s = _scored(model, backbone, gt, mask2d)
        reconstructions[name] = s["reconstruction"]
        print(f"| {name} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['sam']:.2f} |")
    notes = [f"{name}: {NOT_HELD_OUT[name]}" for name in models if name in NOT_HELD_OUT and args.cube is None]
    if notes:
        print("\n" + "\n".join(notes))
    figure = Path(args.output)
    save_comparison_figure(figure, gt, reconstructions, title=f"{source}; {mask_name}")
    print(f"\nfigure: {figure}")
    return 0


def _real(args: argparse.Namespace, models: dict[str, tuple[nn.Module, str]]) -> int:
    """Reconstruct a real measurement with every model: one sRGB preview each, named after the model."""
    if args.mask is None:
        raise InvalidInputError("--measurement needs the mask it was taken with: pass --mask FILE")
    measurement = read_measurement(args.measurement)
    mask2d = cassi.load_mask(args.mask, key=args.mask_key)
    output = Path(args.output)
    for name, (model, backbone) in models.items():
        preset = backbone_preset(backbone)
        cube = reconstruct_measurement(model, measurement, mask2d, input_setting=preset.input_setting,
                                       mask_setting=preset.mask_setting)
        path = output.with_name(f"{output.stem}-{_file_safe(name)}{output.suffix}")
        save_preview(path, cube)
        print(f"{name}: {path}")
    return 0


def _file_safe(name: str) -> str:
    """``name`` (a model name or path) as one file-name component."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="MODEL",
                        help="the models to compare, each an embedded name, a saved model folder or a Hub id "
                        "(default: %(default)s)")
    parser.add_argument("--cube", help="your ground-truth cube (.mat, .npy, .safetensors or a folder of band PNGs; "
                        "default: the shipped CAVE crop)")
    parser.add_argument("--mask", help="your 2-D mask (.mat/.npy/.safetensors; default: the one saved with the models)")
    add_mask_key_argument(parser)
    parser.add_argument("--measurement", help="a real 2-D measurement (.mat/.npy) to reconstruct instead")
    parser.add_argument("--quick", action="store_true", help=f"the central {QUICK_SIZE}x{QUICK_SIZE} crop, for a fast check")
    parser.add_argument("--output", default="spectral-prior-demo.png", help="the figure (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``spectral-prior demo``."""
    output = Path(args.output)  # checked before any compute: a suffix we cannot write, a folder we cannot write to
    if output.is_dir():
        raise InvalidInputError(f"--output {output} is a folder: give the figure's file name, e.g. {output / 'demo.png'}")
    figure_format(output)
    writable_folder(output.parent, what="the folder of --output")
    repeated = sorted({name for name in args.models if args.models.count(name) > 1})
    if repeated:
        raise InvalidInputError(f"--models lists {', '.join(repeated)} more than once; name each model once")
    models = {name: load_model_and_backbone(name, None) for name in args.models}
    return _real(args, models) if args.measurement else _simulated(args, models)
