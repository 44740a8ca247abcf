"""Reconstruct a real CASSI measurement of the TSA system and save an sRGB preview.

    python examples/real_data.py [--scene 1] [--crop 256] [--output real_scene1.png]

The measurement (``real_measurements/sceneN.mat``, 660x714) and the real 660x660 mask come from ../shared/data. The
network is the official BiSRNet checkpoint, which was trained on simulated data with the 256x256 mask: real-data
models of the field are retrained on the real mask, so read the preview as a demonstration of the pipeline, not of
real-data quality. ``--crop`` reconstructs the central window only (faster); 0 takes the whole 660x660 scene.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import spectral_prior as sp
from spectral_prior.adapters import backbone_preset, bisrnet, load_toolbox_checkpoint
from spectral_prior.inference import read_measurement, reconstruct_measurement
from spectral_prior.viz import save_preview

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--scene", type=int, default=1, choices=range(1, 6))
    parser.add_argument("--crop", type=int, default=256, help="central window size; 0 for the whole scene")
    parser.add_argument("--output", type=Path, default=Path("real_scene1.png"))
    args = parser.parse_args()

    measurement = read_measurement(args.data / "real_measurements" / f"scene{args.scene}.mat")  # [660, 714]
    mask = sp.cassi.load_mask(args.data / "mask_real_660.mat")                                 # [660, 660]
    if args.crop:  # the same window of the mask and of the measurement, which is 54 columns wider (28 bands x 2 px)
        top = left = (mask.shape[0] - args.crop) // 2
        measurement = measurement[top : top + args.crop, left : left + args.crop + 54]
        mask = mask[top : top + args.crop, left : left + args.crop]
    model = load_toolbox_checkpoint(bisrnet(), args.data / "checkpoints" / "bisrnet_simulation.pth").eval()
    preset = backbone_preset("bisrnet")
    cube = reconstruct_measurement(model, measurement, mask, input_setting=preset.input_setting,
                                   mask_setting=preset.mask_setting)
    save_preview(args.output, cube)
    print(f"scene{args.scene}: measurement {list(measurement.shape)} -> cube {list(cube.shape)}, "
          f"range {cube.min().item():.3f}..{cube.max().item():.3f}; preview {args.output}")


if __name__ == "__main__":
    main()
