"""Train a backbone, or a Spectral Diffusion Prior for it, in stages; resumable, on one process or under torchrun.

Stages (arXiv 2507.13769, DiffIR-style):

* ``baseline``: the backbone alone on the reconstruction loss (RMSE, as the MST toolbox), to compare at equal budget;
* ``stage1``: backbone + SPIMs + the teacher HFE, which also sees the ground truth, on RMSE;
* ``stage2a``: the student HFE + diffusion learn to reproduce the teacher's prior vector (L1), all else frozen;
* ``stage2b``: the whole network (teacher excepted) on RMSE + that L1, the student's prior driving the blocks;
* ``all``: stage1, stage2a and stage2b one after the other, in sub-folders of the output, ending in ``OUTPUT/final``.

Every run writes to its output folder ``train_config.json``, ``log.jsonl`` (losses, learning rate, throughput and
validation PSNR), atomic checkpoints ``checkpoints/step-NNNNNNN/`` (weights as safetensors; optimizer, scheduler,
EMA and RNG states) named by ``checkpoints/latest.json``, and at the end ``final/``: the trained model in the
format :func:`spectral_prior.load_model` and ``inject_prior(..., prior=DIR)`` read and ``push_to_hub`` publishes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import cassi
from .adapters.bisrnet import latent_binary_weights
from .adapters.registry import (
    backbone_preset,
    backbone_schedule,
    create_backbone,
    list_backbones,
)
from .commands import resolve_device
from .data import CAVE_SPLIT, CassiBatches, CubeFolder, ProceduralCubes, SceneTiles, scene_names
from .errors import InvalidInputError, UntrainedPriorWarning
from .evaluate import evaluate, mean_metrics
from .sdp.inject import get_injector, inject_prior
from .sdp.injector import INJECTOR_NAME
from .io import (
    atomic_path,
    load_json,
    load_state_dict_strict,
    load_tensors,
    save_json,
    save_tensors,
)
from .models import load_model, save_backbone
from .saving.format import TRAINING_STAGE_KEY
from .sdp.config import PriorConfig
from .sdp.prior import SpectralDiffusionPrior

STAGES = ("baseline", "stage1", "stage2a", "stage2b")
PRECISIONS = ("auto", "bf16", "fp32")
RUN_CONFIG_FILE = "train_config.json"
LOG_FILE = "log.jsonl"
FINAL_DIR = "final"
VALIDATION_SEED_OFFSET = 1_000_003  # validation scenes never coincide with training scenes of the same seed
_MAY_CHANGE_ON_RESUME = {"device", "checkpoint_every", "val_every", "compile"}


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
        for name in ("lr", "prior_lr"):
            rate = getattr(self, name)
            if rate is not None and not (math.isfinite(rate) and rate > 0):
                raise InvalidInputError(f"{name} must be a positive, finite learning rate, got {rate}")
        if self.precision not in PRECISIONS:
            raise InvalidInputError(f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        if not 0 <= self.warmup < self.steps:
            raise InvalidInputError(f"warmup must be in [0, steps) = [0, {self.steps}), got {self.warmup}")
        if not 0 <= self.ema < 1:
            raise InvalidInputError(f"ema is a decay in [0, 1), got {self.ema}")
        unknown = set(self.prior) - {f.name for f in fields(PriorConfig)}
        if unknown:
            raise InvalidInputError(f"unknown prior fields {sorted(unknown)}; PriorConfig has {[f.name for f in fields(PriorConfig)]}")


# -- processes ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processes:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> "Processes":
        if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
            return cls()
        return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def _pick_device(name: str, processes: Processes) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", processes.local_rank)
    return device


@contextmanager
def _process_group(processes: Processes, device: torch.device) -> Iterator[None]:
    """Initialise torch.distributed for a torchrun job (gloo on CPU, nccl on CUDA); nothing for one process."""
    if processes.world_size == 1 or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


# -- building blocks ---------------------------------------------------------------------------------------------


def _training_scenes(config: TrainConfig) -> Any:
    """The training set; a folder holding CAVE's test scenes is trained on only when ``data_scenes`` names its scenes."""
    if config.data == "procedural":
        return ProceduralCubes(config.scenes, size=config.scene_size, seed=config.seed)
    folder = CubeFolder(config.data, scenes=scene_names(config.data_scenes), cache=True, cache_dtype=torch.float16)
    test_scenes = sorted(set(folder.names) & set(CAVE_SPLIT["test"]))
    if config.data_scenes is None and test_scenes:
        raise InvalidInputError(
            f"{config.data} holds CAVE's test scenes {test_scenes}, which models are scored on: train on the "
            "training split with data_scenes='cave-train', or name the scenes to train on (test scenes included, "
            "if that is meant)"
        )
    return folder


