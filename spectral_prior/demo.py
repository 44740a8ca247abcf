"""The demo: a CASSI measurement reconstructed by a bare and an SDP-injected backbone, scored and drawn, offline.

With no options it takes the shipped real scene (a 256x256 crop of CAVE's feathers, a test scene no shipped model
trained on), simulates its measurement through the coded aperture the models were trained with (saved beside them),
reconstructs it with the embedded ``bisrnet-baseline`` (the official BiSRNet fine-tuned without a prior) and
``bisrnet-sdp`` (the same with the Spectral Diffusion Prior, at the same budget; ``benchmarks/quality.py --study
bisrnet-cave``), prints PSNR/SSIM/SAM of each and writes one figure: sRGB renderings of the ground truth and both
reconstructions, their error maps and spectral curves. ``--quick`` uses the central 128x128 crop.

Options point it at your own cube (``--cube``), mask (``--mask``), models (``--checkpoint``, ``--baseline``) or a real
2-D measurement (``--measurement``; there is no ground truth then, so it writes the two sRGB previews instead).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from . import cassi, metrics
from .adapters.registry import backbone_preset
from .commands import add_mask_key_argument, load_model_and_backbone
from .data import read_cube, to_cassi_bands
from .errors import InvalidInputError
from .evaluate import center_crop, size_multiple
from .hub import PRETRAINED_DIR
from .models import resolve_model_mask

DEFAULT_SDP = "bisrnet-sdp"
DEFAULT_BASELINE = "bisrnet-baseline"
DEMO_SCENE = PRETRAINED_DIR / "scenes" / "cave_feathers_256.safetensors"
QUICK_SIZE = 128
METRIC_NAMES = ("psnr", "ssim", "sam")
LABELS = {"bare": "bare", "sdp": "+ SDP"}  # model key -> how tables and figures name it


def demo_scene(cube: Optional[str] = None, *, size: Optional[int] = None) -> Tensor:
    """The ground truth [28, H, W]: the shipped CAVE crop or the user's ``cube`` file, centre-cropped to ``size``."""
    gt = to_cassi_bands(read_cube(cube or DEMO_SCENE))
    if size is None:
        return gt
    top, left = max(0, (gt.shape[1] - size) // 2), max(0, (gt.shape[2] - size) // 2)
    return gt[:, top : top + size, left : left + size]


def demo_mask(checkpoints: list[str], mask: Optional[str] = None, key: Optional[str] = None) -> Tensor:
    """The 2-D mask: the user's file (its variable ``key``), else the one saved with the first model (a warning for
    each model trained with another mask than the one used)."""
    mask2d = resolve_model_mask(checkpoints[0], cassi.load_mask(mask, key=key) if mask else None)
    for other in checkpoints[1:]:
        resolve_model_mask(other, mask2d)
    return mask2d


def reconstruct(model: nn.Module, backbone: str, gt: Tensor, mask2d: Tensor) -> Tensor:
    """Simulate the measurement of ``gt`` through ``mask2d`` (top-left crop) and reconstruct it with ``model``."""
    preset = backbone_preset(backbone)
    height, width = gt.shape[-2:]
    if mask2d.shape[0] < height or mask2d.shape[1] < width:
        raise InvalidInputError(f"the mask ({mask2d.shape[0]}x{mask2d.shape[1]}) is smaller than the scene ({height}x{width})")
    mask3d = cassi.mask3d(mask2d[:height, :width], gt.shape[0])
    net_input, mask_input = cassi.simulate(gt[None], mask3d, preset.input_setting, preset.mask_setting)
    with torch.no_grad():
        return model.eval()(net_input, mask_input)[0].float()


def scores(reconstruction: Tensor, gt: Tensor) -> dict[str, float]:
    return {name: getattr(metrics, name)(reconstruction, gt).item() for name in METRIC_NAMES}


def _simulated(args: argparse.Namespace, models: dict[str, tuple[nn.Module, str]]) -> int:
    from .viz import save_comparison_figure

    gt = demo_scene(args.cube, size=QUICK_SIZE if args.quick else None)
    multiple = max(size_multiple(model) for model, _ in models.values())
    gt = center_crop(gt, multiple)
    mask2d = demo_mask([args.checkpoint, args.baseline], args.mask, args.mask_key)
    source = args.cube or "CAVE feathers (test split)"
    mask_name = args.mask or "the models' own (saved with them)"
    print(f"scene: {source}, {gt.shape[-2]}x{gt.shape[-1]}, 28 bands; mask: {mask_name}\n")
    print("| model | PSNR (dB) | SSIM | SAM (deg) |\n|---|---|---|---|")
    reconstructions = {}
    for key, (model, backbone) in models.items():
        label = LABELS[key]
        reconstructions[label] = reconstruct(model, backbone, gt, mask2d)
        s = scores(reconstructions[label], gt)
        print(f"| {label} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['sam']:.2f} |")
    figure = Path(args.output)
    save_comparison_figure(figure, gt, reconstructions, title=f"{source}; {mask_name}")
    print(f"\nfigure: {figure}")
    return 0


def _real(args: argparse.Namespace, models: dict[str, tuple[nn.Module, str]]) -> int:
    from .reconstruct import read_measurement, reconstruct_measurement
    from .viz import save_preview

    if args.mask is None:
        raise InvalidInputError("--measurement needs the mask it was taken with: pass --mask FILE")
    measurement = read_measurement(args.measurement)
    mask2d = cassi.load_mask(args.mask, key=args.mask_key)
    output = Path(args.output)
    for key, (model, backbone) in models.items():
        preset = backbone_preset(backbone)
        cube = reconstruct_measurement(model, measurement, mask2d, input_setting=preset.input_setting,
                                       mask_setting=preset.mask_setting)
        path = output.with_name(f"{output.stem}-{key}{output.suffix}")
        save_preview(path, cube)
        print(f"{LABELS[key]}: {path}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=DEFAULT_SDP,
                        help=f"the injected model (default: the embedded {DEFAULT_SDP})")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE,
                        help=f"the bare model to compare with (default: the embedded {DEFAULT_BASELINE})")
    parser.add_argument("--cube", help="your ground-truth cube (.mat, .npy, .safetensors or a folder of band PNGs; "
                        "default: the shipped CAVE crop)")
    parser.add_argument("--mask", help="your 2-D mask (.mat/.npy/.safetensors; default: the one saved with the models)")
    add_mask_key_argument(parser)
    parser.add_argument("--measurement", help="a real 2-D measurement (.mat/.npy) to reconstruct instead")
    parser.add_argument("--quick", action="store_true", help=f"the central {QUICK_SIZE}x{QUICK_SIZE} crop, for a fast check")
    parser.add_argument("--output", default="spectral-prior-demo.png", help="the figure (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``spectral-prior demo``."""
    from .viz import figure_format

    figure_format(args.output)  # before any compute: a suffix we cannot write, or a folder that is not there
    if not Path(args.output).resolve().parent.is_dir():
        raise InvalidInputError(f"the folder of --output {args.output} does not exist")
    models = {
        "bare": load_model_and_backbone(args.baseline, None),
        "sdp": load_model_and_backbone(args.checkpoint, None),
    }
    return _real(args, models) if args.measurement else _simulated(args, models)
