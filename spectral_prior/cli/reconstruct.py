"""Reconstruct a hyperspectral cube from a real 2-D CASSI measurement and its coded aperture.

``spectral-prior reconstruct --checkpoint RUN/final --measurement scene1.mat --mask mask.mat --output OUT`` writes
``OUT/cube.safetensors`` (``cube`` [28, H, W] and ``wavelengths``), ``OUT/cube.mat`` (``img`` [H, W, 28], the
toolbox's layout) and ``OUT/preview.png`` (sRGB). The measurement is prepared as the MST toolbox's real-data test
prepares it (:mod:`spectral_prior.inference`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import cassi
from ..adapters.registry import backbone_preset
from ..devices import resolve_device
from ..errors import InvalidInputError
from ..inference import MEASUREMENT_KEYS, TOOLBOX_PEAK, check_geometry, prepare_measurement, read_measurement, reconstruct_measurement, save_cube
from ..models import load_model_and_backbone, resolve_model_mask
from ..viz import require_matplotlib, save_preview
from .common import add_mask_key_argument, add_model_arguments, check_output_folder, require_trained_weights


def reconstruct_command(args: argparse.Namespace) -> Path:
    """Run ``spectral-prior reconstruct``; returns the output folder."""
    require_matplotlib()
    require_trained_weights(args)
    check_output_folder(args.output)
    measurement = read_measurement(args.measurement, args.key)
    mask2d = resolve_model_mask(args.checkpoint, cassi.load_mask(args.mask, key=args.mask_key) if args.mask else None)
    try:
        check_geometry(measurement, mask2d, cassi.BANDS, cassi.STEP)  # before the (slow) model load
    except ValueError as err:
        if args.mask:
            raise
        raise InvalidInputError(f"{err} (the mask saved with {args.checkpoint}: a real measurement needs the mask of the "
                         "camera that took it, pass --mask)") from err
    prepare_measurement(measurement, peak=args.peak, scale=args.scale)  # its range, before the (slow) model load
    model, backbone = load_model_and_backbone(args.checkpoint, args.backbone)
    preset = backbone_preset(backbone)
    cube = reconstruct_measurement(
        model.to(resolve_device(args.device)),
        measurement,
        mask2d,
        input_setting=preset.input_setting,
        mask_setting=preset.mask_setting,
        peak=args.peak,
        scale=args.scale,
    )
    output = save_cube(args.output, cube)
    save_preview(output / "preview.png", cube)
    return output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``spectral-prior reconstruct`` options."""
    add_model_arguments(parser)
    parser.add_argument("--measurement", required=True, help="the 2-D measurement [H, W + 54] (.mat or .npy), "
                        "values in [0, 1] as a sensor reads them (the toolbox clips to that range)")
    parser.add_argument("--key", help=f"its variable in a .mat file (default: one of {', '.join(MEASUREMENT_KEYS)})")
    parser.add_argument("--mask", help="the coded aperture [H, W] it was taken with (.mat, .npy or .safetensors; "
                        "default: the mask saved with --checkpoint)")
    add_mask_key_argument(parser)
    parser.add_argument("--scale", type=float, help="the measurement's full scale, by which it is divided first "
                        "(255 for 8-bit counts, 4095 for 12-bit); needed when its values are not in [0, 1]")
    parser.add_argument("--peak", type=float, default=TOOLBOX_PEAK,
                        help=f"the measurement's maximum after normalisation (default {TOOLBOX_PEAK}, the toolbox's)")
    parser.add_argument("--output", required=True, help="folder for cube.safetensors, cube.mat and preview.png")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``spectral-prior reconstruct``."""
    output = reconstruct_command(args)
    print(f"saved {output / 'cube.safetensors'}, {output / 'cube.mat'} and {output / 'preview.png'}")
    return 0
