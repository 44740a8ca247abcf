"""Studies A and B of ``quality.py --study``: the Spectral Diffusion Prior on real CAVE scenes, at equal budget.

* ``bisrnet-cave`` (study A): the official BiSRNet checkpoint (i) untouched, (ii) fine-tuned on the CAVE train
  scenes for ``steps`` steps without a prior, (iii) fine-tuned with SDP: stage 1 for ``steps / 2``, stage 2a (prior
  only, the backbone does not run) for ``steps / 4``, stage 2b for ``steps / 2``, so the backbone sees ``steps``
  steps as in (ii). The stage-1 teacher, which sees the ground truth, is scored too: the most a prior could add.
* ``mst_s-cave`` (study B): MST-S from scratch, baseline vs SDP, the same two recipes.

Training uses the twelve train scenes of :data:`spectral_prior.data.CAVE_SPLIT` (random crops, the toolbox's
augmentation, random crops of the TSA mask ``mask_256.mat``), validates on central crops of train scenes, and every
model is scored once, at the end, on the 16 256x256 quadrants of the four test scenes through the same mask (toolbox
PSNR / SSIM / SAM). Seeds fix the weights, batches and noise; nothing is selected on the test scenes.

Each finished arm is cached as ``OUT/STUDY-BUDGET/ARM-seedS.json``; training runs (``OUT/STUDY-BUDGET/runs``)
resume from their checkpoints, so an interrupted study continues where it stopped.
"""
from __future__ import annotations

import functools
import itertools
import json
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

import spectral_prior as sp
from common import cached_json, markdown_table, train_seconds, write_json
from spectral_prior.adapters import backbone_preset
from spectral_prior.adapters.registry import backbone_schedule
from spectral_prior.data import CAVE_SPLIT, CubeFolder, SceneTiles
from spectral_prior.evaluation import evaluate, mean_metrics
from spectral_prior.models import save_backbone
from spectral_prior.training import LOG_FILE, TrainConfig, train, train_all

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CAVE = SHARED_DATA / "cave"
MASK = SHARED_DATA / "mask_256.mat"
OFFICIAL_BISRNET = SHARED_DATA / "checkpoints" / "bisrnet_simulation.pth"
OFFICIAL_LICENSE = SHARED_DATA / "checkpoints" / "BiSCI-LICENSE.txt"
TEST_TILE = 256

BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(batch=2, crop=32),
    "cpu": dict(batch=4, crop=64),
    # several sessions of one CPU thread per arm; bf16 autocast measured as accurate as fp32 (docs/benchmarks.md)
    "cpu128": dict(batch=4, crop=128, precision="bf16", warmup=200),
    "gpu": dict(batch=5, crop=256),  # the toolbox's batch and crop
}


@dataclass(frozen=True)
class Study:
    """One backbone's comparison: where it starts, its learning rates and its steps per budget."""

    backbone: str
    init: Optional[Path]  # None: from scratch
    lr: float
    prior_lr: Optional[float]
    steps: dict[str, int]


STUDIES: dict[str, Study] = {
    # Fine-tuning a binarised network: one Adam step of 1e-5 costs the official BiSRNet 4 dB on CAVE test tiles
    # (Adam's first steps move every latent weight by about the rate, and 3% of them lie within 1e-5 of a sign flip),
    # so the backbone moves at 1e-6 while the new prior and SPIMs learn at 1e-4.
    "bisrnet-cave": Study("bisrnet", OFFICIAL_BISRNET, lr=1e-6, prior_lr=1e-4,
                          steps={"smoke": 4, "cpu": 800, "cpu128": 4_000, "gpu": 30_000}),
    # From scratch, the toolbox's rate and (scaled) schedule; gpu: its 300 epochs of 1000 iterations.
    "mst_s-cave": Study("mst_s", None, lr=4e-4, prior_lr=None, steps={"smoke": 4, "cpu": 800, "cpu128": 12_000,
                                                                        "gpu": 300_000}),
}


VARIANTS: dict[str, dict[str, Any]] = {
    "sdp": {},  # the default recipe (the study's learning rates, the preset's blocks, PriorConfig's defaults)
    "sdp-prior-lr1e-3": {"prior_lr": 1e-3},  # the prior and SPIMs at 10x the default fine-tuning rate
}
"""SDP recipes, each a set of :class:`TrainConfig` changes, compared with the same baseline (``--variants``)."""


@functools.cache
def test_tiles() -> SceneTiles:
    """The test protocol: the four 256x256 quadrants of each CAVE test scene (16 crops), the scenes decoded once."""
    return SceneTiles(CubeFolder(CAVE, scenes=CAVE_SPLIT["test"], cache=True), TEST_TILE)


