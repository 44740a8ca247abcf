"""Score a model on simulated CASSI measurements of ground-truth scenes: PSNR, SSIM and SAM per scene.

The protocol is the MST toolbox's simulation test (``simulation/test_code/test.py``): each scene is measured
through the 2-D coded aperture cropped top-left to the scene's size, the model reconstructs it in eval mode
under ``torch.no_grad``, and the raw output is scored against the ground truth. As in the toolbox, the output
is not clamped before scoring.

Scene sizes: MST needs a height and width divisible by 4 (BiSRNet and MST++ pad their input themselves). A scene
off that multiple is centre-cropped to the largest multiple that fits, and scored there: a 150x150 CAVE cube is
scored on its central 148x148 pixels (with ``--compare``, every model is scored on the crop that suits them all).
The sizes scored are reported with the metrics. A mask smaller than a scene is an error.

From the command line: ``spectral-prior eval --checkpoint RUN/final --data DIR --mask mask.mat --output OUT``
prints a markdown table and writes ``metrics.csv`` and ``metrics.json`` to ``OUT``; ``--figures DIR`` adds one
comparison PNG per scene and ``--compare`` scores other checkpoints on the same scenes and mask.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import cassi, metrics
from .adapters.mst import MST
from .adapters.registry import backbone_preset
from .commands import (
    add_mask_key_argument,
    add_model_arguments,
    check_output_folder,
    load_model_and_backbone,
    require_trained_weights,
    resolve_device,
)
from .data import CubeFolder, ProceduralCubes, SceneTiles, scene_names
from .errors import InvalidInputError, MaskTooSmallError
from .sdp.inject import get_injector
from .io import atomic_path, save_json
from .models import resolve_model_mask
from .viz import require_matplotlib, save_comparison_figure

__all__ = [
    "evaluate", "iter_evaluate", "size_multiple", "center_crop", "format_table", "mean_metrics",
    "load_model_and_backbone", "resolve_device",
]

METRICS = ("psnr", "ssim", "sam")
"""Errors that mean bad input: the commands print them in one line instead of a traceback."""

Device = Union[str, torch.device]


# --------------------------------------------------------------------------------------------------------------
# the protocol


def size_multiple(model: nn.Module) -> int:
    """The number the scene height and width must be divisible by: ``2 ** stage`` for MST (anywhere in
    ``model``), 1 for networks that pad their input themselves (BiSRNet, MST++)."""
    multiple = 1
    for module in model.modules():
        if isinstance(module, MST):
            multiple = math.lcm(multiple, 2**module.stage)
    return multiple


def center_crop(cube: Tensor, multiple: int) -> Tensor:
    """The centre of ``cube`` [..., H, W] with H and W cut down to multiples of ``multiple``."""
    height, width = cube.shape[-2:]
    new_height, new_width = height - height % multiple, width - width % multiple
    if new_height == 0 or new_width == 0:
        raise InvalidInputError(f"a {height}x{width} scene is smaller than the {multiple}-pixel multiple the model needs")
    top, left = (height - new_height) // 2, (width - new_width) // 2
    return cube[..., top : top + new_height, left : left + new_width]


def _named_scenes(scenes: Sequence[Any]) -> Iterator[Tuple[Tensor, str]]:
    """``(cube [C, H, W], name)`` for each item: ``(cube, name)`` pairs as given, bare cubes named ``scene_<i>``."""
    for index in range(len(scenes)):
        item = scenes[index]
        cube, name = item if isinstance(item, (tuple, list)) else (item, f"scene_{index:03d}")
        cube = torch.as_tensor(cube, dtype=torch.float32)
        if cube.dim() != 3:
            raise InvalidInputError(f"scene {name!r} must be a [C, H, W] cube, got shape {list(cube.shape)}")
        yield cube, str(name)


def _mask_for(mask2d: Tensor, cube: Tensor, name: str) -> Tensor:
    """The top-left corner of the mask, the size of ``cube``."""
    height, width = cube.shape[-2:]
    if mask2d.shape[0] < height or mask2d.shape[1] < width:
        raise MaskTooSmallError(name, (height, width), tuple(mask2d.shape))
    return mask2d[:height, :width]


def _score(reconstruction: Tensor, gt: Tensor) -> Dict[str, float]:
    return {name: float(getattr(metrics, name)(reconstruction, gt)) for name in METRICS}


def _same_size_batches(scenes: Iterator[Tuple[Tensor, str]], batch_size: int) -> Iterator[List[Tuple[Tensor, str]]]:
    """Consecutive scenes grouped by up to ``batch_size``; a scene of another size than the group starts a new one."""
    batch: List[Tuple[Tensor, str]] = []
    for cube, name in scenes:
        if batch and (len(batch) == batch_size or batch[0][0].shape != cube.shape):
            yield batch
            batch = []
        batch.append((cube, name))
    if batch:
        yield batch


def iter_evaluate(
    model: nn.Module,
    scenes: Sequence[Any],
    mask2d: cassi.MaskSource,
    *,
    input_setting: str,
    mask_setting: str,
    device: Optional[Device] = None,
    batch_size: int = 1,
    crop_multiple: Optional[int] = None,
    teacher: bool = False,
) -> Iterator[Dict[str, Any]]:
    """Reconstruct and score the scenes (see the module docstring for the protocol), yielding one dict per scene.

    ``scenes`` is a sequence of [C, H, W] cubes or of ``(cube, name)`` pairs (:class:`~spectral_prior.data.
    CubeFolder`, :class:`~spectral_prior.data.ProceduralCubes`, a list). ``mask2d`` is a 2-D mask (path, array or
    tensor) at least as large as every scene. Scenes whose height or width is not a multiple of ``crop_multiple``
    (default: :func:`size_multiple` of the model, 4 for MST) are centre-cropped to the largest multiple.
    Consecutive scenes of one size go through the model ``batch_size`` at a time. ``device`` defaults to the
    model's; the model is put in eval mode and restored to its mode afterwards.

    Yields ``{'name', 'height', 'width', 'psnr', 'ssim', 'sam', 'ground_truth', 'reconstruction'}`` (the cubes as
    evaluated, [C, H, W] on the CPU; ``height``/``width`` after any crop). With ``teacher`` the prior of an injected
    model comes from its stage-1 teacher, which also sees the ground truth (an upper bound, never a deployable score).
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be positive, got {batch_size}")
    mask2d = cassi.load_mask(mask2d)
    device = torch.device(device) if device is not None else next(model.parameters(), torch.empty(0)).device
    multiple = crop_multiple or size_multiple(model)
    cropped = ((center_crop(cube, multiple), name) for cube, name in _named_scenes(scenes))
    was_training = model.training
    model.eval()
    try:
        for batch in _same_size_batches(cropped, batch_size):
            gt = torch.stack([cube for cube, _ in batch]).to(device)
            mask3d = cassi.mask3d(_mask_for(mask2d, gt, batch[0][1]).to(device), gt.shape[1])
            net_input, mask_input = cassi.simulate(gt, mask3d, input_setting, mask_setting)
            with torch.no_grad(), get_injector(model).teacher(gt) if teacher else nullcontext():
                reconstruction = model(net_input, mask_input)
            for index, (_, name) in enumerate(batch):
                yield {
                    "name": name,
                    "height": gt.shape[-2],
                    "width": gt.shape[-1],
                    **_score(reconstruction[index], gt[index]),
                    "ground_truth": gt[index].cpu(),
                    "reconstruction": reconstruction[index].float().cpu(),
                }
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module,
    scenes: Sequence[Any],
    mask2d: cassi.MaskSource,
    *,
    input_setting: str,
    mask_setting: str,
    device: Optional[Device] = None,
    batch_size: int = 1,
    crop_multiple: Optional[int] = None,
    teacher: bool = False,
    return_cubes: bool = False,
    progress: bool = False,
) -> List[Dict[str, Any]]:
    """Scores of ``model`` on every scene: a list of ``{'name', 'height', 'width', 'psnr', 'ssim', 'sam'}``.

    The arguments are those of :func:`iter_evaluate`; the settings of a registered backbone are
    ``backbone_preset(name).input_setting`` / ``.mask_setting``. With ``return_cubes`` each entry keeps its
    ``'ground_truth'`` and ``'reconstruction'`` cubes; ``progress`` shows a progress bar.
    """
    results = iter_evaluate(
        model, scenes, mask2d, input_setting=input_setting, mask_setting=mask_setting, device=device,
        batch_size=batch_size, crop_multiple=crop_multiple, teacher=teacher,
    )
    kept = []
    for result in tqdm(results, total=len(scenes), desc="eval", unit="scene", disable=not progress):
        if not return_cubes:
            del result["ground_truth"], result["reconstruction"]
        kept.append(result)
    return kept


