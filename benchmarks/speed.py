"""Forward and training-step time of our backbones, alone or against the official MST toolbox code.

    python benchmarks/speed.py [--size 256] [--repeats 10] [--out results.json]
    python benchmarks/speed.py --official DIR [--compile] [--repeats 9]

Alone, it times the forward pass of MST-S/M/L and BiSRNet (256x256, batch 1). With ``--official DIR``, a folder
holding the toolbox's ``MST.py``, ``MST_Plus_Plus.py`` and ``BiSRNet.py`` (its ``simulation/train_code/architecture``
files; keep them outside this repository), it builds each official model with our weights and measures, side by side
in one process with the calls interleaved:

* the forward pass (256x256, batch 1, ``inference_mode``), with the largest difference of the outputs;
* a training step (forward, L2 loss, backward, Adam; 128x128, batch 4, one mask shared by the batch as in the
  toolbox's training), and its peak memory, each implementation in a fresh subprocess;
* with ``--compile``, the same for ``torch.compile`` of ours (compile time reported apart).

Prints markdown tables of medians and ratios (ours / official) and writes JSON.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch

from common import interleaved_medians, markdown_table, write_json
from spectral_prior.adapters import bisrnet, load_toolbox_checkpoint, mst_l, mst_m, mst_plus_plus, mst_s

# Ours, by name: the constructor and the mask setting its forward takes.
BACKBONES = {
    "MST-S": (mst_s, "Phi"), "MST-M": (mst_m, "Phi"), "MST-L": (mst_l, "Phi"), "MST++": (mst_plus_plus, "Mask"),
    "BiSRNet": (bisrnet, "Mask"),
}
TIMED_ALONE = ("MST-S", "MST-M", "MST-L", "BiSRNet")

# The toolbox's own constructors (its architecture/__init__.py), by the file that defines each class.
OFFICIAL = {
    "MST-S": ("MST.py", lambda m: m.MST(dim=28, stage=2, num_blocks=[2, 2, 2])),
    "MST-L": ("MST.py", lambda m: m.MST(dim=28, stage=2, num_blocks=[4, 7, 5])),
    "MST++": ("MST_Plus_Plus.py", lambda m: m.MST_Plus_Plus(in_channels=28, out_channels=28, n_feat=28, stage=3)),
    "BiSRNet": ("BiSRNet.py", lambda m: m.BiSRNet(in_channels=28, out_channels=28, n_feat=28, stage=1, num_blocks=[1, 1, 1])),
}
FORWARD_MODELS = ("MST-L", "MST++", "BiSRNet")
TRAIN_MODELS = ("MST-S", "BiSRNet")
TRAIN_SIZE, TRAIN_BATCH = 128, 4
BISRNET_CHECKPOINT = Path(__file__).resolve().parents[2] / "shared" / "data" / "checkpoints" / "bisrnet_simulation.pth"


def example_inputs(size: int, mask_setting: str, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A random 'H' input and one mask shared by the batch (repeated, as the toolbox's training materialises it)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 28, size, size, generator=generator)
    mask_width = size + 54 if mask_setting == "Phi" else size
    return x, torch.rand(1, 28, size, mask_width, generator=generator).repeat(batch, 1, 1, 1)


@functools.cache
def load_official_module(directory: Path, file_name: str) -> ModuleType:
    path = directory / file_name
    if not path.is_file():
        raise SystemExit(f"--official {directory}: no {file_name} there; it must hold the toolbox's {file_name}")
    spec = importlib.util.spec_from_file_location(f"official_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(implementation: str, name: str, official_dir: Path | None) -> torch.nn.Module:
    """Our model with fixed random weights (BiSRNet: the official checkpoint when ../shared has it, since random
    binary weights hardly exercise the sign flips), or the official model with the same weights."""
    torch.manual_seed(0)
    ours = BACKBONES[name][0]()
    if name == "BiSRNet" and BISRNET_CHECKPOINT.is_file():
        load_toolbox_checkpoint(ours, BISRNET_CHECKPOINT)
    if implementation == "ours":
        return ours
    file_name, constructor = OFFICIAL[name]
    official = constructor(load_official_module(official_dir, file_name))
    official.load_state_dict(ours.state_dict(), strict=True)
    return official


def training_step(model: torch.nn.Module, inputs: tuple[torch.Tensor, torch.Tensor]) -> Callable[[], None]:
    target = torch.rand_like(inputs[0])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = (model(*inputs) - target).square().mean()
        loss.backward()
        optimizer.step()

    return step


def psnr_against(reference: torch.Tensor, other: torch.Tensor) -> float:
    mse = (reference - other).square().mean().item()
    peak = reference.abs().max().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(peak**2 / mse)).item()


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def memory_probe(implementation: str, name: str, official_dir: Path | None) -> None:
    """In a fresh process: the resident-memory peak of two training steps above the memory before them (MiB).

    Linux only: writing 5 to /proc/self/clear_refs resets the peak (VmHWM) to the current resident size.
    """
    model = build(implementation, name, official_dir).train()
    step = training_step(model, example_inputs(TRAIN_SIZE, BACKBONES[name][1], TRAIN_BATCH))
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = _status_kib("VmRSS")
    step()
    step()
    print(json.dumps({"peak_mib": (_status_kib("VmHWM") - before) / 1024}))


def peak_memory_mib(implementation: str, name: str, official_dir: Path | None) -> float:
    command = [sys.executable, __file__, "--memory-probe", implementation, name, "--threads", str(torch.get_num_threads())]
    if official_dir is not None:
        command += ["--official", str(official_dir)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def compare_with_official(official_dir: Path, repeats: int, compile_ours: bool) -> dict[str, list[dict]]:
    implementations = ["ours", "official"] + (["compiled"] if compile_ours else [])
    forward_rows, train_rows = [], []
    for name in FORWARD_MODELS:
        inputs = example_inputs(256, BACKBONES[name][1])
        models = {impl: build("ours" if impl == "compiled" else impl, name, official_dir).eval() for impl in implementations}
        compile_seconds = None
        with torch.inference_mode():
            if compile_ours:
                models["compiled"] = torch.compile(models["compiled"], dynamic=False)
                start = time.perf_counter()
                models["compiled"](*inputs)
                compile_seconds = time.perf_counter() - start
            outputs = {impl: model(*inputs) for impl, model in models.items()}
            medians = interleaved_medians({impl: (lambda m=m: m(*inputs)) for impl, m in models.items()}, repeats=repeats)
        row = {
            "backbone": name,
            "official (ms)": medians["official"] * 1e3,
            "ours (ms)": medians["ours"] * 1e3,
            "ours / official": medians["ours"] / medians["official"],
            "max abs diff": f'{(outputs["ours"] - outputs["official"]).abs().max().item():.1e}',
            "official output range": f'[{outputs["official"].min().item():.2f}, {outputs["official"].max().item():.2f}]',
            "PSNR vs official (dB)": psnr_against(outputs["official"], outputs["ours"]),
        }
        if compile_ours:
            row |= {"compiled / eager": medians["compiled"] / medians["ours"], "compile (s)": compile_seconds}
        forward_rows.append(row)
        print(markdown_table([row]).splitlines()[-1], flush=True)

    for name in TRAIN_MODELS:
        inputs = example_inputs(TRAIN_SIZE, BACKBONES[name][1], TRAIN_BATCH)
        steps = {}
        for impl in implementations:
            model = build("ours" if impl == "compiled" else impl, name, official_dir).train()
            steps[impl] = training_step(torch.compile(model, dynamic=False) if impl == "compiled" else model, inputs)
        compile_seconds = None
        if compile_ours:
            start = time.perf_counter()
            steps["compiled"]()
            compile_seconds = time.perf_counter() - start
        medians = interleaved_medians(steps, repeats=repeats)
        memory = {impl: peak_memory_mib(impl, name, official_dir) for impl in ("ours", "official")}
        row = {
            "backbone": name,
            "official (s)": medians["official"],
            "ours (s)": medians["ours"],
            "ours / official": medians["ours"] / medians["official"],
            "peak MiB official": memory["official"],
            "peak MiB ours": memory["ours"],
        }
        if compile_ours:
            row |= {"compiled / eager": medians["compiled"] / medians["ours"], "compile (s)": compile_seconds}
        train_rows.append(row)
        print(markdown_table([row]).splitlines()[-1], flush=True)
    return {"forward": forward_rows, "training_step": train_rows}


def time_ours_alone(size: int, repeats: int) -> list[dict]:
    models = {name: BACKBONES[name][0]().eval() for name in TIMED_ALONE}
    inputs = {name: example_inputs(size, BACKBONES[name][1]) for name in TIMED_ALONE}
    calls = {name: (lambda name=name: models[name](*inputs[name])) for name in TIMED_ALONE}
    with torch.inference_mode():  # all backbones interleaved round-robin, so they share the machine's noise
        medians = interleaved_medians(calls, repeats=repeats)
    return [
        {
            "backbone": name,
            "params (M)": sum(p.numel() for p in models[name].parameters()) / 1e6,
            "forward (ms)": medians[name] * 1e3,
        }
        for name in TIMED_ALONE
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="forward size when timing ours alone")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--official", type=Path, default=None, help="folder with the toolbox's architecture files")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of ours (with --official)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--memory-probe", nargs=2, metavar=("IMPL", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(*args.memory_probe, args.official)
        return

    if args.official is None:
        rows = time_ours_alone(args.size, args.repeats)
        print(f"Forward latency at {args.size}x{args.size}, batch 1, {torch.get_num_threads()} CPU threads "
              f"(median of {args.repeats}, interleaved)\n")
        print(markdown_table(rows))
        path = write_json("speed", {"size": args.size, "repeats": args.repeats, "rows": rows}, args.out)
    else:
        print(f"Ours vs the official toolbox code, {torch.get_num_threads()} CPU threads, median of {args.repeats} "
              "interleaved calls\n")
        tables = compare_with_official(args.official.resolve(), args.repeats, args.compile)
        print("\nForward, 256x256, batch 1:\n\n" + markdown_table(tables["forward"]))
        print(f"\nTraining step, {TRAIN_SIZE}x{TRAIN_SIZE}, batch {TRAIN_BATCH}, Adam:\n\n"
              + markdown_table(tables["training_step"]))
        path = write_json("speed-vs-official", {"repeats": args.repeats, **tables}, args.out)
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
