"""Forward latency of the bare backbones: MST-S/M/L and BiSRNet at 256x256, batch 1.

    python benchmarks/speed.py [--size 256] [--repeats 10] [--out results.json]

Prints a markdown table (median of repeated runs, calls interleaved) and writes JSON.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common import interleaved_medians, markdown_table, write_json
from spectral_prior.adapters import bisrnet, mst_l, mst_m, mst_s

BACKBONES = {"MST-S": (mst_s, "Phi"), "MST-M": (mst_m, "Phi"), "MST-L": (mst_l, "Phi"), "BiSRNet": (bisrnet, "Mask")}


def example_inputs(size: int, mask_setting: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A random 'H' input and a mask of the shape the backbone expects (timing does not depend on values)."""
    x = torch.rand(1, 28, size, size)
    mask_width = size + 54 if mask_setting == "Phi" else size
    return x, torch.rand(1, 28, size, mask_width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    models = {name: constructor().eval() for name, (constructor, _) in BACKBONES.items()}
    inputs = {name: example_inputs(args.size, mask_setting) for name, (_, mask_setting) in BACKBONES.items()}
    calls = {name: (lambda name=name: models[name](*inputs[name])) for name in BACKBONES}
    with torch.inference_mode():  # all backbones interleaved round-robin, so they share the machine's noise
        medians = interleaved_medians(calls, repeats=args.repeats)
    rows = [
        {
            "backbone": name,
            "params (M)": sum(p.numel() for p in models[name].parameters()) / 1e6,
            "forward (ms)": medians[name] * 1e3,
        }
        for name in BACKBONES
    ]
    print(f"Forward latency at {args.size}x{args.size}, batch 1, {torch.get_num_threads()} CPU threads "
          f"(median of {args.repeats}, interleaved)\n")
    print(markdown_table(rows))
    path = write_json("speed", {"size": args.size, "repeats": args.repeats, "rows": rows}, args.out)
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