def _validation_scenes(config: TrainConfig, training: Any) -> Any:
    """Held-out procedural scenes, ``val_data``'s cubes, or central tiles of training scenes spread over the set."""
    if config.val_data:
        folder = CubeFolder(config.val_data, cache=True)
        return [folder[i] for i in range(min(config.val_scenes, len(folder)))]
    if config.data == "procedural":
        return ProceduralCubes(config.val_scenes, size=config.crop, seed=config.seed + VALIDATION_SEED_OFFSET)
    count = min(config.val_scenes, len(training))
    picked = [training[round(i * len(training) / count)] for i in range(count)]
    return SceneTiles(picked, config.crop, grid=False)


def _mask(config: TrainConfig) -> Tensor:
    if config.mask == "random":
        return cassi.random_mask(config.mask_size, seed=config.seed)
    return cassi.load_mask(config.mask, key=config.mask_key)


def _build_model(config: TrainConfig) -> nn.Module:
    torch.manual_seed(config.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedPriorWarning)  # stage 2 trains that prior: the warning is not for it
        model = load_model(config.init, backbone=config.backbone) if config.init else create_backbone(config.backbone)
    injected = hasattr(model, INJECTOR_NAME)
    if config.stage == "baseline" and injected:
        raise InvalidInputError(f"baseline trains a bare backbone, but init={config.init} holds an injected model")
    if config.stage == "stage1" and not injected:
        preset = backbone_preset(config.backbone)
        prior = SpectralDiffusionPrior(PriorConfig(**config.prior))
        example = preset.example_inputs(torch.device("cpu"), torch.float32)  # probes the blocks --layers picks
        inject_prior(model, config.layers or preset.name, prior=prior, condition=preset.condition, example_inputs=example)
    if config.stage in ("stage2a", "stage2b"):
        if not injected or not isinstance(get_injector(model).prior, SpectralDiffusionPrior):
            raise InvalidInputError(f"{config.stage} continues a stage-1 run, but init={config.init} holds no trained prior")
    return model.train()


def _trainable(model: nn.Module, stage: str, *, freeze_binary: bool = False) -> list[nn.Parameter]:
    """Freeze what ``stage`` does not train (and with ``freeze_binary`` the latent binary weights); return the
    parameters it does train, in the model's order."""
    if stage == "baseline":
        chosen = {id(p) for p in model.parameters()}
    else:
        prior = get_injector(model).prior
        student = {id(p) for p in prior.student_parameters()}
        teacher = {id(p) for p in prior.teacher_parameters()}
        everything = {id(p) for p in model.parameters()}
        chosen = {
            "stage1": everything - student,  # backbone, SPIMs and the teacher
            "stage2a": student,  # the prior alone learns to reproduce the teacher
            "stage2b": everything - teacher,  # all but the teacher
        }[stage]
    if freeze_binary:
        latent = latent_binary_weights(model)
        if not latent:
            raise InvalidInputError(f"freeze_binary: {type(model).__name__} has no binarised convolutions to freeze")
        chosen -= {id(p) for p in latent}
    trainable = []
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in chosen)
        if parameter.requires_grad:
            trainable.append(parameter)
    return trainable