def _config(study: Study, budget: str, seed: int, output: Path, **changes: Any) -> TrainConfig:
    steps = study.steps[budget]
    settings = dict(
        backbone=study.backbone, output=str(output), data=str(CAVE), data_scenes="cave-train", mask=str(MASK),
        init=str(study.init) if study.init else None, steps=steps, lr=study.lr, prior_lr=study.prior_lr,
        random_mask_crop=True, seed=seed, val_scenes=4, val_every=max(1, steps // 4),
        checkpoint_every=max(1, steps // 10), **BUDGETS[budget],
    )
    return TrainConfig(**{**settings, **changes})


def score(model: torch.nn.Module, backbone: str, *, teacher: bool = False) -> dict[str, Any]:
    """Mean and per-scene PSNR / SSIM / SAM of ``model`` on :func:`test_tiles`, and each tile's."""
    preset = backbone_preset(backbone)
    tiles = evaluate(model, test_tiles(), MASK, input_setting=preset.input_setting, mask_setting=preset.mask_setting,
                     teacher=teacher)
    by_scene = itertools.groupby(tiles, key=lambda tile: tile["name"].split("@")[0])
    return {
        "mean": mean_metrics(tiles),
        "scenes": {scene: mean_metrics(list(group)) for scene, group in by_scene},
        "tiles": {t["name"]: {k: t[k] for k in ("psnr", "ssim", "sam")} for t in tiles},
    }


def run_arm(name: str, study_name: str, budget: str, seed: int, out: Path) -> dict[str, Any]:
    """Train (or resume) and score one arm (``official``, ``baseline`` or a key of :data:`VARIANTS`), cached as JSON."""
    return cached_json(out / f"{name}-seed{seed}.json", lambda: _train_and_score(name, study_name, budget, seed, out))


def _train_and_score(name: str, study_name: str, budget: str, seed: int, out: Path) -> dict[str, Any]:
    study = STUDIES[study_name]
    run = out / "runs" / f"{name}-seed{seed}"
    started = time.perf_counter()
    changes = VARIANTS.get(name, {})
    result: dict[str, Any] = {"study": study_name, "arm": name, "seed": seed, "budget": budget,
                              "backbone": study.backbone, **BUDGETS[budget], "lr": study.lr, "prior_lr": study.prior_lr,
                              **changes}
    if name == "official":
        result.update(steps=0, train_seconds=0.0, test=score(sp.load_model(study.init, backbone=study.backbone),
                                                             study.backbone))
    elif name == "baseline":
        final = train(_config(study, budget, seed, run, stage="baseline"), resume=True)
        result.update(steps=study.steps[budget], final=str(final), test=score(sp.load_model(final), study.backbone))
    else:
        half = max(1, study.steps[budget] // 2)
        config = _config(study, budget, seed, run, steps=half, **changes)
        final = train_all(config, distill_steps=max(1, half // 2), resume=True)
        teacher = sp.load_model(run / "stage1" / "final")
        result.update(
            steps={"stage1": half, "stage2a": max(1, half // 2), "stage2b": half}, final=str(final),
            test=score(sp.load_model(final), study.backbone),
            teacher=score(teacher, study.backbone, teacher=True),
            teacher_end=score(sp.load_model(final), study.backbone, teacher=True),
            distill_l1_end=_last_logged(run / "stage2a", "l1"),
        )
    result.update(train_seconds=train_seconds(run), wall_seconds_this_invocation=time.perf_counter() - started)
    return result


def _last_logged(run: Path, key: str) -> Optional[float]:
    records = [json.loads(line) for line in (run / LOG_FILE).read_text().splitlines()] if (run / LOG_FILE).is_file() else []
    values = [record[key] for record in records if key in record]
    return values[-1] if values else None


def _mean(results: list[dict[str, Any]], part: str, metric: str) -> float:
    return statistics.mean(r[part]["mean"][metric] for r in results)


def _arms(results: list[dict[str, Any]]) -> list[str]:
    return [arm for arm in ("official", "baseline", *VARIANTS) if any(r["arm"] == arm for r in results)]


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per arm (each SDP recipe's teacher as its own row): seed-mean test scores, gains over the baseline."""
    by_arm = {arm: sorted((r for r in results if r["arm"] == arm), key=lambda r: r["seed"]) for arm in _arms(results)}
    baseline = {r["seed"]: r["test"]["mean"]["psnr"] for r in by_arm.get("baseline", [])}
    parts = [(arm, "test") for arm in by_arm]
    parts += [(arm, part) for arm in by_arm if arm in VARIANTS for part in ("teacher", "teacher_end")]
    rows = []
    for arm, part in parts:
        runs = by_arm[arm]
        gains = [r[part]["mean"]["psnr"] - baseline[r["seed"]] for r in runs if r["seed"] in baseline]
        label = {"official": "official weights", "baseline": "no prior"}.get(arm, f"+SDP ({arm})")
        teacher_label = {"teacher": f"{arm}: stage-1 teacher, after stage 1 (sees GT)",
                         "teacher_end": f"{arm}: teacher driving the final model (sees GT)"}
        rows.append({
            "arm": label if part == "test" else teacher_label[part],
            "seeds": "-" if arm == "official" else len(runs),
            "PSNR": _mean(runs, part, "psnr"), "SSIM": _mean(runs, part, "ssim"), "SAM": _mean(runs, part, "sam"),
            "gain per seed (dB)": "-" if arm in ("official", "baseline") else ", ".join(f"{g:+.2f}" for g in gains),
            "train s": statistics.mean(r["train_seconds"] for r in runs),
        })
    return rows


def scene_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per test scene: the seed-mean PSNR of each arm."""
    scenes = next(iter(results))["test"]["scenes"]
    rows = []
    for scene in scenes:
        row: dict[str, Any] = {"scene": scene}
        for arm in _arms(results):
            row[f"{arm} PSNR"] = statistics.mean(r["test"]["scenes"][scene]["psnr"] for r in results if r["arm"] == arm)
        rows.append(row)
    return rows


def _test_entry(test: dict[str, Any]) -> dict[str, str]:
    """A model card's line on the test split: mean and per-scene scores."""
    scenes = "; ".join(f"{name} {m['psnr']:.2f} dB" for name, m in test["scenes"].items())
    return {"test (CAVE balloons, chart_and_stuffed_toy, feathers, oil_painting; 16 quadrants of 256x256, mask_256)":
            f"PSNR {test['mean']['psnr']:.2f} dB, SSIM {test['mean']['ssim']:.3f}, SAM {test['mean']['sam']:.2f} "
            f"deg; per scene: {scenes}"}


def _card(result: dict[str, Any], study: Study) -> dict[str, str]:
    """The model card entries of a shipped arm: data, split, mask, recipe, steps, time and its test table."""
    start = "the official BiSRNet checkpoint (caiyuanhao1998/BiSCI, MIT)" if study.init else "random initialisation"
    recipe = ("stage 1 {stage1}, stage 2a {stage2a}, stage 2b {stage2b} steps".format(**result["steps"])
              if isinstance(result["steps"], dict) else f"{result['steps']} steps without a prior")
    return {
        "training data": "the 12 CAVE train scenes of spectral_prior.data.CAVE_SPLIT (Yasuma et al. 2010; research "
                         f"use), random {result['crop']}x{result['crop']} crops, batch {result['batch']}, the MST "
                         "toolbox's augmentation; resampled to the 28 CASSI bands",
        "coded aperture": "mask_256.mat, the TSA-Net / MST toolbox simulation mask (random crops of it in training); "
                          "saved beside the model as mask.safetensors",
        "recipe": f"from {start}; {recipe}; Adam, backbone lr {result['lr']}"
                  + (f", prior/SPIM lr {result['prior_lr'] or result['lr']}" if result["arm"] != "baseline" else "")
                  + f", {backbone_schedule(study.backbone)} schedule; seed {result['seed']} (fixed in advance, not "
                  "chosen on the test scenes)",
        "training time": f"{result['train_seconds'] / 60:.0f} min of optimisation steps on 1 CPU thread",
        **_test_entry(result["test"]),
        "caveat": f"a 2-core CPU budget ({study.steps[result['budget']]} backbone steps of {result['crop']}x"
                  f"{result['crop']} crops), far from the MST toolbox's GPU training (300k steps of 256x256 crops); "
                  "CAVE only (no KAIST here)"
                  + (", and the official BiSRNet was trained by its authors on all of CAVE, test scenes included"
                     if study.init else "")
                  + ". Good for demos and tests; train your own for real work (docs/training.md)",
        "produced by": f"benchmarks/quality.py --study {result['study']} --budget {result['budget']} --ship "
                       "(spectral-prior repository)",
    }


def _paired_entry(sdp: dict[str, Any], baseline: dict[str, Any]) -> str:
    """A shipped +SDP model's line on its baseline: same seed, data and backbone steps, no prior."""
    gain = sdp["test"]["mean"]["psnr"] - baseline["test"]["mean"]["psnr"]
    return (f"{baseline['arm']}-seed{baseline['seed']} (the {baseline['backbone']}-baseline model, same seed and backbone "
            f"steps, no prior) scores {baseline['test']['mean']['psnr']:.2f} dB on the same quadrants: {gain:+.2f} dB "
            "for the prior; every seed is in docs/benchmarks.md")


def _official_card(result: dict[str, Any], study: Study) -> dict[str, str]:
    """The model card of the untouched official weights: where they come from, their terms and our test scores."""
    return {
        "source": f"{study.init.name} of the official BiSCI release (github.com/caiyuanhao1998/BiSCI), the authors' "
                  "simulation model; the weights unchanged, only stored as safetensors under this library's key names",
        "terms": "MIT License of the BiSCI repository (its text in LICENSE.txt beside this card); keep that notice",
        "training data": "the authors': all of CAVE (test scenes of this library's split included) for the KAIST "
                         "simulation benchmark, 256x256 crops, the TSA-Net mask; so scores on CAVE scenes are not held "
                         "out for this model",
        "coded aperture": "mask_256.mat, the TSA-Net / MST toolbox simulation mask; saved beside the model",
        **_test_entry(result["test"]),
        "produced by": f"benchmarks/quality.py --study {result['study']} --ship (spectral-prior repository)",
    }


def ship(study_name: str, budget: str, out_root: Path, package: Path) -> list[Path]:
    """Write seed 0's finished arms of a study into the package's embedded models.

    ``<backbone>_official`` holds the untouched starting weights (studies that start from them), ``<backbone>_baseline``
    a bare backbone, ``<backbone>_sdp`` the injected model without its stage-1 teacher; each with its mask and a model
    card. Arms whose seed-0 run has not finished are left as they are.
    """
    study = STUDIES[study_name]
    out = out_root / f"{study_name}-{budget}"
    written = []
    for arm in ("official", "baseline", "sdp") if study.init else ("baseline", "sdp"):
        if arm == "official":
            result = run_arm(arm, study_name, budget, 0, out)
            model = sp.load_model(study.init, backbone=study.backbone)
        elif (out / f"{arm}-seed0.json").is_file():
            result = json.loads((out / f"{arm}-seed0.json").read_text())
            model = sp.load_model(result["final"])
        else:
            print(f"not shipped: {arm} (seed 0 has not finished)")
            continue
        target = package / f"{study.backbone}_{arm}"
        shutil.rmtree(target, ignore_errors=True)
        card = _official_card(result, study) if arm == "official" else _card(result, study)
        if arm == "sdp" and (out / "baseline-seed0.json").is_file():
            card["against its paired baseline"] = _paired_entry(result, json.loads((out / "baseline-seed0.json").read_text()))
        mask = dict(mask=sp.cassi.load_mask(MASK), mask_source="mask_256.mat (TSA-Net / MST toolbox simulation mask)")
        if arm == "sdp":
            injector = sp.get_injector(model)
            injector.prior.drop_teacher()
            injector.save_pretrained(target, backbone=model, backbone_name=study.backbone, card=card, **mask)
        else:
            save_backbone(target, model, name=study.backbone, card=card, **mask)
        if arm == "official":
            shutil.copyfile(OFFICIAL_LICENSE, target / "LICENSE.txt")
        written.append(target)
    return written


def main(study_name: str, budget: str, seeds: list[int], out_root: Path, *, variants: list[str] = ("sdp",),
         report_only: bool = False, skip: Sequence[str] = ()) -> None:
    """Train and score every (arm, seed) not in ``skip`` (another process may run those), then tabulate all finished."""
    study = STUDIES[study_name]
    out = out_root / f"{study_name}-{budget}"
    plan = [("official", 0)] if study.init else []
    plan += [(arm, seed) for seed in seeds for arm in ("baseline", *(VARIANTS if report_only else variants))]
    for arm, seed in plan:
        if not report_only and arm not in skip:
            run_arm(arm, study_name, budget, seed, out)
    cached = [out / f"{arm}-seed{seed}.json" for arm, seed in plan]
    results = [json.loads(path.read_text()) for path in cached if path.is_file()]
    if not results:
        print("no finished arms yet")
        return
    summary, scenes = summary_rows(results), scene_rows(results)
    print(f"\n{study_name} ({budget}: {study.steps[budget]} backbone steps, batch {BUDGETS[budget]['batch']}, "
          f"{BUDGETS[budget]['crop']}px crops of the CAVE train scenes; scored on the 16 test quadrants), "
          f"{torch.get_num_threads()} CPU threads\n")
    print(markdown_table(summary))
    print()
    print(markdown_table(scenes))
    payload = {"study": study_name, "budget": budget, "variants": {v: VARIANTS[v] for v in _arms(results)
                                                                    if v in VARIANTS},
               "summary": summary, "scenes": scenes, "runs": results}
    path = write_json(f"quality-{study_name}-{budget}", payload,
                      out_root / f"quality-{study_name}-{budget}.json")
    print(f"written {path}")
