"""Does the prior pay? Baseline vs SDP-injected backbone at equal training budget, several seeds, held-out scenes.

    python benchmarks/quality.py --study bisrnet-cave --budget cpu [--seeds 0 1] [--threads 1]   # study A
    python benchmarks/quality.py --study mst_s-cave --budget cpu [--seeds 0 1] [--threads 1]     # study B
    python benchmarks/quality.py --budget cpu [--backbones mst_s bisrnet] [--seeds 0 1] [--threads 1]
    python benchmarks/quality.py --budget cpu --backbones mst_s --seeds 0 --variants sdp sdp-D64 sdp-T1 ...

Real data (``--study``, see :mod:`cave_study`): the CAVE training scenes of ``../shared/data/cave``, scored on
the 16 quadrants of its four test scenes; study A starts from the official BiSRNet weights, study B trains MST-S
from scratch. The default ``--study procedural`` is the recipe check on procedural scenes below.

For each backbone and seed, with the same data, batch, crop, mask and seed (``spectral_prior.training``'s recipe):

* ``baseline``: the bare backbone, ``steps`` steps;
* ``+SDP``: stage 1 for ``steps / 2``, stage 2a (prior only, cheap) for ``steps / 4``, stage 2b for ``steps / 2``:
  the backbone sees the same number of optimisation steps as the baseline.

``--variants`` adds ablations of the SDP recipe (see :data:`VARIANTS`), each compared with the same baseline.
Both are scored on held-out procedural scenes (a seed no training or validation step used) and on every real CAVE
cube in ../shared/data/cubes, through the real 256x256 TSA mask. Each finished run is kept as JSON under
``--out/BUDGET``, so an interrupted study resumes where it stopped (and its training runs resume from their
checkpoints). Prints the table and writes ``quality-BUDGET.json``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import cave_study
import spectral_prior as sp
from common import RESULTS, cached_json, markdown_table, train_seconds, write_json
from overhead import count_flops
from spectral_prior.adapters import backbone_preset
from spectral_prior.data import CubeFolder, ProceduralCubes
from spectral_prior.saving.hub import PRETRAINED_DIR
from spectral_prior.evaluation import evaluate, mean_metrics
from spectral_prior.training import TrainConfig, train, train_all

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TEST_SEED = 424_242  # held-out procedural scenes: not a training (run seed) nor a validation seed

BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(steps=4, batch=2, crop=32, scenes=4, scene_size=64, test_scenes=2, test_size=64),
    "cpu": dict(steps=500, batch=4, crop=64, scenes=32, scene_size=128, test_scenes=8, test_size=128),
    "gpu": dict(steps=20_000, batch=8, crop=256, scenes=512, scene_size=384, test_scenes=16, test_size=256),
}


VARIANTS: dict[str, dict[str, Any]] = {
    "sdp": {},  # the default recipe
    "sdp-D64": {"prior": {"prior_dim": 64}},  # a smaller prior vector
    "sdp-T1": {"prior": {"steps": 1}},  # one diffusion step instead of four
    "sdp-deep": {"layers": r"(?:.+\.)?(?:bottleneck|decoder_layers\.\d+\.2)"},  # bottleneck + decoder only
    "sdp-ema": {"ema": 0.999},  # an EMA of the weights
}


def _config(backbone: str, seed: int, budget: dict[str, Any], output: Path, **changes: Any) -> TrainConfig:
    settings = dict(
        backbone=backbone, output=str(output), steps=budget["steps"], batch=budget["batch"], crop=budget["crop"],
        scenes=budget["scenes"], scene_size=budget["scene_size"], mask=str(SHARED_DATA / "mask_256.mat"),
        seed=seed, val_scenes=2, val_every=max(1, budget["steps"] // 4), checkpoint_every=max(1, budget["steps"] // 10),
    )
    return TrainConfig(**{**settings, **changes})


def _scores(model: torch.nn.Module, backbone: str, budget: dict[str, Any]) -> dict[str, Any]:
    preset = backbone_preset(backbone)
    settings = dict(input_setting=preset.input_setting, mask_setting=preset.mask_setting)
    mask = SHARED_DATA / "mask_256.mat"
    procedural = evaluate(model, ProceduralCubes(budget["test_scenes"], size=budget["test_size"], seed=TEST_SEED),
                          mask, **settings)
    real = evaluate(model, CubeFolder(SHARED_DATA / "cubes"), mask, **settings)
    return {"procedural": mean_metrics(procedural), "real": mean_metrics(real),
            "real_scenes": {r["name"]: {k: r[k] for k in ("psnr", "ssim", "sam")} for r in real}}


def run_one(backbone: str, variant: str, seed: int, budget_name: str, out: Path) -> dict[str, Any]:
    """Train (or resume) and score one (backbone, variant, seed); the result is cached as JSON."""
    return cached_json(out / f"{backbone}-{variant}-seed{seed}.json",
                       lambda: _train_and_score(backbone, variant, seed, budget_name, out))


def _train_and_score(backbone: str, variant: str, seed: int, budget_name: str, out: Path) -> dict[str, Any]:
    budget = BUDGETS[budget_name]
    run = out / "runs" / f"{backbone}-{variant}-seed{seed}"
    started = time.perf_counter()
    if variant == "baseline":
        final = train(_config(backbone, seed, budget, run, stage="baseline"), resume=True)
    else:
        half = max(1, budget["steps"] // 2)
        config = _config(backbone, seed, budget, run, steps=half, **VARIANTS[variant])
        final = train_all(config, distill_steps=max(1, half // 2), resume=True)
    result = {
        "backbone": backbone, "variant": variant, "seed": seed, "budget": budget_name, **budget,
        "train_seconds": train_seconds(run), "wall_seconds_this_invocation": time.perf_counter() - started,
        "final": str(final), **_scores(sp.load_model(final), backbone, budget),
    }
    return result


def prior_cost(backbone: str, variant: str = "sdp", size: int = 256) -> dict[str, float]:
    """Parameters and FLOPs a variant's prior + SPIMs add at inference (teacher excluded), at ``size``^2."""
    changes = VARIANTS[variant]
    preset = backbone_preset(backbone)
    prior = sp.SpectralDiffusionPrior(sp.PriorConfig(**changes.get("prior", {})))
    example = preset.example_inputs(torch.device("cpu"), torch.float32)
    model = sp.inject_prior(sp.adapters.create_backbone(backbone), changes.get("layers", preset.name), prior=prior,
                            condition=preset.condition, example_inputs=example).eval()
    injector = sp.get_injector(model)
    params = sum(p.numel() for n, p in injector.named_parameters() if "teacher_hfe" not in n)
    args = preset.example_inputs(torch.device("cpu"), torch.float32)[0]
    args = tuple(torch.nn.functional.interpolate(a, size=(size, size + a.shape[-1] - a.shape[-2])) for a in args)
    with injector.disable():
        bare = count_flops(model, *args)
    return {"params_added": params, "gflops_added": (count_flops(model, *args) - bare) / 1e9, "gflops_bare": bare / 1e9}


