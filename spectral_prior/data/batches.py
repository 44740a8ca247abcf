"""Training batches: the MST toolbox's augmentation and an on-the-fly CASSI simulation (:class:`CassiBatches`)."""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .. import cassi
from ..errors import InvalidInputError
from .datasets import named_item

class CassiBatches:
    """Endless training batches with the MST toolbox's augmentation and an on-the-fly CASSI simulation.

    Each step draws ``batch`` ground-truth crops [28, crop, crop] from ``dataset`` (any sequence of [28, H, W]
    tensors or of ``(tensor, name)`` pairs, e.g. :class:`CubeFolder` or :class:`ProceduralCubes`):

    * with ``augment`` (the toolbox's ``shuffle_crop``): the first ``batch // 2`` items are random crops of random
      scenes, each rotated by a random multiple of 90 degrees and randomly flipped vertically and horizontally;
      the other items are 2x2 mosaics of four ``crop // 2`` patches cut from four random scenes;
    * without: plain random crops.

    Crop positions are uniform over every valid position (the toolbox's ``randint(0, h - crop)`` never picks
    the last one and fails on a scene exactly the crop's size); a scene smaller than ``crop`` raises ValueError.

    The 2-D mask is cropped to ``crop`` x ``crop`` (top-left, or a random position per step with
    ``random_mask_crop``), shared by the batch, and :func:`spectral_prior.cassi.simulate` gives
    ``{'input', 'mask', 'gt'}`` for ``input_setting``/``mask_setting`` (MST: ``'H'``/``'Phi'``; BiSRNet:
    ``'H'``/``'Mask'``).

    Determinism and sharding: every random choice of step ``s`` comes from a numpy generator seeded by
    ``(seed, s)`` alone, so :meth:`batch_at` gives the same batch whatever was drawn before, and iterating from
    ``start_step`` resumes a run exactly. ``batch`` is the *global* batch: with ``world_size`` > 1, rank ``r``
    builds items ``r, r + world_size, ...`` of it (``batch`` must be divisible by ``world_size``), so the ranks
    together build exactly the single-process batch and each rank gets its share of crops and mosaics.
    """

    def __init__(
        self,
        dataset: Sequence[Any],
        mask2d: cassi.MaskSource,
        *,
        crop: int = 256,
        batch: int = 4,
        input_setting: str = "H",
        mask_setting: str = "Phi",
        augment: bool = True,
        random_mask_crop: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        device: Union[str, torch.device] = "cpu",
    ) -> None:
        if len(dataset) == 0:
            raise InvalidInputError("the dataset is empty")
        if crop < 2 or (augment and crop % 2):
            raise InvalidInputError(f"crop must be an even size of at least 2 (the mosaics are 2x2), got {crop}")
        if batch < 1 or world_size < 1 or batch % world_size:
            raise InvalidInputError(f"batch ({batch}) must be a positive multiple of world_size ({world_size})")
        if not 0 <= rank < world_size:
            raise InvalidInputError(f"rank must be in [0, {world_size}), got {rank}")
        if input_setting not in cassi.INPUT_SETTINGS or mask_setting not in cassi.MASK_SETTINGS:
            raise InvalidInputError(
                f"unknown settings input={input_setting!r} mask={mask_setting!r}; valid inputs "
                f"{cassi.INPUT_SETTINGS}, masks {cassi.MASK_SETTINGS}"
            )
        self.mask2d = cassi.load_mask(mask2d)
        height, width = self.mask2d.shape
        if height < crop or width < crop:
            raise InvalidInputError(f"the mask ({height}x{width}) is smaller than the crop ({crop}x{crop})")
        self.dataset = dataset
        self.crop, self.batch = crop, batch
        self.input_setting, self.mask_setting = input_setting, mask_setting
        self.augment, self.random_mask_crop = augment, random_mask_crop
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_step = start_step
        self.device = torch.device(device)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        step = self.start_step
        while True:
            yield self.batch_at(step)
            step += 1

    def batch_at(self, step: int) -> Dict[str, Any]:
        """This rank's part of the global batch of ``step``: ``{'input', 'mask', 'gt' [b, 28, crop, crop]}``."""
        rng = np.random.default_rng([self.seed, step])
        plans = self._plan(rng)
        mask_offset = rng.random(2) if self.random_mask_crop else np.zeros(2)
        gt = torch.stack([self._build(plan) for plan in plans[self.rank :: self.world_size]]).to(self.device)
        mask3d = cassi.mask3d(_crop(self.mask2d, mask_offset, self.crop).to(self.device), gt.shape[1])
        net_input, mask_input = cassi.simulate(gt, mask3d, self.input_setting, self.mask_setting)
        return {"input": net_input, "mask": mask_input, "gt": gt}

    def _plan(self, rng: np.random.Generator) -> List[Dict[str, Any]]:
        """Every random choice of one global batch, drawn in a fixed order (crop offsets as fractions in [0, 1))."""
        scenes = len(self.dataset)
        plain = self.batch // 2 if self.augment else self.batch
        plans: List[Dict[str, Any]] = []
        for _ in range(plain):
            plans.append({
                "scene": int(rng.integers(scenes)),
                "offset": rng.random(2),
                "rot": int(rng.integers(4)) if self.augment else 0,
                "flips": rng.integers(2, size=2) if self.augment else np.zeros(2, dtype=np.int64),
            })
        for _ in range(self.batch - plain):
            plans.append({"mosaic": rng.integers(scenes, size=4), "offsets": rng.random((4, 2))})
        return plans

    def _build(self, plan: Dict[str, Any]) -> Tensor:
        if "mosaic" in plan:
            half = self.crop // 2
            tiles = [self._crop_scene(int(s), o, half) for s, o in zip(plan["mosaic"], plan["offsets"])]
            return torch.cat([torch.cat(tiles[:2], dim=2), torch.cat(tiles[2:], dim=2)], dim=1)
        patch = self._crop_scene(plan["scene"], plan["offset"], self.crop)
        patch = torch.rot90(patch, plan["rot"], dims=(1, 2))
        if plan["flips"][0]:
            patch = patch.flip(2)  # the toolbox's "vertical" flip: mirrors the columns
        if plan["flips"][1]:
            patch = patch.flip(1)  # the toolbox's "horizontal" flip: mirrors the rows
        return patch

    def _crop_scene(self, index: int, offset: np.ndarray, size: int) -> Tensor:
        scene, name = named_item(self.dataset, index)
        if scene.shape[1] < self.crop or scene.shape[2] < self.crop:
            raise InvalidInputError(
                f"scene {name!r} ({scene.shape[1]}x{scene.shape[2]}) is smaller than the crop ({self.crop}x{self.crop}): "
                "use a smaller crop or leave the scene out"
            )
        return _crop(scene, offset, size)


def _crop(image: Tensor, offset: np.ndarray, size: int) -> Tensor:
    """The ``size`` x ``size`` window of ``image`` [..., H, W] at fractional position ``offset`` (each in [0, 1))."""
    height, width = image.shape[-2:]
    top = int(offset[0] * (height - size + 1))
    left = int(offset[1] * (width - size + 1))
    return image[..., top : top + size, left : left + size]
