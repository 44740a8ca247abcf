"""Score a model on simulated CASSI measurements of ground-truth scenes: PSNR, SSIM and SAM per scene.

The protocol is the MST toolbox's simulation test (``simulation/test_code/test.py``): each scene is measured
through the 2-D coded aperture cropped top-left to the scene's size, the model reconstructs it in eval mode
under ``torch.no_grad``, and the raw output is scored against the ground truth. As in the toolbox, the output
is not clamped before scoring.

Scene sizes: MST needs a height and width divisible by 4 (BiSRNet and MST++ pad their input themselves). A scene
off that multiple is centre-cropped to the largest multiple that fits, and scored there: a 150x150 CAVE cube is
scored on its central 148x148 pixels (with ``--compare``, every model is scored on the crop that suits them all).
The sizes scored are reported with the metrics. A mask smaller than a scene is an error.

The ``spectral-prior eval`` command (:mod:`spectral_prior.cli.eval`) runs this protocol; :mod:`.report` writes
its tables.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import cassi
from ..data.datasets import named_item
from ..errors import InvalidInputError, MaskTooSmallError
from ..sdp.inject import get_injector
from . import metrics

METRICS = ("psnr", "ssim", "sam")
"""Errors that mean bad input: the commands print them in one line instead of a traceback."""


Device = Union[str, torch.device]


def size_multiple(model: nn.Module) -> int:
    """The number the scene height and width must be divisible by: the least common multiple of the
    ``input_multiple`` of ``model``'s modules (``2 ** stage`` for MST), 1 for networks that pad their input themselves
    (BiSRNet, MST++)."""
    multiple = 1
    for module in model.modules():
        multiple = math.lcm(multiple, getattr(module, "input_multiple", 1))
    return multiple


def center_crop(cube: Tensor, multiple: int) -> Tensor:
    """The centre of ``cube`` [..., H, W] with H and W cut down to multiples of ``multiple``."""
    height, width = cube.shape[-2:]
    new_height, new_width = height - height % multiple, width - width % multiple
    if new_height == 0 or new_width == 0:
        raise InvalidInputError(f"a {height}x{width} scene is smaller than the {multiple}-pixel multiple the model needs")
    top, left = (height - new_height) // 2, (width - new_width) // 2
    return cube[..., top : top + new_height, left : left + new_width]


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
    cropped = ((center_crop(cube, multiple), name) for cube, name in (named_item(scenes, index) for index in range(len(scenes))))
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
    return_cubes: bool = False,
    progress: bool = False,
    **options: Any,
) -> List[Dict[str, Any]]:
    """Scores of ``model`` on every scene: a list of ``{'name', 'height', 'width', 'psnr', 'ssim', 'sam'}``.

    ``options`` are those of :func:`iter_evaluate` (``input_setting`` and ``mask_setting`` are needed: for a
    registered backbone ``backbone_preset(name).input_setting`` / ``.mask_setting``). With ``return_cubes`` each
    entry keeps its ``'ground_truth'`` and ``'reconstruction'`` cubes; ``progress`` shows a progress bar.
    """
    kept = []
    results = iter_evaluate(model, scenes, mask2d, **options)
    for result in tqdm(results, total=len(scenes), desc="eval", unit="scene", disable=not progress):
        if not return_cubes:
            del result["ground_truth"], result["reconstruction"]
        kept.append(result)
    return kept