def _parameter_groups(trainable: list[nn.Parameter], model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Adam's groups: the backbone at ``lr``, what the injection added at ``prior_lr`` (when given)."""
    if config.prior_lr is None or not hasattr(model, INJECTOR_NAME):
        return [{"params": trainable, "lr": config.lr}]
    added = {id(p) for p in get_injector(model).parameters()}
    groups = [
        {"params": [p for p in trainable if id(p) not in added], "lr": config.lr},
        {"params": [p for p in trainable if id(p) in added], "lr": config.prior_lr},
    ]
    return [group for group in groups if group["params"]]


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule of ``config`` over the steps after its ``warmup``, which ramps the rate linearly up to it."""
    kind = config.schedule
    if kind == "auto":
        kind = backbone_schedule(config.backbone)
    steps = config.steps - config.warmup
    if kind == "multistep":  # the toolbox's milestones 50, 100, ..., 250 of 300 epochs, halving the rate
        milestones = sorted({max(1, round(steps * k / 6)) for k in range(1, 6)})
        main = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.5)
    elif kind == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=1e-6)
    else:
        main = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if not config.warmup:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / config.warmup, total_iters=config.warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[config.warmup])


class EMA:
    """An exponential moving average of named parameters, swapped into the model for validation and saving."""

    def __init__(self, named: dict[str, nn.Parameter], decay: float) -> None:
        self.decay = decay
        self.parameters = named
        self.shadow = {name: p.detach().clone() for name, p in named.items()}

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(list(self.shadow.values()), [p.detach() for p in self.parameters.values()], 1 - self.decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Inside, the parameters hold the averages; the training values come back on exit."""
        saved = {name: p.detach().clone() for name, p in self.parameters.items()}
        with torch.no_grad():
            for name, p in self.parameters.items():
                p.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.parameters.items():
                    p.copy_(saved[name])


def _global_noise(seed: int, step: int, batch: int, dim: int, processes: Processes, device: torch.device) -> Tensor:
    """This rank's rows of the step's diffusion noise; the global draw depends on (seed, step) alone."""
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, 7]).generate_state(1)[0]))
    return torch.randn(batch, dim, generator=generator)[processes.rank :: processes.world_size].to(device)


def _rmse(output: Tensor, gt: Tensor, processes: Processes) -> tuple[Tensor, float]:
    """(loss to back-propagate, RMSE over the global batch).

    RMSE is not a mean over samples, so under DDP, whose gradients are averaged over ranks, each rank back-propagates
    its MSE divided by 2 x the global RMSE: the averaged gradient is then exactly the global RMSE's gradient.
    """
    mse = F.mse_loss(output.float(), gt.float())
    if processes.world_size == 1:
        rmse = mse.sqrt()
        return rmse, rmse.item()
    global_mse = mse.detach().clone()
    dist.all_reduce(global_mse)
    global_rmse = (global_mse / processes.world_size).sqrt()
    return mse / (2 * global_rmse), global_rmse.item()


def _mean_over_ranks(value: Tensor, processes: Processes) -> float:
    if processes.world_size == 1:
        return value.item()
    value = value.detach().clone()
    dist.all_reduce(value)
    return value.item() / processes.world_size


