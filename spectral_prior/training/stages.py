"""What each stage builds: its data, its mask, its model, which parameters it trains at which rate, its schedule,
the EMA, and the stage-2a network."""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from .. import cassi
from ..adapters.bisrnet import latent_binary_weights
from ..adapters.registry import backbone_preset, backbone_schedule, create_backbone
from ..data import CAVE_SPLIT, CubeFolder, ProceduralCubes, SceneTiles, scene_names
from ..errors import InvalidInputError, UntrainedPriorWarning
from ..models import load_model
from ..sdp.config import PriorConfig
from ..sdp.inject import get_injector, inject_prior
from ..sdp.injector import INJECTOR_NAME
from ..sdp.prior import SpectralDiffusionPrior
from .config import VALIDATION_SEED_OFFSET, TrainConfig

def training_scenes(config: TrainConfig) -> Any:
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


def validation_scenes(config: TrainConfig, training: Any) -> Any:
    """Held-out procedural scenes, ``val_data``'s cubes, or central tiles of training scenes spread over the set."""
    if config.val_data:
        folder = CubeFolder(config.val_data, cache=True)
        return [folder[i] for i in range(min(config.val_scenes, len(folder)))]
    if config.data == "procedural":
        return ProceduralCubes(config.val_scenes, size=config.crop, seed=config.seed + VALIDATION_SEED_OFFSET)
    count = min(config.val_scenes, len(training))
    picked = [training[round(i * len(training) / count)] for i in range(count)]
    return SceneTiles(picked, config.crop, grid=False)


def training_mask(config: TrainConfig) -> Tensor:
    if config.mask == "random":
        return cassi.random_mask(config.mask_size, seed=config.seed)
    return cassi.load_mask(config.mask, key=config.mask_key)


def build_model(config: TrainConfig) -> nn.Module:
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
        example = preset.example_inputs(torch.device("cpu"), torch.float32)  # probes the blocks the layers setting picks
        inject_prior(model, config.layers or preset.name, prior=prior, condition=preset.condition, position=config.position,
                     example_inputs=example)
    if config.stage in ("stage2a", "stage2b"):
        if not injected or not isinstance(get_injector(model).prior, SpectralDiffusionPrior):
            raise InvalidInputError(f"{config.stage} continues a stage-1 run, but init={config.init} holds no trained prior")
    return model.train()


def trainable_parameters(model: nn.Module, stage: str, *, freeze_binary: bool = False) -> list[nn.Parameter]:
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
        chosen -= _latent_binary_ids(model, "freeze_binary", "to freeze")
    trainable = []
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in chosen)
        if parameter.requires_grad:
            trainable.append(parameter)
    return trainable


def _latent_binary_ids(model: nn.Module, option: str, purpose: str) -> set[int]:
    """The ids of ``model``'s latent binary weights; ``option`` cannot apply (``purpose``) to a model without them."""
    latent = latent_binary_weights(model)
    if not latent:
        raise InvalidInputError(f"{option}: {type(model).__name__} has no binarised convolutions {purpose}")
    return {id(p) for p in latent}


def parameter_groups(trainable: list[nn.Parameter], model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Adam's groups: the backbone at ``lr``; its latent binary weights at ``binary_lr`` and what the injection
    added at ``prior_lr``, each where given."""
    own_rates: list[tuple[set[int], float]] = []
    if config.binary_lr is not None:
        own_rates.append((_latent_binary_ids(model, "binary_lr", "to train at it"), config.binary_lr))
    if config.prior_lr is not None and hasattr(model, INJECTOR_NAME):
        own_rates.append(({id(p) for p in get_injector(model).parameters()}, config.prior_lr))
    rest = [p for p in trainable if not any(id(p) in ids for ids, _ in own_rates)]
    groups = [{"params": rest, "lr": config.lr}]
    groups += [{"params": [p for p in trainable if id(p) in ids], "lr": rate} for ids, rate in own_rates]
    return [group for group in groups if group["params"]]


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
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


class PriorDistillation(nn.Module):
    """Stage 2a's network: the prior alone, teacher vector -> student vector (the backbone never runs)."""

    def __init__(self, injector: nn.Module) -> None:
        super().__init__()
        self.injector = injector

    def forward(self, args: tuple, gt: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        return self.injector.distill_pair(self.injector.condition(args, {}), gt, noise)


def mask_source(config: TrainConfig) -> str:
    if config.mask == "random":
        return f"a random binary {config.mask_size}x{config.mask_size} mask, seed {config.seed}"
    return Path(config.mask).name  # no local paths in cards


def training_card(config: TrainConfig) -> str:
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