def _spread(values: list[float]) -> str:
    return f"{min(values):+.2f}..{max(values):+.2f}" if len(values) > 1 else "one seed"


def _row(backbone: str, variant: str, split: str, runs: dict, seeds: list[int], cost: dict) -> dict[str, Any]:
    """One table row: ``variant`` against the baseline on the ``split`` scenes, averaged over ``seeds``."""
    mean = lambda name, key: statistics.mean(runs[(name, s)][split][key] for s in seeds)
    seconds = lambda name: statistics.mean(runs[(name, s)]["train_seconds"] for s in seeds)
    gains = [runs[(variant, s)][split]["psnr"] - runs[("baseline", s)][split]["psnr"] for s in seeds]
    return {
        "backbone": backbone, "variant": variant, "test scenes": split, "seeds": len(seeds),
        "baseline PSNR": mean("baseline", "psnr"), "+SDP PSNR": mean(variant, "psnr"),
        "gain (dB)": statistics.mean(gains), "gain per seed": _spread(gains),
        "baseline SSIM": mean("baseline", "ssim"), "+SDP SSIM": mean(variant, "ssim"),
        "baseline SAM": mean("baseline", "sam"), "+SDP SAM": mean(variant, "sam"),
        "train s (base/SDP)": f"{seconds('baseline'):.0f}/{seconds(variant):.0f}",
        "params added": cost["params_added"], "GFLOPs added": cost["gflops_added"],
    }


