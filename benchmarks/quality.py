"""Does the prior pay? Baseline vs SDP-injected backbone at equal training budget, several seeds, held-out scenes.

    python benchmarks/quality.py --budget cpu [--backbones mst_s bisrnet] [--seeds 0 1] [--threads 1]

For each backbone and seed, with the same data, batch, crop, mask and seed (``spectral_prior.train``'s recipe):

* ``baseline``: the bare backbone, ``steps`` steps;
* ``+SDP``: stage 1 for ``steps / 2``, stage 2a (prior only, cheap) for ``steps / 4``, stage 2b for ``steps / 2``:
  the backbone sees the same number of optimisation steps as the baseline.

Both are scored on held-out procedural scenes (a seed no training or validation step used) and on every real CAVE
cube in ../shared/data/cubes, through the real 256x256 TSA mask. Each finished run is kept as JSON under
``--out/BUDGET``, so an interrupted study resumes where it stopped (and its training runs resume from their
checkpoints). Prints the table and writes ``quality-BUDGET.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import spectral_prior as sp
from common import RESULTS, markdown_table, write_json
from overhead import count_flops
from spectral_prior.adapters import backbone_preset
from spectral_prior.data import CubeFolder, ProceduralCubes
from spectral_prior.evaluate import evaluate, mean_metrics
from spectral_prior.train import LOG_FILE, TrainConfig, train, train_all

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TEST_SEED = 424_242  # held-out procedural scenes: not a training (run seed) nor a validation seed

BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(steps=4, batch=2, crop=32, scenes=4, scene_size=64, test_scenes=2, test_size=64),
    "cpu": dict(steps=500, batch=4, crop=64, scenes=32, scene_size=128, test_scenes=8, test_size=128),
    "gpu": dict(steps=20_000, batch=8, crop=256, scenes=512, scene_size=384, test_scenes=16, test_size=256),
}


def _config(backbone: str, seed: int, budget: dict[str, Any], output: Path, **changes: Any) -> TrainConfig:
    settings = dict(
        backbone=backbone, output=str(output), steps=budget["steps"], batch=budget["batch"], crop=budget["crop"],
        scenes=budget["scenes"], scene_size=budget["scene_size"], mask=str(SHARED_DATA / "mask_256.mat"),
        seed=seed, val_scenes=2, val_every=max(1, budget["steps"] // 4), checkpoint_every=max(1, budget["steps"] // 10),
    )
    return TrainConfig(**{**settings, **changes})


def _train_seconds(run: Path) -> float:
    """Seconds spent in optimisation steps, summed over every log below ``run`` (resumed runs included)."""
    return sum(json.loads(line)["seconds"] for log in run.rglob(LOG_FILE) for line in log.read_text().splitlines())


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
    result_file = out / f"{backbone}-{variant}-seed{seed}.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    budget = BUDGETS[budget_name]
    run = out / "runs" / f"{backbone}-{variant}-seed{seed}"
    started = time.perf_counter()
    if variant == "baseline":
        final = train(_config(backbone, seed, budget, run, stage="baseline"), resume=True)
    else:
        half = max(1, budget["steps"] // 2)
        final = train_all(_config(backbone, seed, budget, run, steps=half), distill_steps=max(1, half // 2), resume=True)
    result = {
        "backbone": backbone, "variant": variant, "seed": seed, "budget": budget_name, **budget,
        "train_seconds": _train_seconds(run), "wall_seconds_this_invocation": time.perf_counter() - started,
        "final": str(final), **_scores(sp.load_model(final), backbone, budget),
    }
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=2))
    return result


def prior_cost(backbone: str, size: int = 256) -> dict[str, float]:
    """Parameters and FLOPs the injected prior + SPIMs add at inference (teacher excluded), at ``size``^2."""
    model = sp.inject_prior(sp.adapters.create_backbone(backbone), backbone_preset(backbone).name,
                            prior=sp.SpectralDiffusionPrior()).eval()
    injector = sp.get_injector(model)
    params = sum(p.numel() for n, p in injector.named_parameters() if "teacher_hfe" not in n)
    args = backbone_preset(backbone).example_inputs(torch.device("cpu"), torch.float32)[0]
    args = tuple(torch.nn.functional.interpolate(a, size=(size, size + a.shape[-1] - a.shape[-2])) for a in args)
    with injector.disable():
        bare = count_flops(model, *args)
    return {"params_added": params, "gflops_added": (count_flops(model, *args) - bare) / 1e9, "gflops_bare": bare / 1e9}


def _spread(values: list[float]) -> str:
    return f"{min(values):+.2f}..{max(values):+.2f}" if len(values) > 1 else "one seed"


def table(results: list[dict[str, Any]], costs: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    for backbone in sorted({r["backbone"] for r in results}):
        for split in ("procedural", "real"):
            by_seed = {(r["variant"], r["seed"]): r for r in results if r["backbone"] == backbone}
            seeds = sorted({s for v, s in by_seed if (("baseline", s) in by_seed and ("sdp", s) in by_seed)})
            if not seeds:
                continue
            mean = lambda variant, key: statistics.mean(by_seed[(variant, s)][split][key] for s in seeds)
            gains = [by_seed[("sdp", s)][split]["psnr"] - by_seed[("baseline", s)][split]["psnr"] for s in seeds]
            rows.append({
                "backbone": backbone, "test scenes": split, "seeds": len(seeds),
                "baseline PSNR": mean("baseline", "psnr"), "+SDP PSNR": mean("sdp", "psnr"),
                "gain (dB)": statistics.mean(gains), "gain per seed": _spread(gains),
                "baseline SSIM": mean("baseline", "ssim"), "+SDP SSIM": mean("sdp", "ssim"),
                "baseline SAM": mean("baseline", "sam"), "+SDP SAM": mean("sdp", "sam"),
                "train s (base/SDP)": f"{statistics.mean(by_seed[('baseline', s)]['train_seconds'] for s in seeds):.0f}"
                                      f"/{statistics.mean(by_seed[('sdp', s)]['train_seconds'] for s in seeds):.0f}",
                "params added": costs[backbone]["params_added"],
                "GFLOPs added": costs[backbone]["gflops_added"],
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--backbones", nargs="+", default=["mst_s", "bisrnet"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS / "quality")
    parser.add_argument("--report-only", action="store_true", help="only tabulate the runs already finished")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    out = args.out / args.budget
    results = []
    for backbone in args.backbones:
        for seed in args.seeds:
            for variant in ("baseline", "sdp"):
                cached = out / f"{backbone}-{variant}-seed{seed}.json"
                if args.report_only:
                    if cached.is_file():
                        results.append(json.loads(cached.read_text()))
                    continue
                results.append(run_one(backbone, variant, seed, args.budget, out))
    costs = {backbone: prior_cost(backbone) for backbone in {r["backbone"] for r in results}}
    rows = table(results, costs)
    budget = BUDGETS[args.budget]
    print(f"\nQuality at equal budget ({args.budget}: {budget['steps']} backbone steps, batch {budget['batch']}, "
          f"{budget['crop']}px crops of {budget['scenes']} procedural scenes; real TSA mask), "
          f"{torch.get_num_threads()} CPU threads\n")
    print(markdown_table(rows) if rows else "no finished (baseline, +SDP) pairs yet")
    path = write_json(f"quality-{args.budget}", {"budget": budget, "rows": rows, "runs": results, "costs": costs},
                      args.out / f"quality-{args.budget}.json")
    print(f"written {path}")


if __name__ == "__main__":
    main()
