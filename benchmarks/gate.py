"""The teacher's ceiling, before any distillation: can a prior that sees the ground truth help this injection at all?

    python benchmarks/gate.py --backbone mst_s --preset mst --steps 400 --seeds 0 1 2 --out ~/sdp-studies
    python benchmarks/gate.py ... --report-only          # the table of the arms finished so far

For each seed, with the same batches, the same initial backbone weights and the same schedule (paired seeds), on
random crops of the 12 CAVE train scenes through ``mask_256.mat`` (stage 1 of ``spectral_prior.training``):

* ``baseline``: the bare backbone;
* ``teacher``: stage 1 with the Spectral Diffusion Prior, whose teacher HFE sees the ground truth;
* ``control-a``: stage 1 with a :class:`~spectral_prior.sdp.prior.ConstantPrior`: the same SPIMs fed one learned vector,
  no image information. The vector starts at the scale of the seed's untrained teacher's vectors (a larger one would
  move the zero-initialised SPIMs faster than the teacher's at the same learning rate);
* ``baseline-fp32``: the baseline in float32, where the others train under ``--precision`` (bf16 by default): the
  accuracy check of bfloat16 autocast at equal seeds;
* ``student``: the protocol's second step, run on the finished ``teacher`` arm: ``--distill-steps`` of stage 2a (the
  measurement-only student HFE and the diffusion learn the teacher's vector; the backbone is not run), at
  ``--distill-lr`` and ``--distill-batch`` where given (``--distill-plain``: without augmentation), scored through the
  student. Its backbone has had the same steps as control (a)'s, so the two compare at equal backbone budget; it must
  keep at least half of the teacher's gain over control (a).

The ``teacher`` run is scored three ways: through its teacher (``teacher``), with each crop modulated by the teacher's
vector of another crop (``control-b``), and through its untrained student (``teacher-trained backbone, untrained
student's vector``: what the backbone trained beside a teacher gives without the teacher's information). The gate
(issue "The prior pays"): the teacher must beat control (a) by at least +0.3 dB on each seed, on validation crops of
the train scenes (the central 256x256 crop of each). Test-split scores (16 quadrants) are
reported beside them and select nothing. Each finished arm is cached as JSON; runs resume from their checkpoints.

``--continue-from`` an earlier gate's folder starts each arm from that arm's final model: for BiSRNet, a phase with the
binary weights frozen, then one at ``--binary-lr``.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

import spectral_prior as sp
from cave_study import CAVE, MASK, test_tiles
from common import cached_json, markdown_table, train_seconds, write_json
from spectral_prior import cassi
from spectral_prior.evaluation import metrics
from spectral_prior.adapters import backbone_preset, create_backbone
from spectral_prior.data import CAVE_SPLIT, CubeFolder, SceneTiles
from spectral_prior.evaluation import evaluate, mean_metrics
from spectral_prior.sdp.prior import ConstantPrior, SpectralDiffusionPrior
from spectral_prior.training import TrainConfig, train

ARMS = ("baseline", "teacher", "control-a", "baseline-fp32", "student")
GATE_DB = 0.3


@functools.cache
def validation_tiles() -> SceneTiles:
    """The central 256x256 crop of each CAVE train scene: what the gate is decided on."""
    return SceneTiles(CubeFolder(CAVE, scenes=CAVE_SPLIT["train"], cache=True), 256, grid=False)


def _config(args: argparse.Namespace, arm: str, seed: int, run: Path, **changes: Any) -> TrainConfig:
    settings = dict(
        backbone=args.backbone, output=str(run), data=str(CAVE), data_scenes="cave-train", mask=str(MASK),
        steps=args.steps, batch=args.batch, crop=args.crop, lr=args.lr, prior_lr=args.prior_lr, warmup=args.warmup,
        random_mask_crop=True, seed=seed, val_scenes=4, val_every=0, checkpoint_every=max(1, args.steps // 8),
        precision="fp32" if arm == "baseline-fp32" else args.precision, layers=args.preset,
        init=args.init, freeze_binary=args.freeze_binary, binary_lr=args.binary_lr, position=args.position,
    )
    return TrainConfig(**{**settings, **changes})


def _simulated(backbone: str, tiles: Any) -> Iterator[tuple[str, Tensor, Tensor, Tensor]]:
    """``(name, gt, net_input, mask_input)`` for each tile, measured through ``MASK`` as ``backbone`` expects."""
    preset = backbone_preset(backbone)
    mask2d = cassi.load_mask(MASK)
    for index in range(len(tiles)):
        cube, name = tiles[index]
        gt = cube[None].float()
        mask3d = cassi.mask3d(mask2d[: gt.shape[-2], : gt.shape[-1]], gt.shape[1])
        yield (name, gt, *cassi.simulate(gt, mask3d, preset.input_setting, preset.mask_setting))


@torch.no_grad()
def untrained_teacher_scale(backbone: str, seed: int) -> float:
    """The root mean square of the vectors of the teacher that stage 1 starts from for ``seed``, over the validation
    crops (train scenes): control (a)'s vector starts at this scale, so that its SPIMs move as fast as the teacher's."""
    torch.manual_seed(seed)
    prior = SpectralDiffusionPrior(sp.PriorConfig())
    vectors = [prior.teacher(net_input, gt) for _, gt, net_input, _ in _simulated(backbone, validation_tiles())]
    return torch.cat(vectors).square().mean().sqrt().item()


def _constant_prior_start(args: argparse.Namespace, seed: int, folder: Path) -> Path:
    """Control (a)'s starting point: the seed's initial backbone (as the other arms draw it, or ``--init``'s weights)
    with SPIMs on the same targets, fed by a learned constant vector at the scale of the untrained teacher's."""
    if not (folder / "config.json").is_file():
        constant = ConstantPrior(sp.PriorConfig().prior_dim, seed=seed, scale=untrained_teacher_scale(args.backbone, seed))
        torch.manual_seed(seed)
        model = sp.load_model(args.init) if args.init else create_backbone(args.backbone)
        preset = backbone_preset(args.backbone)  # the prior's input and a probe, also for a regex --preset
        sp.inject_prior(model, args.preset, prior=constant, condition=preset.condition, position=args.position,
                        example_inputs=preset.example_inputs(torch.device("cpu"), torch.float32))
        sp.get_injector(model).save_pretrained(folder, backbone=model, backbone_name=args.backbone)
    return folder


def _scores(model: torch.nn.Module, backbone: str, tiles: Any, **options: Any) -> dict[str, Any]:
    preset = backbone_preset(backbone)
    results = evaluate(model, tiles, MASK, input_setting=preset.input_setting, mask_setting=preset.mask_setting,
                       **options)
    return {"mean": mean_metrics(results), "tiles": {r["name"]: r["psnr"] for r in results}}


@torch.no_grad()
def score_with_other_vectors(model: torch.nn.Module, backbone: str, tiles: Any) -> dict[str, Any]:
    """Control (b): each crop reconstructed with the teacher's vector of the next crop (another scene)."""
    injector = sp.get_injector(model)
    model.eval()
    measured = [(name, gt, net_input, mask_input, injector.prior.teacher(net_input, gt))
                for name, gt, net_input, mask_input in _simulated(backbone, tiles)]
    psnrs = {}
    for index, (name, gt, net_input, mask_input, _) in enumerate(measured):
        other = measured[(index + 1) % len(measured)][-1]
        with injector.fixed_prior(other):
            psnrs[name] = metrics.psnr(model(net_input, mask_input), gt).item()
    return {"mean": {"psnr": statistics.mean(psnrs.values())}, "tiles": psnrs}


def _student_settings(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The student arm's stage-2a options that were given: the suffix its run folder carries for them (so that other
    settings are another arm) and the TrainConfig fields they change."""
    suffix = ""
    changes: dict[str, Any] = {}
    if args.distill_lr:
        suffix += f"-lr{args.distill_lr:g}"
        changes.update(lr=args.distill_lr, prior_lr=args.distill_lr)
    if args.distill_batch:
        suffix += f"-b{args.distill_batch}"
        changes["batch"] = args.distill_batch
    if args.distill_plain:
        suffix += "-plain"
        changes["augment"] = False
    return suffix, changes


def _arm_name(args: argparse.Namespace, arm: str, seed: int) -> str:
    """An arm's run folder and JSON name; the student's names its stage-2a length and the options given."""
    if arm != "student":
        return f"{arm}-seed{seed}"
    return f"student-{args.distill_steps}{_student_settings(args)[0]}-seed{seed}"


@torch.no_grad()
def vector_fit(model: torch.nn.Module, backbone: str, tiles: Any) -> dict[str, float]:
    """How well the student's vectors reproduce the teacher's over ``tiles``: the L1 that stage 2a minimises, the L1 of
    the teacher's mean vector (a student that ignores the image), the spread of each across crops, and the share of
    the teacher's variance across crops that the student explains (R^2; at most 0 for a constant vector)."""
    prior = sp.get_injector(model).prior
    model.eval()
    pairs = [(prior(net_input), prior.teacher(net_input, gt)) for _, gt, net_input, _ in _simulated(backbone, tiles)]
    student, teacher = (torch.cat(vectors).float() for vectors in zip(*pairs))
    centred = teacher - teacher.mean(0)
    return {
        "l1_student": (student - teacher).abs().mean().item(), "l1_teacher_mean": centred.abs().mean().item(),
        "std_student": student.std(0).mean().item(), "std_teacher": teacher.std(0).mean().item(),
        "r2_student": 1 - ((student - teacher).square().sum() / centred.square().sum()).item(),
    }


def _train_and_score(args: argparse.Namespace, arm: str, seed: int, out: Path) -> dict[str, Any]:
    run = out / "runs" / _arm_name(args, arm, seed)
    started = time.perf_counter()
    stage = {"baseline": "baseline", "baseline-fp32": "baseline", "student": "stage2a"}.get(arm, "stage1")
    steps = args.distill_steps if arm == "student" else args.steps
    if arm == "student":
        init = str(out / "runs" / f"teacher-seed{seed}" / "final")
        if not Path(init).is_dir():
            raise SystemExit(f"the student arm distils the teacher arm's model, and {init} is missing: run --arms teacher "
                             f"student (in that order) for seed {seed}")
    elif args.continue_from:  # each arm goes on from the same arm of an earlier gate
        init = str(args.continue_from / "runs" / f"{arm}-seed{seed}" / "final")
    elif arm == "control-a":
        init = str(_constant_prior_start(args, seed, out / "runs" / f"start-{arm}-seed{seed}"))
    else:
        init = args.init
    changes = _student_settings(args)[1] if arm == "student" else {}
    final = train(_config(args, arm, seed, run, stage=stage, init=init, steps=steps, **changes), resume=True)
    model = sp.load_model(final)
    result: dict[str, Any] = {"arm": arm, "seed": seed, **vars(args)}
    result.pop("out")
    result["continue_from"] = str(args.continue_from) if args.continue_from else None
    injected = hasattr(model, "spectral_prior") and arm != "student"  # the student is scored through itself
    result["val"] = _scores(model, args.backbone, validation_tiles(), teacher=injected)
    result["test"] = _scores(model, args.backbone, test_tiles(), teacher=injected)
    if arm == "student":
        result["val_vector_fit"] = vector_fit(model, args.backbone, validation_tiles())
        result["test_vector_fit"] = vector_fit(model, args.backbone, test_tiles())
    if arm == "teacher":
        result["val_control_b"] = score_with_other_vectors(model, args.backbone, validation_tiles())
        result["val_student_vector"] = _scores(model, args.backbone, validation_tiles())  # the untrained student's z
        result["test_student_vector"] = _scores(model, args.backbone, test_tiles())
    result.update(train_seconds=train_seconds(run), wall_seconds=time.perf_counter() - started)
    return result


def _row(label: str, runs: list[dict[str, Any]], part: str, reference: Callable[[int], float] | None) -> dict[str, Any]:
    values = [r[part]["mean"]["psnr"] for r in runs]
    gains = [r[part]["mean"]["psnr"] - reference(r["seed"]) for r in runs] if reference else []
    return {
        "arm": label, "seeds": len(runs), "val PSNR": statistics.mean(values),
        "per seed": ", ".join(f"{v:.2f}" for v in values),
        "vs control (a), per seed (dB)": ", ".join(f"{g:+.2f}" for g in gains) if gains else "-",
        "train s": statistics.mean(r["train_seconds"] for r in runs),
    }


def summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_arm = {arm: sorted((r for r in results if r["arm"] == arm), key=lambda r: r["seed"]) for arm in ARMS}
    control = {r["seed"]: r["val"]["mean"]["psnr"] for r in by_arm["control-a"]}
    versus = (lambda seed: control[seed]) if control else None
    rows = []
    for label, arm, part in (
        ("baseline (bare)", "baseline", "val"), ("baseline, float32", "baseline-fp32", "val"),
        ("control (a): learned constant vector", "control-a", "val"), ("teacher (sees GT)", "teacher", "val"),
        ("control (b): teacher, another scene's vector", "teacher", "val_control_b"),
        ("teacher-trained backbone, untrained student's vector", "teacher", "val_student_vector"),
        ("student after stage 2a (measurement only)", "student", "val"),
    ):
        runs = [r for r in by_arm[arm] if part in r and (versus is None or r["seed"] in control)]
        if runs:
            rows.append(_row(label, runs, part, versus))
    return rows


def student_kept(results: list[dict[str, Any]]) -> dict[int, float]:
    """Per seed, the student's validation gain over control (a) as a fraction of the teacher's (the protocol asks at
    least 0.5), for the seeds where the teacher gained at all."""
    val = {(r["arm"], r["seed"]): r["val"]["mean"]["psnr"] for r in results}
    kept = {}
    for arm, seed in val:
        if arm == "student" and {("teacher", seed), ("control-a", seed)} <= val.keys():
            teacher_gain = val["teacher", seed] - val["control-a", seed]
            if teacher_gain > 0:
                kept[seed] = (val["student", seed] - val["control-a", seed]) / teacher_gain
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mst_s")
    parser.add_argument("--preset", default="mst", help="the injection to gate (a preset name or a regex)")
    parser.add_argument("--position", choices=("output", "input"), help="where the SPIMs act (default: the preset's)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--prior-lr", type=float, default=None)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--init", help="a saved model every arm starts from (e.g. bisrnet-official); default: fresh")
    parser.add_argument("--freeze-binary", action="store_true", help="train no latent binary weight (BiSRNet)")
    parser.add_argument("--binary-lr", type=float, help="the latent binary weights' own learning rate (BiSRNet)")
    parser.add_argument("--continue-from", type=Path,
                        help="an earlier gate's folder: each arm starts from that arm's final model (e.g. a frozen phase)")
    parser.add_argument("--distill-steps", type=int, default=1500, help="stage-2a steps of the student arm")
    parser.add_argument("--distill-lr", type=float, help="the student arm's stage-2a learning rate (default: the prior's)")
    parser.add_argument("--distill-batch", type=int, help="the student arm's stage-2a batch (default: --batch)")
    parser.add_argument("--distill-plain", action="store_true", help="stage 2a on plain crops, without augmentation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path.home() / "sdp-studies")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name = f"gate-{args.backbone}-{args.preset}" + (f"-{args.position}s" if args.position else "")
    name += f"-{args.steps}x{args.batch}x{args.crop}-{args.precision}"
    if args.init:
        name += f"-from-{Path(args.init).name}" + ("-frozen-binary" if args.freeze_binary else "")
    if args.continue_from:  # the earlier gate's folder name is long: its path is in each result's JSON
        digest = hashlib.sha1(str(args.continue_from.resolve()).encode()).hexdigest()[:8]
        name += f"-continuing-{digest}"
    if args.binary_lr:
        name += f"-binary-lr-{args.binary_lr:g}"
    out = args.out / name.replace("\\", "").replace("/", "_")
    results = []
    for seed in args.seeds:
        for arm in args.arms:
            path = out / f"{_arm_name(args, arm, seed)}.json"
            if args.report_only:
                results += [json.loads(path.read_text())] if path.is_file() else []
            else:
                results.append(cached_json(path, lambda arm=arm, seed=seed: _train_and_score(args, arm, seed, out)))
    if not results:
        print("no finished arms yet")
        return
    rows = summary(results)
    print(f"\n{name}: validation = central 256x256 crop of the 12 CAVE train scenes; gate +{GATE_DB} dB on each seed\n")
    print(markdown_table(rows))
    kept = student_kept(results)
    if kept:
        print("\nthe student keeps " + ", ".join(f"{k:.0%} (seed {s})" for s, k in kept.items())
              + " of the teacher's gain over control (a); the protocol asks at least 50%")
    for r in results:
        if "val_vector_fit" in r:
            fit = r["val_vector_fit"]
            print(f"seed {r['seed']}: the student's vectors explain {fit['r2_student']:.0%} of the teacher's variance across "
                  f"the validation crops (spread {fit['std_student']:.4f} vs {fit['std_teacher']:.4f}; L1 "
                  f"{fit['l1_student']:.4f}, the teacher's mean vector {fit['l1_teacher_mean']:.4f})")
    path = write_json(name, {"summary": rows, "student_kept": kept, "runs": results}, args.out / f"{name}.json")
    print(f"written {path}")


if __name__ == "__main__":
    main()
