"""Adding the Spectral Diffusion Prior to the MST toolbox's own ``train.py`` (caiyuanhao1998/MST, simulation/train_code).

    python examples/mst_toolbox_integration.py [--method mst_s] [--steps 2] [--crop 64]

The toolbox builds its network with ``model_generator(opt.method, ...)``, whose modules have the names our presets
match, so the prior goes in with one line and the toolbox's loop needs three more. The changes, as a diff of the
toolbox's train.py:

    + import spectral_prior as sp
      model = model_generator(opt.method, opt.pretrained_model_path).cuda()
    + sp.inject_prior(model, layers=PRESET[opt.method], prior=sp.SpectralDiffusionPrior())  # "mst" for mst_*
    + injector = sp.get_injector(model)
      optimizer = torch.optim.Adam(model.parameters(), lr=opt.learning_rate, betas=(0.9, 0.999))
      ...
    -     model_out = model(input_meas, input_mask_train)
    +     with injector.teacher(gt):                              # stage 1: the teacher HFE also sees gt
    +         model_out = model(input_meas, input_mask_train)
          loss = torch.sqrt(mse(model_out, gt))

Stage 2 swaps the teacher for the student (``with injector.distill(gt) as pairs:`` and adds the L1 of each
``(z_student, z_teacher)`` pair to the loss), and test.py needs no change at all: outside those contexts the model
computes its prior from the measurement alone. ``spectral-prior train`` runs the whole recipe without the toolbox.

This script runs that modified loop for a few steps, with our toolbox-compatible networks standing in for
``model_generator`` and ``spectral_prior.data.CassiBatches`` for the toolbox's ``shuffle_crop`` + ``init_meas``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

import spectral_prior as sp
from spectral_prior.adapters import backbone_preset, create_backbone
from spectral_prior.data import CassiBatches, ProceduralCubes

DEFAULT_MASK = Path(__file__).resolve().parents[2] / "shared" / "data" / "mask_256.mat"
PRESET = {"mst_s": "mst", "mst_m": "mst", "mst_l": "mst", "mst_plus_plus": "mst_plus_plus", "bisrnet": "bisrnet"}


def model_generator(method: str) -> torch.nn.Module:
    """Stands in for the toolbox's ``architecture.model_generator``: same names, same state-dict keys."""
    return create_backbone(method)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="mst_s", choices=sorted(PRESET))
    parser.add_argument("--mask", type=Path, default=DEFAULT_MASK, help="the toolbox's mask.mat")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--crop", type=int, default=64)
    args = parser.parse_args()

    model = model_generator(args.method)
    sp.inject_prior(model, layers=PRESET[args.method], prior=sp.SpectralDiffusionPrior())  # + the one line
    injector = sp.get_injector(model)
    injector.print_trainable_parameters(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=4e-4, betas=(0.9, 0.999))
    mse = torch.nn.MSELoss()

    preset = backbone_preset(args.method)
    batches = CassiBatches(ProceduralCubes(8, size=128), args.mask, crop=args.crop, batch=2,
                           input_setting=preset.input_setting, mask_setting=preset.mask_setting)
    for step, batch in zip(range(args.steps), batches):
        gt, input_meas, input_mask_train = batch["gt"], batch["input"], batch["mask"]
        optimizer.zero_grad()
        with injector.teacher(gt):                                          # + stage 1
            model_out = model(input_meas, input_mask_train)
        loss = torch.sqrt(mse(model_out, gt))
        loss.backward()
        optimizer.step()
        print(f"stage 1 step {step + 1}: rmse {loss.item():.4f}")

    with torch.no_grad():                                                   # test.py: unchanged
        model.eval()
        out = model(batch["input"], batch["mask"])
    print(f"test-time output {list(out.shape)}; the prior came from the measurement alone")


if __name__ == "__main__":
    main()