def table(results: list[dict[str, Any]], costs: dict[tuple[str, str], dict[str, float]]) -> list[dict[str, Any]]:
    """Rows for every (backbone, variant, test split) with at least one seed holding both runs."""
    rows = []
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in results)]
    backbones = sorted({r["backbone"] for r in results})
    for backbone, variant, split in itertools.product(backbones, variants, ("procedural", "real")):
        runs = {(r["variant"], r["seed"]): r for r in results if r["backbone"] == backbone}
        seeds = sorted(s for v, s in runs if v == variant and ("baseline", s) in runs)
        if seeds:
            rows.append(_row(backbone, variant, split, runs, seeds, costs[(backbone, variant)]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=("procedural", *sorted(cave_study.STUDIES)), default="procedural")
    parser.add_argument("--budget", choices=sorted({*BUDGETS, *cave_study.BUDGETS}), default="cpu",
                        help=f"procedural: {', '.join(BUDGETS)}; --study: {', '.join(cave_study.BUDGETS)}")
    parser.add_argument("--backbones", nargs="+", default=["mst_s", "bisrnet"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=["sdp"],
                        help=f"SDP recipes to compare with the baseline (default: the default recipe 'sdp'); "
                        f"procedural: {', '.join(VARIANTS)}; --study: {', '.join(cave_study.VARIANTS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS / "quality")
    parser.add_argument("--skip", nargs="+", default=[], metavar="ARM",
                        help="with --study: leave these arms (baseline, official or a variant) to another process")
    parser.add_argument("--report-only", action="store_true", help="only tabulate the runs already finished")
    parser.add_argument("--ship", action="store_true", help="with --study: write seed 0's models into the package's "
                        "embedded models (spectral_prior/pretrained)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    known = VARIANTS if args.study == "procedural" else cave_study.VARIANTS
    if set(args.variants) - set(known):
        parser.error(f"unknown variants {sorted(set(args.variants) - set(known))} for --study {args.study}; "
                     f"known: {', '.join(known)}")
    budgets = BUDGETS if args.study == "procedural" else cave_study.BUDGETS
    if args.budget not in budgets:
        parser.error(f"--budget {args.budget} is not one of --study {args.study}'s: {', '.join(budgets)}")
    if args.study != "procedural":
        variants = args.variants
        cave_study.main(args.study, args.budget, args.seeds, args.out, variants=variants, report_only=args.report_only,
                        skip=args.skip)
        if args.ship:
            for folder in cave_study.ship(args.study, args.budget, args.out, PRETRAINED_DIR):
                print(f"shipped {folder}")
        return

    out = args.out / args.budget
    results = []
    for backbone in args.backbones:
        for seed in args.seeds:
            for variant in ("baseline", *(VARIANTS if args.report_only else args.variants)):
                cached = out / f"{backbone}-{variant}-seed{seed}.json"
                if args.report_only:
                    if cached.is_file():
                        results.append(json.loads(cached.read_text()))
                    continue
                results.append(run_one(backbone, variant, seed, args.budget, out))
    costs = {(r["backbone"], r["variant"]): prior_cost(r["backbone"], r["variant"])
             for r in results if r["variant"] != "baseline"}
    rows = table(results, costs)
    budget = BUDGETS[args.budget]
    print(f"\nQuality at equal budget ({args.budget}: {budget['steps']} backbone steps, batch {budget['batch']}, "
          f"{budget['crop']}px crops of {budget['scenes']} procedural scenes; real TSA mask), "
          f"{torch.get_num_threads()} CPU threads\n")
    print(markdown_table(rows) if rows else "no finished (baseline, +SDP) pairs yet")
    path = write_json(f"quality-{args.budget}", {"budget": budget, "rows": rows, "runs": results,
                                                 "costs": {f"{b}/{v}": c for (b, v), c in costs.items()}},
                      args.out / f"quality-{args.budget}.json")
    print(f"written {path}")


if __name__ == "__main__":
    main()
