"""Score a model on simulated CASSI measurements of ground-truth scenes: PSNR, SSIM and SAM per scene.

``spectral-prior eval --checkpoint RUN/final --data DIR --mask mask.mat --output OUT`` prints a markdown table and
writes ``metrics.csv`` and ``metrics.json`` to ``OUT``; ``--figures DIR`` adds one comparison PNG per scene and
``--compare`` scores other checkpoints on the same scenes and mask. The protocol is the MST toolbox's simulation test
(:mod:`spectral_prior.evaluation.protocol`).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import cassi
from ..adapters.registry import backbone_preset
from ..data import CubeFolder, ProceduralCubes, SceneTiles, scene_names
from ..devices import resolve_device
from ..errors import InvalidInputError, MaskTooSmallError
from ..evaluation import METRICS, format_table, iter_evaluate, mean_metrics, size_multiple, write_csv
from ..io import save_json
from ..models import load_model_and_backbone, mask_for_models
from ..viz import require_matplotlib, save_comparison_figure
from .common import add_mask_key_argument, add_model_arguments, check_output_folder, require_trained_weights


@dataclass
class _Candidate:
    """A model to score, with what the reports say about it."""

    label: str
    checkpoint: Optional[str]
    backbone: str
    model: nn.Module

    @property
    def heading(self) -> str:
        return self.label if self.checkpoint is None else f"{self.label} ({self.backbone})"

    def evaluate(self, scenes: Sequence[Any], mask2d: Tensor, **options: Any) -> Iterator[Dict[str, Any]]:
        preset = backbone_preset(self.backbone)
        return iter_evaluate(
            self.model, scenes, mask2d, input_setting=preset.input_setting, mask_setting=preset.mask_setting,
            **options,
        )


def _candidate(checkpoint: Optional[str], backbone: Optional[str], device: torch.device) -> _Candidate:
    model, name = load_model_and_backbone(checkpoint, backbone)
    label = checkpoint if checkpoint is not None else f"untrained {name}"
    return _Candidate(label=label, checkpoint=checkpoint, backbone=name, model=model.to(device))


def _scenes(args: argparse.Namespace) -> Sequence[Any]:
    """``--data`` (its ``--data-scenes``), in ``--tiles`` square tiles when asked."""
    if args.data == "procedural":
        scenes = ProceduralCubes(args.scenes, size=args.size, seed=args.seed)
    else:
        scenes = CubeFolder(args.data, scenes=scene_names(args.data_scenes))
    return scenes if args.tiles is None else SceneTiles(scenes, args.tiles)


def _check_candidates(args: argparse.Namespace) -> None:
    """Each model is scored once: a --compare that repeats one would print the same table twice."""
    named = [args.checkpoint, *args.compare]
    repeated = sorted({name for name in named if name is not None and named.count(name) > 1})
    if repeated:
        raise InvalidInputError(f"--checkpoint and --compare name {', '.join(repeated)} more than once: name each "
                                "model once")


def _mask(args: argparse.Namespace) -> Tensor:
    """``--mask`` (a file or 'random'), or the mask saved with ``--checkpoint``; warns for a model trained with another."""
    given = None
    if args.mask == "random":
        given = cassi.random_mask(args.mask_size, seed=args.seed)
    elif args.mask is not None:
        given = cassi.load_mask(args.mask, key=args.mask_key)
    return mask_for_models([args.checkpoint, *args.compare], given)


def _describe_inputs(args: argparse.Namespace) -> Dict[str, str]:
    """What ``metrics.json`` says of the scenes and the mask."""
    data = args.data
    if data == "procedural":
        data = f"procedural: {args.scenes} scenes of {args.size}x{args.size}, seed {args.seed}"
    elif args.data_scenes:
        data = f"{data} (scenes {args.data_scenes})"
    if args.tiles is not None:
        data = f"{data}, in {args.tiles}x{args.tiles} tiles"
    mask = args.mask or f"the mask saved with {args.checkpoint}"
    if mask == "random":
        mask = f"random binary: {args.mask_size}x{args.mask_size}, seed {args.seed}"
    return {"data": data, "mask": mask}


def _report(candidate: _Candidate, results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    return {
        "checkpoint": candidate.checkpoint,
        "backbone": candidate.backbone,
        "scenes": [{key: r[key] for key in ("name", "height", "width", *METRICS)} for r in results],
        "mean": mean_metrics(results),
    }


def _figure_label(candidate: _Candidate, result: Dict[str, Any]) -> str:
    return f"{candidate.label}\n{result['psnr']:.2f} dB, SSIM {result['ssim']:.3f}"


def _save_figure(folder: Path, candidates: Sequence[_Candidate], results: Sequence[Dict[str, Any]]) -> None:
    first = results[0]
    reconstructions = {_figure_label(c, r): r["reconstruction"] for c, r in zip(candidates, results)}
    save_comparison_figure(folder / f"{first['name']}.png", first["ground_truth"], reconstructions, title=first["name"])


def evaluate_command(args: argparse.Namespace) -> Dict[str, Any]:
    """Run ``spectral-prior eval``; returns the report written to ``metrics.json``."""
    require_trained_weights(args)
    _check_candidates(args)
    device = resolve_device(args.device)
    output = check_output_folder(args.output)
    figures = Path(args.figures) if args.figures else None
    if figures is not None:
        require_matplotlib()
    scenes = _scenes(args)
    mask2d = _mask(args)
    candidates = [_candidate(args.checkpoint, args.backbone, device)]
    candidates += [_candidate(other, None, device) for other in args.compare]
    crop_multiple = math.lcm(*(size_multiple(c.model) for c in candidates))

    per_model: List[List[Dict[str, Any]]] = [[] for _ in candidates]
    options = {"batch_size": args.batch_size, "crop_multiple": crop_multiple}
    streams = zip(*(c.evaluate(scenes, mask2d, **options) for c in candidates))
    try:
        for scene_results in tqdm(streams, total=len(scenes), desc="eval", unit="scene", disable=args.quiet):
            if figures is not None:
                _save_figure(figures, candidates, scene_results)
            for kept, result in zip(per_model, scene_results):
                kept.append({key: value for key, value in result.items() if not isinstance(value, Tensor)})
    except MaskTooSmallError as err:
        size = min(err.mask_shape)
        raise InvalidInputError(f"{err.what}: pass --tiles {size} to score it in {size}x{size} tiles (the CAVE "
                                "test protocol: each scene's four 256x256 quadrants)") from err

    rows = [{"model": c.label, **r} for c, results in zip(candidates, per_model) for r in results]
    write_csv(output / "metrics.csv", rows)
    report = {**_report(candidates[0], per_model[0]), **_describe_inputs(args), "device": str(device)}
    if args.compare:
        report["compare"] = [_report(c, results) for c, results in zip(candidates[1:], per_model[1:])]
    save_json(report, output / "metrics.json")
    for candidate, results in zip(candidates, per_model):
        print(f"## {candidate.heading}\n\n{format_table(results)}\n")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``spectral-prior eval`` options."""
    add_model_arguments(parser)
    parser.add_argument("--data", required=True, help="a folder of cubes (.mat, .npy, .safetensors, band-PNG "
                        "folders; resampled to the 28 CASSI bands), or 'procedural'")
    parser.add_argument("--data-scenes", help="the scenes of --data to score: cave-train / cave-test (the fixed CAVE "
                        "split), comma-separated names, or a file of names (default: every scene)")
    parser.add_argument("--tiles", type=int, help="score each scene in its non-overlapping N x N tiles, row by row "
                        "(--tiles 256 on 512x512 CAVE scenes: the four quadrants of the test protocol)")
    parser.add_argument("--scenes", type=int, default=4, help="procedural scenes (default 4)")
    parser.add_argument("--size", type=int, default=256, help="procedural scene size in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the procedural scenes and random mask")
    parser.add_argument("--mask", help="the 2-D coded aperture (.mat, .npy or .safetensors, at least the scenes' "
                        "size; cropped top-left), or 'random' for a seeded random binary mask; default: the mask "
                        "saved with --checkpoint")
    add_mask_key_argument(parser)
    parser.add_argument("--mask-size", type=int, default=256, help="size of a random mask (default 256)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="CHECKPOINT",
                        help="other saved directories or Hub ids to score on the same scenes and mask")
    parser.add_argument("--output", required=True, help="folder for metrics.csv and metrics.json")
    parser.add_argument("--figures", help="folder for one comparison PNG per scene (needs matplotlib)")
    parser.add_argument("--batch-size", type=int, default=1, help="scenes of one size reconstructed together")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``spectral-prior eval``."""
    evaluate_command(args)
    return 0
