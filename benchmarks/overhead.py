"""What injection costs: bare vs injected forward time of MST-S/M/L and BiSRNet, and the prior's params and FLOPs.

    python benchmarks/overhead.py [--size 256] [--repeats 5] [--backbones MST-S MST-L] [--out results.json]

Three variants per backbone, timed interleaved in one run (their ratios share the machine's noise):
``bare``; ``hooks+SPIM`` (a LinearPrior stand-in: the cost of the hooks and modulation alone); ``+SDP`` (the
Spectral Diffusion Prior: HFE + diffusion). Prints a markdown table and writes JSON.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import spectral_prior as sp
from common import interleaved_medians, markdown_table, write_json
from speed import BACKBONES, example_inputs

PRESETS = {"MST-S": "mst", "MST-M": "mst", "MST-L": "mst", "MST++": "mst_plus_plus", "BiSRNet": "bisrnet"}
"""The injection preset each backbone is timed with: the library's default placement for it."""


def count_flops(module: torch.nn.Module, *args: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(*args)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    prior = sp.SpectralDiffusionPrior().eval()
    h = torch.rand(1, 28, args.size, args.size)
    prior_flops = count_flops(prior, h)
    prior_params = sum(p.numel() for p in prior.student.parameters()) + sum(p.numel() for p in prior.diffusion.parameters())

    rows = []
    for name in args.backbones:
        constructor, mask_setting = BACKBONES[name]
        preset = PRESETS[name]
        bare = constructor().eval()
        linear = sp.inject_prior(copy.deepcopy(bare), preset, prior_dim=prior.prior_dim)
        sdp = sp.inject_prior(copy.deepcopy(bare), preset, copy.deepcopy(prior))
        x, mask = example_inputs(args.size, mask_setting)
        with torch.inference_mode():
            medians = interleaved_medians(
                {"bare": lambda: bare(x, mask), "spim": lambda: linear(x, mask), "sdp": lambda: sdp(x, mask)},
                repeats=args.repeats,
            )
        backbone_flops = count_flops(bare, x, mask)
        spim_params = sum(p.numel() for p in sdp.spectral_prior.spims.parameters())
        rows.append({
            "backbone": name,
            "bare (ms)": medians["bare"] * 1e3,
            "hooks+SPIM (ms)": medians["spim"] * 1e3,
            "+SDP (ms)": medians["sdp"] * 1e3,
            "hooks+SPIM ratio": medians["spim"] / medians["bare"],
            "+SDP ratio": medians["sdp"] / medians["bare"],
            "backbone GFLOPs": backbone_flops / 1e9,
            "SPIM params": spim_params,
        })

    print(f"Injection overhead at {args.size}x{args.size}, batch 1, {torch.get_num_threads()} CPU threads, "
          f"median of {args.repeats} interleaved runs\n")
    print(markdown_table(rows))
    print(f"\nSpectral Diffusion Prior at inference (student HFE + diffusion, D={prior.prior_dim}, "
          f"T={prior.config.steps}): {prior_params:,} params, {prior_flops / 1e9:.3f} GFLOPs")
    path = write_json("overhead", {
        "size": args.size, "repeats": args.repeats, "rows": rows,
        "prior": {"params": prior_params, "flops": prior_flops, "config": prior.to_config()},
    }, args.out)
    print(f"written {path}")


if __name__ == "__main__":
    main()