def mean_metrics(results: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """The mean of each metric over the scenes."""
    return {name: sum(r[name] for r in results) / len(results) for name in METRICS}


def format_table(results: Sequence[Dict[str, Any]]) -> str:
    """A markdown table: one row per scene (PSNR in dB, SSIM, SAM in degrees) and a mean row."""
    lines = ["| scene | PSNR (dB) | SSIM | SAM (deg) |", "|---|---:|---:|---:|"]
    rows = [(r["name"], r) for r in results] + [("**mean**", mean_metrics(results))]
    for name, values in rows:
        lines.append(f"| {name} | {values['psnr']:.2f} | {values['ssim']:.4f} | {values['sam']:.2f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# the command


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
    mask2d = resolve_model_mask(args.checkpoint, given)
    for other in args.compare:
        resolve_model_mask(other, mask2d)
    return mask2d


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


def _write_csv(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    """Per-scene rows (``model``, ``scene``, size and metrics), atomically."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["model", "scene", "height", "width", *METRICS])
    for row in rows:
        writer.writerow([row["model"], row["name"], row["height"], row["width"], *(repr(row[m]) for m in METRICS)])
    with atomic_path(path) as temporary:
        temporary.write_text(text.getvalue())


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
    _write_csv(output / "metrics.csv", rows)
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
