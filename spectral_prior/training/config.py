"""The settings of a training run (:class:`TrainConfig`), the run folder's file names, and reading settings saved by
an older release."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from ..adapters.registry import list_backbones
from ..errors import InvalidInputError
from ..io import load_json, save_json
from ..sdp.config import PriorConfig

STAGES = ("baseline", "stage1", "stage2a", "stage2b")


PRECISIONS = ("auto", "bf16", "fp32")


RUN_CONFIG_FILE = "train_config.json"


LOG_FILE = "log.jsonl"


FINAL_DIR = "final"


VALIDATION_SEED_OFFSET = 1_000_003  # validation scenes never coincide with training scenes of the same seed


MAY_CHANGE_ON_RESUME = {"device", "checkpoint_every", "val_every", "compile"}


@dataclass
class TrainConfig:
    """One training run. Every field is a ``spectral-prior train`` option of the same name (``_`` -> ``-``).

    Attributes:
        backbone: a name of :func:`spectral_prior.adapters.create_backbone` (``mst_s``, ``bisrnet``, ...).
        stage: ``baseline``, ``stage1``, ``stage2a`` or ``stage2b`` (``all`` is run by :func:`train_all`).
        output: the run's folder.
        data: a folder of cubes (see :class:`spectral_prior.data.CubeFolder`) or ``procedural``.
        data_scenes: the scenes of ``data`` to train on: ``cave-train`` (the training split of
            :data:`spectral_prior.data.CAVE_SPLIT`), comma-separated names, or a text file with one name per line
            (default: every scene of the folder).
        mask: the 2-D coded aperture (``.mat``/``.npy``/``.safetensors``) or ``random`` (a seeded random binary mask).
        mask_key: the mask's variable in a ``.mat`` file not named as a mask (see :data:`spectral_prior.cassi.MASK_KEYS`).
        init: where the weights start: the previous stage's ``final/`` (required by stage 2), or, for baseline and
            stage 1, optionally a backbone's weights (a baseline ``final/``, ``.safetensors`` or toolbox ``.pth``).
        steps: optimisation steps of this stage.
        batch: global batch size (split across processes under torchrun).
        crop: training crop size (pixels, even).
        lr: Adam learning rate (the toolbox's 4e-4).
        prior_lr: learning rate of the parameters the injection adds (prior and SPIMs); default ``lr``. A fine-tuned
            backbone wants a small ``lr`` while its new prior learns from scratch.
        freeze_binary: keep the latent weights of a binarised backbone's convolutions (BiSRNet's) fixed, so that
            their signs stay exactly as they are; its full-precision parameters still train at ``lr``. The baseline
            arm takes the same option, so both arms train the same parts.
        binary_lr: learning rate of those latent binary weights instead (default ``lr``): after a frozen phase, a
            rate small enough to flip few signs (1e-6 to 1e-5 for BiSRNet) while the full-precision parameters keep
            ``lr``. Not with ``freeze_binary``.
        schedule: ``auto`` (the toolbox's: multistep for MST, cosine for BiSRNet and MST++), ``multistep``, ``cosine`` or
            ``constant``.
        warmup: steps of linear warm-up from ``lr / warmup`` before the schedule (Adam's first steps are full-size:
            a fine-tuned network loses most where they are not damped).
        ema: decay of an exponential moving average of the weights, used for validation and the final model
            (0 turns it off).
        clip_grad: maximum gradient norm (0 turns clipping off).
        distill_weight: weight of the L1 prior loss next to RMSE in stage 2b.
        seed: seeds the initial weights, the batches and the diffusion noise.
        checkpoint_every: steps between checkpoints (one is always written at the end).
        val_every: steps between validations (0: only at the end).
        val_scenes: held-out procedural validation scenes (``crop`` pixels); with a ``data`` folder, the count of
            training scenes whose central ``crop`` x ``crop`` tile validates (never test scenes); or the count of
            ``val_data`` scenes used.
        val_data: a folder of validation cubes instead.
        scenes: procedural training scenes (with ``data=procedural``).
        scene_size: their size in pixels.
        mask_size: the size of a ``random`` mask.
        augment: the toolbox's augmentation (rotations, flips, 4-crop mosaics).
        random_mask_crop: crop the mask at a random place each step instead of the top-left corner.
        layers: the blocks to modulate (default: the backbone's preset).
        position: where stage 1's SPIMs act on those blocks, ``"output"`` or ``"input"`` (default: the preset's, or
            ``"output"`` for a regex).
        prior: :class:`spectral_prior.PriorConfig` fields of a new prior (stage 1).
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1``...
        precision: ``auto`` (bfloat16 autocast on CUDA, float32 on CPU), ``bf16`` (bfloat16 autocast on CPU too:
            1.5x faster MST-S steps on CPUs with AVX512-BF16, see ``benchmarks/precision.py``) or ``fp32``.
        compile: run the training forward through ``torch.compile`` (the first steps pay for the compilation).
    """

    backbone: str = "mst_s"
    stage: str = "stage1"
    output: str = "runs/spectral-prior"
    data: str = "procedural"
    data_scenes: Optional[str] = None
    mask: str = "random"
    mask_key: Optional[str] = None
    init: Optional[str] = None
    steps: int = 1000
    batch: int = 4
    crop: int = 128
    lr: float = 4e-4
    prior_lr: Optional[float] = None
    freeze_binary: bool = False
    binary_lr: Optional[float] = None
    schedule: str = "auto"
    warmup: int = 0
    ema: float = 0.0
    clip_grad: float = 5.0
    distill_weight: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    val_every: int = 200
    val_scenes: int = 4
    val_data: Optional[str] = None
    scenes: int = 64
    scene_size: int = 256
    mask_size: int = 256
    augment: bool = True
    random_mask_crop: bool = False
    layers: Optional[str] = None
    position: Optional[str] = None
    prior: dict = field(default_factory=dict)
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise InvalidInputError(f"unknown stage {self.stage!r}; stages: {', '.join(STAGES)} (or 'all')")
        if self.backbone not in list_backbones():
            raise InvalidInputError(f"unknown backbone {self.backbone!r}; known: {', '.join(list_backbones())}")
        if self.stage in ("stage2a", "stage2b") and not self.init:
            raise InvalidInputError(f"{self.stage} starts from the previous stage's model: pass init= (e.g. RUN/{FINAL_DIR})")
        if self.schedule not in ("auto", "multistep", "cosine", "constant"):
            raise InvalidInputError(f"unknown schedule {self.schedule!r}; use auto, multistep, cosine or constant")
        for name in ("steps", "batch", "crop", "checkpoint_every", "val_scenes", "scenes", "scene_size", "mask_size"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.val_every < 0:
            raise InvalidInputError(f"val_every must be 0 (validate only at the end) or positive, got {self.val_every}")
        if self.freeze_binary and self.binary_lr is not None:
            raise InvalidInputError(f"binary_lr={self.binary_lr} trains the binary weights that freeze_binary keeps "
                                    "fixed: give one or the other")
        for name in ("lr", "prior_lr", "binary_lr"):
            rate = getattr(self, name)
            if rate is not None and not (math.isfinite(rate) and rate > 0):
                raise InvalidInputError(f"{name} must be a positive, finite learning rate, got {rate}")
        if self.position not in (None, "output", "input"):
            raise InvalidInputError(f"unknown position {self.position!r}; use output or input (or leave it to the preset)")
        if self.precision not in PRECISIONS:
            raise InvalidInputError(f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        if not 0 <= self.warmup < self.steps:
            raise InvalidInputError(f"warmup must be in [0, steps) = [0, {self.steps}), got {self.warmup}")
        if not 0 <= self.ema < 1:
            raise InvalidInputError(f"ema is a decay in [0, 1), got {self.ema}")
        unknown = set(self.prior) - {f.name for f in fields(PriorConfig)}
        if unknown:
            raise InvalidInputError(f"unknown prior fields {sorted(unknown)}; PriorConfig has {[f.name for f in fields(PriorConfig)]}")


def upgrade_run_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run saved by an older release in today's fields (``amp`` became ``precision``); fields added
    since then are absent and take their defaults."""
    saved = dict(saved)
    if "amp" in saved:
        saved["precision"] = "auto" if saved.pop("amp") else "fp32"
    return saved


def read_run_settings(folder: str | os.PathLike) -> Optional[dict[str, Any]]:
    """The settings saved in a run folder's ``train_config.json``, in today's fields (:func:`upgrade_run_settings`),
    or None when the folder holds no run."""
    path = Path(folder) / RUN_CONFIG_FILE
    return upgrade_run_settings(load_json(path)) if path.is_file() else None


def write_run_settings(folder: str | os.PathLike, config: TrainConfig) -> None:
    """Record ``config`` as the run folder's ``train_config.json`` (atomically)."""
    save_json(asdict(config), Path(folder) / RUN_CONFIG_FILE)
