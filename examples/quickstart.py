"""Quickstart: one line injects a prior; then the demo compares the official, a fine-tuned and an SDP BiSRNet.

    python examples/quickstart.py [--data ../shared/data] [--scene cubes/cave_balloons_256.mat] [--quick]

1. A real CAVE scene, measured through the real CASSI mask, reconstructed by the official BiSRNet checkpoint, bare
   and with a Spectral Diffusion Prior injected in one line. That prior is untrained and SPIM starts at zero, so both
   rows are equal by construction: injection never changes a network until it is trained.
2. ``spectral-prior demo``: the embedded ``bisrnet-official`` (the authors' weights), ``bisrnet-baseline`` and
   ``bisrnet-sdp`` (those weights fine-tuned on the CAVE train scenes without and with the prior, at equal budget) on
   the shipped crop of a CAVE test scene, through the models' own mask, with scores and a figure.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

import spectral_prior as sp
from spectral_prior import cassi, cli
from spectral_prior.evaluation import metrics
from spectral_prior.adapters import bisrnet, load_toolbox_checkpoint
from spectral_prior.data import read_cube, to_cassi_bands

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def scores(reconstruction: torch.Tensor, truth: torch.Tensor) -> str:
    reconstruction = reconstruction.clamp(0, 1)
    return (
        f"PSNR {metrics.psnr(reconstruction, truth).item():6.2f} dB | "
        f"SSIM {metrics.ssim(reconstruction, truth).item():.4f} | "
        f"SAM {metrics.sam(reconstruction, truth).item():5.2f} deg"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (see its README)")
    parser.add_argument("--scene", default="cubes/cave_balloons_256.mat")
    parser.add_argument("--quick", action="store_true", help="the demo's central 128x128 crop")
    parser.add_argument("--figure", default="spectral-prior-demo.png", help="where the demo writes its figure")
    args = parser.parse_args()

    truth = to_cassi_bands(read_cube(args.data / args.scene))[None]  # [1, 28, H, W], CAVE resampled to 28 bands
    truth = truth / truth.max()
    height, width = truth.shape[-2:]
    mask = cassi.load_mask(args.data / "mask_256.mat")[:height, :width]
    h, mask3d = cassi.simulate(truth, cassi.mask3d(mask), input_setting="H", mask_setting="Mask")

    model = load_toolbox_checkpoint(bisrnet(), args.data / "checkpoints" / "bisrnet_simulation.pth").eval()
    with torch.inference_mode():
        bare = model(h, mask3d)
        sp.inject_prior(model, layers="bisrnet", prior=sp.SpectralDiffusionPrior())
        injected = model(h, mask3d)

    print(f"scene {args.scene} ({height}x{width}, 28 bands), official BiSRNet checkpoint")
    print(f"  input 'H'         {scores(h, truth)}")
    print(f"  BiSRNet           {scores(bare, truth)}")
    print(f"  BiSRNet + prior   {scores(injected, truth)}   (untrained prior, zero-initialised SPIM)")

    print("\nspectral-prior demo" + (" --quick" if args.quick else ""))
    cli.main(["demo", "--output", args.figure] + (["--quick"] if args.quick else []))


if __name__ == "__main__":
    main()
