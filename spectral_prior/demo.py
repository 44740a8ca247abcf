"""The demo: a CASSI measurement reconstructed by a bare and an SDP-injected backbone, scored and drawn, offline.

With no options it generates a procedural test scene (a seed the embedded models never trained on) and a random
binary coded aperture, simulates the measurement, reconstructs it with the embedded MST-S baseline and the embedded
MST-S + SDP (both trained by ``benchmarks/quality.py`` at the same budget), prints PSNR/SSIM/SAM of each and writes one
figure: sRGB renderings of the ground truth and both reconstructions, their error maps and spectral curves.

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
from .data import ProceduralCubes, read_cube, to_cassi_bands
from .evaluate import center_crop, load_model_and_backbone, size_multiple
from .hub import PRETRAINED_DIR

DEFAULT_SDP = "default"
DEFAULT_BASELINE = str(PRETRAINED_DIR / "mst_s_baseline")
DEMO_SEED = 2026  # procedural scene seed: the embedded models trained on seeds 0 and 1 only
METRIC_NAMES = ("psnr", "ssim", "sam")
LABELS = {"bare": "bare", "sdp": "+ SDP"}  # model key -> how tables and figures name it


def demo_scene(*, size: int, seed: int = DEMO_SEED, cube: Optional[str] = None) -> Tensor:
    """The ground truth [28, H, W]: scene 0 of a procedural set of ``seed``, or the user's ``cube`` file."""
    if cube is None:
        return ProceduralCubes(1, size=size, seed=seed)[0]
    return to_cassi_bands(read_cube(cube))


def demo_mask(gt: Tensor, *, mask: Optional[str] = None, seed: int = DEMO_SEED) -> Tensor:
    """The 2-D mask: the user's file, or a random binary coded aperture the size of the scene."""
    if mask is None:
        return cassi.random_mask(tuple(gt.shape[-2:]), seed=seed)
    return cassi.load_mask(mask)


def reconstruct(model: nn.Module, backbone: str, gt: Tensor, mask2d: Tensor) -> Tensor:
    """Simulate the measurement of ``gt`` through ``mask2d`` (top-left crop) and reconstruct it with ``model``."""
    preset = backbone_preset(backbone)
    height, width = gt.shape[-2:]
    if mask2d.shape[0] < height or mask2d.shape[1] < width:
        raise ValueError(f"the mask ({mask2d.shape[0]}x{mask2d.shape[1]}) is smaller than the scene ({height}x{width})")
    mask3d = cassi.mask3d(mask2d[:height, :width], gt.shape[0])
    net_input, mask_input = cassi.simulate(gt[None], mask3d, preset.input_setting, preset.mask_setting)
    with torch.no_grad():
        return model.eval()(net_input, mask_input)[0].float()


def scores(reconstruction: Tensor, gt: Tensor) -> dict[str, float]:
    return {name: getattr(metrics, name)(reconstruction, gt).item() for name in METRIC_NAMES}


def _simulated(args: argparse.Namespace, models: dict[str, tuple[nn.Module, str]]) -> int:
    from .viz import save_comparison_figure

    gt = demo_scene(size=args.size, seed=args.seed, cube=args.cube)
    multiple = max(size_multiple(model) for model, _ in models.values())
    gt = center_crop(gt, multiple)
    mask2d = demo_mask(gt, mask=args.mask, seed=args.seed)
    source = args.cube or f"procedural scene (seed {args.seed})"
    mask_name = args.mask or f"random binary mask (seed {args.seed})"
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
        raise ValueError("--measurement needs the mask it was taken with: pass --mask FILE")
    measurement = read_measurement(args.measurement)
    output = Path(args.output)
    for key, (model, backbone) in models.items():
        preset = backbone_preset(backbone)
        cube = reconstruct_measurement(model, measurement, args.mask, input_setting=preset.input_setting,
                                       mask_setting=preset.mask_setting)
        path = output.with_name(f"{output.stem}-{key}{output.suffix}")
        save_preview(path, cube)
        print(f"{LABELS[key]}: {path}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=DEFAULT_SDP,
                        help="the injected model (default: the embedded MST-S + SDP)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE,
                        help="the bare model to compare with (default: the embedded MST-S baseline)")
    parser.add_argument("--cube", help="your ground-truth cube (.mat, .npy, .safetensors or a folder of band PNGs)")
    parser.add_argument("--mask", help="your 2-D mask (.mat/.npy; default: a random binary coded aperture)")
    parser.add_argument("--measurement", help="a real 2-D measurement (.mat/.npy) to reconstruct instead")
    parser.add_argument("--size", type=int, default=256, help="procedural scene size (default 256)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help=f"scene and mask seed (default {DEMO_SEED})")
    parser.add_argument("--quick", action="store_true", help="a 64x64 scene, for a fast check")
    parser.add_argument("--output", default="spectral-prior-demo.png", help="the figure (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``spectral-prior demo``."""
    if args.quick:
        args.size = 64
    models = {
        "bare": load_model_and_backbone(args.baseline, None),
        "sdp": load_model_and_backbone(args.checkpoint, None),
    }
    return _real(args, models) if args.measurement else _simulated(args, models)