class _PriorDistillation(nn.Module):
    """Stage 2a's network: the prior alone, teacher vector -> student vector (the backbone never runs)."""

    def __init__(self, injector: nn.Module) -> None:
        super().__init__()
        self.injector = injector

    def forward(self, args: tuple, gt: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        return self.injector.distill_pair(self.injector.condition(args, {}), gt, noise)


# -- checkpoints -------------------------------------------------------------------------------------------------


def _checkpoint_root(output: Path) -> Path:
    return output / "checkpoints"


def latest_checkpoint(output: str | Path) -> Optional[Path]:
    """The newest complete checkpoint folder of a run, or None."""
    root = _checkpoint_root(Path(output))
    pointer = root / "latest.json"
    if not pointer.is_file():
        return None
    folder = root / load_json(pointer)["folder"]
    if not folder.is_dir():
        raise InvalidInputError(f"{pointer} names {folder.name}, which is missing: the run folder was changed by hand")
    return folder


def _write_checkpoint(output: Path, step: int, weights: dict[str, Tensor], state: dict[str, Any]) -> Path:
    """Write ``checkpoints/step-N/`` into a temporary folder, rename it into place, then point latest.json at it.

    A crash or error at any point leaves the previous checkpoint as the latest one and no partial folder behind.
    """
    root = _checkpoint_root(output)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    temporary = root / f".{name}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        temporary.mkdir()
        save_tensors(weights, temporary / "weights.safetensors", metadata={"format": "pt"})
        with atomic_path(temporary / "state.pt") as path:
            torch.save(state, path)
        shutil.rmtree(root / name, ignore_errors=True)
        os.replace(temporary, root / name)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    previous = latest_checkpoint(output)
    save_json({"folder": name, "step": step}, root / "latest.json")
    if previous is not None and previous.name != name:
        shutil.rmtree(previous, ignore_errors=True)
    return root / name


def _rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextmanager
def _caller_rng_kept() -> Iterator[None]:
    """Inside, training seeds and draws from the global generators; on exit they are the caller's again."""
    states = _rng_states()
    try:
        yield
    finally:
        _restore_rng(states)


# -- the trainer -------------------------------------------------------------------------------------------------


class Trainer:
    """Runs one stage of :class:`TrainConfig`: ``Trainer(config).fit()`` returns the ``final/`` folder.

    With ``resume=True`` it continues from the run folder's latest checkpoint (and starts afresh if there is none);
    without, it refuses a folder that already holds a run.
    """

    def __init__(self, config: TrainConfig, *, resume: bool = False, progress: bool = True) -> None:
        self.config = config
        self.output = Path(config.output)
        self.processes = Processes.from_environment()
        self.device = _pick_device(config.device, self.processes)
        self.progress = progress and self.processes.is_main
        self.resume = resume

    def fit(self) -> Path:
        """Train; the caller's global random states (torch's, numpy's, CUDA's) are as they were afterwards."""
        with _process_group(self.processes, self.device), _caller_rng_kept():
            return self._fit()

    # setup ------------------------------------------------------------------------------------------------------

    def _fit(self) -> Path:
        config, processes = self.config, self.processes
        self._check_run_folder()
        preset = backbone_preset(config.backbone)
        self.model = _build_model(config).to(self.device)
        trainable = _trainable(self.model, config.stage, freeze_binary=config.freeze_binary)
        self.named_trainable = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.Adam(_parameter_groups(trainable, self.model, config), betas=(0.9, 0.999))
        self.scheduler = _scheduler(config, self.optimizer)
        self.ema = EMA(self.named_trainable, config.ema) if config.ema else None
        self.network = self._wrap(self._stage_network())
        training_scenes = _training_scenes(config)
        self.validation = _validation_scenes(config, training_scenes)
        self.mask2d = _mask(config)
        start = self._restore() if self.resume else 0
        batches = CassiBatches(
            training_scenes, self.mask2d, crop=config.crop, batch=config.batch, input_setting=preset.input_setting,
            mask_setting=preset.mask_setting, augment=config.augment, random_mask_crop=config.random_mask_crop,
            seed=config.seed, rank=processes.rank, world_size=processes.world_size, start_step=start,
            device=self.device,
        )
        if processes.is_main:
            save_json(asdict(config), self.output / RUN_CONFIG_FILE)
        self._loop(batches, start)
        return self._save_final()

    def _check_run_folder(self) -> None:
        saved_config = self.output / RUN_CONFIG_FILE
        if not saved_config.is_file():
            return
        if not self.resume:
            if latest_checkpoint(self.output) is not None:
                raise InvalidInputError(
                    f"{self.output} already holds a run: resume it (the resume option), or choose another output folder"
                )
            return
        saved = upgrade_run_settings(load_json(saved_config))
        defaults = asdict(TrainConfig())
        changed = sorted(
            name for name, value in asdict(self.config).items()
            if name not in _MAY_CHANGE_ON_RESUME and saved.get(name, defaults[name]) != json.loads(json.dumps(value))
        )
        if changed:
            details = ", ".join(f"{name}: {saved.get(name)!r} -> {getattr(self.config, name)!r}" for name in changed)
            raise InvalidInputError(f"cannot resume {self.output} with different settings ({details})")

    def _stage_network(self) -> nn.Module:
        return _PriorDistillation(get_injector(self.model)) if self.config.stage == "stage2a" else self.model

    def _wrap(self, network: nn.Module) -> nn.Module:
        if self.processes.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            network = nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
        # Static shapes: validation batches differ from training ones, and inductor (torch 2.13) fails on the
        # channels-last strides of MST's mask branch once it turns a shape dynamic; each shape compiles once instead.
        return torch.compile(network, dynamic=False) if self.config.compile else network

    def _restore(self) -> int:
        folder = latest_checkpoint(self.output)
        if folder is None:
            return 0
        load_state_dict_strict(self.model, load_tensors(folder / "weights.safetensors"), source=str(folder))
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            for name, value in state["ema"].items():
                self.ema.shadow[name].copy_(value)
        _restore_rng(state["rng"])
        self._truncate_log(state["step"])
        return state["step"]

    # the loop ---------------------------------------------------------------------------------------------------

    def _autocast(self) -> Any:
        precision = self.config.precision
        if precision == "bf16" or (precision == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _losses(self, batch: dict[str, Tensor], step: int) -> tuple[Tensor, dict[str, float]]:
        """The loss to back-propagate and the values to log, for this stage."""
        config, processes = self.config, self.processes
        args = (batch["input"], batch["mask"])
        if config.stage in ("stage2a", "stage2b"):
            prior_dim = get_injector(self.model).prior_dim
            noise = _global_noise(config.seed, step, config.batch, prior_dim, processes, self.device)
        if config.stage == "stage2a":
            z_student, z_teacher = self.network(args, batch["gt"], noise)
            l1 = F.l1_loss(z_student.float(), z_teacher.float())
            return l1, {"l1": _mean_over_ranks(l1, processes)}
        if config.stage == "baseline":
            loss, rmse = _rmse(self.network(*args), batch["gt"], processes)
            return loss, {"rmse": rmse}
        injector = get_injector(self.model)
        if config.stage == "stage1":
            with injector.teacher(batch["gt"]):
                loss, rmse = _rmse(self.network(*args), batch["gt"], processes)
            return loss, {"rmse": rmse}
        with injector.distill(batch["gt"], noise) as pairs:
            loss, rmse = _rmse(self.network(*args), batch["gt"], processes)
        l1 = torch.stack([F.l1_loss(s.float(), t.float()) for s, t in pairs]).mean()
        return loss + config.distill_weight * l1, {"rmse": rmse, "l1": _mean_over_ranks(l1, processes)}

    def _loop(self, batches: CassiBatches, start: int) -> None:
        config = self.config
        bar = tqdm(total=config.steps, initial=start, disable=not self.progress, desc=config.stage, unit="step")
        batch_iter = iter(batches)
        clock = time.perf_counter()
        for step in range(start, config.steps):
            batch = next(batch_iter)
            with self._autocast():
                loss, logged = self._losses(batch, step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_grad:
                torch.nn.utils.clip_grad_norm_(self.named_trainable.values(), config.clip_grad)
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update()
            done = step + 1
            elapsed, clock = time.perf_counter() - clock, time.perf_counter()
            record = {"step": done, **logged, "lr": self.optimizer.param_groups[0]["lr"], "seconds": elapsed,
                      "samples_per_second": config.batch / elapsed}
            if (config.val_every and done % config.val_every == 0) or done == config.steps:
                record["val_psnr"] = self.validate()
            self._log(record)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("rmse", "l1", "val_psnr")}
                            | {"samples/s": f"{record['samples_per_second']:.2f}"})
            bar.update(1)
            if done % config.checkpoint_every == 0 or done == config.steps:
                self.save_checkpoint(done)
                clock = time.perf_counter()
        bar.close()

    # validation, logs, checkpoints ------------------------------------------------------------------------------

    def validate(self) -> float:
        """Mean PSNR (dB) on the validation scenes (``spectral-prior eval``'s protocol), with the EMA weights if any.

        Stage 1 validates what it trains: the prior of its teacher, which sees the ground truth.
        """
        preset = backbone_preset(self.config.backbone)
        with self.ema.applied() if self.ema is not None else nullcontext(), self._autocast():
            results = evaluate(
                self.model, self.validation, self.mask2d, input_setting=preset.input_setting,
                mask_setting=preset.mask_setting, device=self.device, teacher=self.config.stage == "stage1",
            )
        return mean_metrics(results)["psnr"]

    def _log(self, record: dict[str, Any]) -> None:
        if not self.processes.is_main:
            return
        self.output.mkdir(parents=True, exist_ok=True)
        with open(self.output / LOG_FILE, "a") as log:
            log.write(json.dumps(record) + "\n")

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the checkpoint being resumed (they will be written again)."""
        path = self.output / LOG_FILE
        if not self.processes.is_main or not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        with atomic_path(path) as temporary:
            temporary.write_text("".join(line + "\n" for line in kept))

    def save_checkpoint(self, step: int) -> None:
        """Rank 0 writes the checkpoint of ``step`` (the other ranks wait for it)."""
        if self.processes.is_main:
            state = {
                "step": step,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.shadow if self.ema is not None else None,
                "rng": _rng_states(),
                "config": asdict(self.config),
            }
            _write_checkpoint(self.output, step, self.model.state_dict(), state)
        if self.processes.world_size > 1:
            dist.barrier()

    def _save_final(self) -> Path:
        final = self.output / FINAL_DIR
        if self.processes.is_main:
            with self.ema.applied() if self.ema is not None else nullcontext():
                saving = dict(card={"training": _training_card(self.config)}, mask=self.mask2d,
                              mask_source=_mask_source(self.config),
                              extra_config={TRAINING_STAGE_KEY: self.config.stage})
                if self.config.stage == "baseline":
                    save_backbone(final, self.model, name=self.config.backbone, **saving)
                else:
                    get_injector(self.model).save_pretrained(
                        final, backbone=self.model, backbone_name=self.config.backbone, **saving
                    )
        if self.processes.world_size > 1:
            dist.barrier()
        return final


def _mask_source(config: TrainConfig) -> str:
    if config.mask == "random":
        return f"a random binary {config.mask_size}x{config.mask_size} mask, seed {config.seed}"
    return Path(config.mask).name  # no local paths in cards


def _training_card(config: TrainConfig) -> str:
    if config.data == "procedural":
        data = f"{config.scenes} procedural scenes"
    else:
        names = scene_names(config.data_scenes)
        data = f"cubes from {Path(config.data).name}" + (f" (scenes {', '.join(names)})" if names else "")
    mask = "a random binary mask" if config.mask == "random" else Path(config.mask).name
    return (
        f"{config.stage}, {config.steps} steps of batch {config.batch} on {config.crop}x{config.crop} crops of "
        f"{data}, mask {mask}, seed {config.seed}"
    )


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Run one stage; returns its ``final/`` folder."""
    return Trainer(config, resume=resume, progress=progress).fit()


def train_all(
    config: TrainConfig, *, distill_steps: Optional[int] = None, resume: bool = False, progress: bool = True
) -> Path:
    """Stage 1, 2a and 2b in ``OUTPUT/stage1``, ``/stage2a``, ``/stage2b``, each resumable; returns ``OUTPUT/final``.

    Stages 1 and 2b run ``config.steps`` steps each, stage 2a ``distill_steps`` (default ``steps // 2``).
    """
    root = Path(config.output)
    previous = config.init
    plan = (("stage1", config.steps), ("stage2a", distill_steps or max(1, config.steps // 2)), ("stage2b", config.steps))
    for stage, steps in plan:
        stage_config = dataclasses.replace(config, stage=stage, steps=steps, output=str(root / stage), init=previous)
        previous = str(train(stage_config, resume=resume, progress=progress))
    final = root / FINAL_DIR
    if Processes.from_environment().is_main:
        _replace_folder(Path(previous), final)
    return final


def _replace_folder(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` so that ``target`` is either the old folder or the complete copy."""
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    shutil.copytree(source, temporary)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(temporary, target)


# -- command line ------------------------------------------------------------------------------------------------


_PRIOR_FLAGS = {
    "--prior-dim": "prior_dim",
    "--hfe-dim": "hfe_dim",
    "--hfe-depth": "hfe_depth",
    "--diffusion-steps": "steps",
    "--denoiser-hidden": "denoiser_hidden",
    "--denoiser-depth": "denoiser_depth",
}
_PRIOR_DEST = "prior__"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``spectral-prior train`` options: one per :class:`TrainConfig` field, plus ``--resume``."""
    defaults = TrainConfig()
    parser.add_argument("--stage", choices=STAGES + ("all",), default=argparse.SUPPRESS,
                        help="what to train (default all: stage1, stage2a and stage2b, the whole recipe; with "
                        "--resume, the run's own)")
    parser.add_argument("--backbone", default=argparse.SUPPRESS, help=f"one of {', '.join(list_backbones())}")
    for item in fields(TrainConfig):
        if item.name in ("stage", "backbone", "prior"):
            continue
        flag = "--" + item.name.replace("_", "-")
        default = getattr(defaults, item.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=f"(default {default})")
        else:
            kind = type(default) if default is not None else str
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=f"(default {default})")
    for flag, name in _PRIOR_FLAGS.items():
        parser.add_argument(flag, dest=_PRIOR_DEST + name, type=int, default=argparse.SUPPRESS,
                            help=f"PriorConfig.{name} of a new prior (default {getattr(PriorConfig(), name)})")
    parser.add_argument("--distill-steps", type=int, default=None, help="stage-2a steps of --stage all (default steps/2)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its latest checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def upgrade_run_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run saved by an older release in today's fields (``amp`` became ``precision``); fields added
    since then are absent and take their defaults."""
    saved = dict(saved)
    if "amp" in saved:
        saved["precision"] = "auto" if saved.pop("amp") else "fp32"
    return saved


def _saved_run(output: Path) -> Optional[tuple[bool, dict[str, Any]]]:
    """``(stage_all, settings)`` of the run in ``output`` (``--stage all`` runs keep theirs in ``stage1/``), or None."""
    if (output / RUN_CONFIG_FILE).is_file():
        return False, upgrade_run_settings(load_json(output / RUN_CONFIG_FILE))
    if (output / "stage1" / RUN_CONFIG_FILE).is_file():  # train_all's first stage
        return True, upgrade_run_settings(load_json(output / "stage1" / RUN_CONFIG_FILE))
    return None


def config_from_arguments(args: argparse.Namespace) -> tuple[TrainConfig, bool]:
    """The run's config and whether it is a ``--stage all`` run.

    With ``--resume`` the run is the one found in ``--output`` (a single stage or ``--stage all``), its saved settings
    updated with the options given on the command line; ValueError when the folder holds no run.
    """
    given = {name: value for name, value in vars(args).items() if name in {f.name for f in fields(TrainConfig)}}
    prior = {name.removeprefix(_PRIOR_DEST): v for name, v in vars(args).items() if name.startswith(_PRIOR_DEST)}
    if prior:
        given["prior"] = prior
    stage_all = given.get("stage", "all") == "all"
    if args.resume:
        output = Path(given.get("output", TrainConfig.output))
        saved = _saved_run(output)
        if saved is None:
            raise InvalidInputError(
                f"nothing to resume in {output}: it holds no run ({RUN_CONFIG_FILE} not found there nor in "
                f"{output / 'stage1'}); start the run without --resume"
            )
        saved_all, base = saved
        if "stage" in given and stage_all != saved_all:
            found = "a --stage all run" if saved_all else f"a {base['stage']} run"
            raise InvalidInputError(f"{output} holds {found}, not a --stage {given['stage']} one: drop --stage to resume it")
        stage_all = saved_all
        base.pop("output", None)
        given = {**base, **given}
    if stage_all:
        given["stage"] = "stage1"
    return TrainConfig(**given), stage_all


def _distill_steps(args: argparse.Namespace, config: TrainConfig) -> Optional[int]:
    """``--distill-steps``, or when resuming a ``--stage all`` run the stage-2a steps it was started with."""
    saved = Path(config.output) / "stage2a" / RUN_CONFIG_FILE
    if args.distill_steps is None and args.resume and saved.is_file():
        return load_json(saved)["steps"]
    return args.distill_steps


_WHAT_A_STAGE_LEAVES = {
    "baseline": "the bare backbone, for eval and reconstruct",
    "stage1": "the end of stage 1, whose measurement-only prior is untrained: continue with --stage stage2a "
              "--init {final}, not for eval or reconstruct",
    "stage2a": "the trained prior on the stage-1 backbone, usable; --stage stage2b --init {final} fine-tunes it",
    "stage2b": "the fine-tuned model, for eval and reconstruct",
}


def _interrupted(config: TrainConfig, stage_all: bool) -> KeyboardInterrupt:
    """Ctrl-C: where the run can be taken up again."""
    output = Path(config.output)
    stages = [output / stage for stage in ("stage1", "stage2a", "stage2b")] if stage_all else [output]
    latest = [(folder, latest_checkpoint(folder)) for folder in stages if latest_checkpoint(folder) is not None]
    where = f"its checkpoint {latest[-1][1].relative_to(output)}" if latest else "the start"
    return KeyboardInterrupt(f"the run in {output} resumes from {where} with --resume --output {output}")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``spectral-prior train``."""
    config, stage_all = config_from_arguments(args)
    try:
        if stage_all:
            final = train_all(config, distill_steps=_distill_steps(args, config), resume=args.resume,
                              progress=not args.quiet)
        else:
            final = train(config, resume=args.resume, progress=not args.quiet)
    except KeyboardInterrupt:
        raise _interrupted(config, stage_all) from None
    if Processes.from_environment().is_main:
        stage = "stage2b" if stage_all else config.stage
        print(f"saved {final}: {_WHAT_A_STAGE_LEAVES[stage].format(final=final)}")
    return 0
