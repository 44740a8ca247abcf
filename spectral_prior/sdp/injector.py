"""The injector: the child ``model.spectral_prior`` that holds the prior and the SPIMs, and the hooks that run them.

How a forward pass of an injected model flows:

1. A forward pre-hook on the root (``with_kwargs=True``) maps the forward arguments to the prior's input with the
   ``condition`` and computes the prior once: ``z = prior(condition(args, kwargs))``.
2. Each target block's SPIM modulates its output (a forward hook returning ``spim(output, z)``) or its input (a
   forward pre-hook replacing its first tensor argument ``x`` by ``spim(x, z)``), as chosen per target.
3. A root forward hook registered with ``always_call=True`` forgets ``z``, so an exception never leaves it behind.

The hooks are plain functions that find the injector through the module they run on, and ``z`` lives in
thread-local storage, so DataParallel replicas (which share their hooks and run in threads) and models used from
several threads never see each other's prior. In training mode each target also remembers the prior it used for its
input tensor, so that ``torch.utils.checkpoint`` (``use_reentrant=False``, PyTorch's recommended variant) finds
it again when it re-runs the block during backward. The legacy re-entrant variant cannot send gradients to a prior
computed outside the checkpointed call, so it is not supported.
"""
from __future__ import annotations

import copy
import threading
import uuid
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, NamedTuple, Sequence, Union

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError
from ..io import load_state_dict_strict
from ..saving.cards import injection_card
from ..saving.format import BACKBONE_FILE, WEIGHTS_FILE
from ..saving.load import Saved, open_saved
from ..saving.write import write_saved
from .config import InjectionConfig
from .presets import Condition
from .prior import prior_spec
from .spim import SPIM

INJECTOR_NAME = "spectral_prior"
"""The name of the child module an injection adds to the backbone."""
Layers = Union[str, Sequence[str]]
Position = Literal["input", "output"]


class TargetSpec(NamedTuple):
    """One modulated block: the channel count and axis of what its SPIM modulates, and whether that is the block's
    ``"input"`` (first tensor argument) or ``"output"``."""

    channels: int
    axis: int
    position: str


_thread_state = threading.local()


def _active_priors() -> dict[str, tuple["SpectralPriorInjector", Tensor | None]]:
    """injector key -> (injector, z) for the root forwards running in this thread."""
    if not hasattr(_thread_state, "priors"):
        _thread_state.priors = {}
    return _thread_state.priors


# -- hooks -------------------------------------------------------------------------------------------------------


def _compute_prior_hook(root: nn.Module, args: tuple, kwargs: dict) -> None:
    injector: SpectralPriorInjector = getattr(root, INJECTOR_NAME)
    z = injector.compute_prior(injector.condition(args, kwargs)) if injector.enabled else None
    _active_priors()[injector.key] = (injector, z)


def _forget_prior_hook(root: nn.Module, args: tuple, output: Any) -> None:
    _active_priors().pop(getattr(root, INJECTOR_NAME).key, None)


def _tensor_key(x: Tensor) -> tuple:
    """Identifies a block's input tensor between its forward and its recomputation."""
    return (x.device, x.data_ptr(), tuple(x.shape), x.stride())


class _Modulation:
    """The hook of one target block: finds the prior of the running forward and applies the block's SPIM."""

    def __init__(self, injector: "SpectralPriorInjector", name: str) -> None:
        self.injector = injector  # a DataParallel replica shares this hook, and its injector's key
        self.name = name
        self._remembered: dict[tuple, tuple[SpectralPriorInjector, Tensor]] = {}

    def __deepcopy__(self, memo: dict) -> "_Modulation":
        """A copy for a deep copy of the model: bound to the copied injector, remembering nothing."""
        return type(self)(copy.deepcopy(self.injector, memo), self.name)

    def _active_prior(self, module: nn.Module, args: tuple) -> tuple[SpectralPriorInjector, Tensor] | None:
        """(injector, z) of the root forward running this block, or None when the block runs bare."""
        active = _active_priors().get(self.injector.key)
        if active is None:  # outside a root forward: a checkpoint re-running this block during backward?
            active = self._recall(args)
        elif module.training and active[1] is not None and not torch.compiler.is_compiling():
            self._remember(args, active)  # (compiled code traces a checkpoint's recomputation with the prior active)
        return None if active is None or active[1] is None else active

    def _modulate(self, x: Tensor, active: tuple[SpectralPriorInjector, Tensor]) -> Tensor:
        injector, z = active
        return injector.spims[_spim_key(self.name)](x, z, channel_axis=injector.channel_axes[self.name])

    @staticmethod
    def _first_tensor(args: tuple) -> Tensor | None:
        return next((a for a in args if isinstance(a, Tensor)), None)

    def _remember(self, args: tuple, active: tuple) -> None:
        x = self._first_tensor(args)
        if x is None:
            return
        key = _tensor_key(x)
        self._remembered[key] = active
        weakref.finalize(x, self._remembered.pop, key, None)

    def _recall(self, args: tuple) -> tuple | None:
        x = self._first_tensor(args)
        return None if x is None else self._remembered.get(_tensor_key(x))


class _ModulateOutput(_Modulation):
    """Forward hook: the block's output modulated by its SPIM."""

    def __call__(self, module: nn.Module, args: tuple, output: Any) -> Any:
        active = self._active_prior(module, args)
        if active is None:
            return None
        if not isinstance(output, Tensor):
            raise TypeError(
                f"target {self.name!r} returned {type(output).__name__}; SPIM modulates a tensor [B, C, ...]. "
                "Choose blocks that return one tensor, or position='input'."
            )
        return self._modulate(output, active)


class _ModulateInput(_Modulation):
    """Forward pre-hook: the block's first tensor argument modulated by its SPIM, the other arguments unchanged."""

    def __call__(self, module: nn.Module, args: tuple) -> tuple | None:
        active = self._active_prior(module, args)
        if active is None:
            return None
        index = next((i for i, a in enumerate(args) if isinstance(a, Tensor)), None)
        if index is None:
            raise TypeError(
                f"target {self.name!r} was called without a positional tensor argument; SPIM at position 'input' "
                "modulates the first one. Choose blocks called with their features first, or position='output'."
            )
        return args[:index] + (self._modulate(args[index], active),) + args[index + 1 :]


HOOKS = {"output": _ModulateOutput, "input": _ModulateInput}
"""Where a SPIM acts on its target: ``"output"`` (a forward hook) or ``"input"`` (a forward pre-hook)."""


# -- the injector module -----------------------------------------------------------------------------------------


def _spim_key(name: str) -> str:
    return name.replace(".", "_")


class SpectralPriorInjector(nn.Module):
    """The child ``model.spectral_prior`` added by :func:`~spectral_prior.sdp.inject.inject_prior`: the prior network and one SPIM per target.

    Not built directly: use :func:`~spectral_prior.sdp.inject.inject_prior`.
    """

    def __init__(
        self,
        *,
        prior: nn.Module,
        prior_dim: int,
        targets: Mapping[str, TargetSpec],
        condition: Condition,
        layers: Layers,
        preset: str | None,
    ) -> None:
        super().__init__()
        self.prior = prior
        self.spims = nn.ModuleDict({_spim_key(name): SPIM(prior_dim, spec.channels) for name, spec in targets.items()})
        self.prior_dim = prior_dim
        self.targets = list(targets)
        self.channels = {name: spec.channels for name, spec in targets.items()}
        self.channel_axes = {name: spec.axis for name, spec in targets.items()}
        self.positions = {name: spec.position for name, spec in targets.items()}
        self.condition = condition
        self.layers = layers if isinstance(layers, str) else list(layers)
        self.preset = preset
        self.key = uuid.uuid4().hex
        self.enabled = True
        self._teacher_gt: Tensor | None = None
        self._fixed: Tensor | None = None
        self._distilled: list[tuple[Tensor, Tensor]] | None = None
        self._distill_noise: Tensor | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.backbone_signature: dict[str, Any] | None = None  # set when attached: the class and size of the backbone

    def __deepcopy__(self, memo: dict) -> "SpectralPriorInjector":
        """A deep copy with a key of its own, so that the copy's forwards never read the original's prior."""
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update({name: copy.deepcopy(value, memo) for name, value in self.__dict__.items()})
        clone.key = uuid.uuid4().hex
        return clone

    def compute_prior(self, condition: Tensor) -> Tensor:
        """The prior vector for one forward: the given one inside :meth:`fixed_prior`, the teacher's inside
        :meth:`teacher`, the distilled student's inside :meth:`distill`, else the prior's own."""
        if self._fixed is not None:
            return self._fixed
        if self._teacher_gt is None:
            return self.prior(condition)
        if not hasattr(self.prior, "teacher"):
            raise TypeError(f"{type(self.prior).__name__} has no teacher(h, gt) path for two-stage training")
        if self._distilled is None:
            return self.prior.teacher(condition, self._teacher_gt)
        z_student, z_teacher = self.distill_pair(condition, self._teacher_gt, self._distill_noise)
        self._distilled.append((z_student, z_teacher))
        return z_student

    def distill_pair(self, condition: Tensor, gt: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Stage 2's step: ``(z_student, z_teacher)``, the teacher without gradients, the student's reverse diffusion
        started from ``q(z_T | z_teacher)`` with ``noise``. Stage 2a trains on it alone, stage 2b inside the model."""
        with torch.no_grad():
            z_teacher = self.prior.teacher(condition, gt)
        return self.prior(condition, z_teacher=z_teacher, noise=noise), z_teacher

    @contextmanager
    def disable(self) -> Iterator[None]:
        """Inside, the model runs bare: no prior is computed and no block is modulated."""
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous

    @contextmanager
    def fixed_prior(self, z: Tensor) -> Iterator[None]:
        """Inside, every forward is modulated with the given prior vectors ``z`` [B or 1, D] instead of computing them:
        for ablations, such as a teacher's vector taken from another scene, or a constant vector."""
        if z.dim() != 2 or z.shape[-1] != self.prior_dim:
            raise InvalidInputError(f"fixed_prior needs vectors [B, {self.prior_dim}], got {list(z.shape)}")
        previous, self._fixed = self._fixed, z
        try:
            yield
        finally:
            self._fixed = previous

    @contextmanager
    def teacher(self, gt: Tensor) -> Iterator[None]:
        """Inside, the prior comes from the teacher, which also sees the ground truth ``gt`` (stage-1 training).

        ``gt`` must be the batch of the forwards run inside (with DataParallel it is not scattered: use DDP).
        """
        previous, self._teacher_gt = self._teacher_gt, gt
        try:
            yield
        finally:
            self._teacher_gt = previous

    @contextmanager
    def distill(self, gt: Tensor, noise: Tensor | None = None) -> Iterator[list[tuple[Tensor, Tensor]]]:
        """Stage-2 training: the student prior drives the blocks, its diffusion started from the teacher's vector.

        Each forward inside computes ``z_teacher = teacher(h, gt)`` without gradients and
        ``z_student = prior(h, z_teacher=z_teacher, noise=noise)``, modulates with ``z_student`` and appends the
        pair to the yielded list, for the L1 loss that teaches the student to reproduce the teacher.
        """
        pairs: list[tuple[Tensor, Tensor]] = []
        previous = self._distilled, self._distill_noise
        self._distilled, self._distill_noise = pairs, noise
        try:
            with self.teacher(gt):
                yield pairs
        finally:
            self._distilled, self._distill_noise = previous

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the injection added (prior and SPIMs) that require gradients."""
        return [p for p in self.parameters() if p.requires_grad]

    def print_trainable_parameters(self, model: nn.Module | None = None) -> None:
        """Print, as peft does, the trainable and total parameter counts of ``model`` (default: this injector)."""
        params = list((model or self).parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        total = sum(p.numel() for p in params)
        print(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}")

    def to_config(self) -> dict[str, Any]:
        """The ``config.json`` of this injection (see :class:`~spectral_prior.sdp.config.InjectionConfig`)."""
        return InjectionConfig(
            preset=self.preset,
            layers=self.layers,
            targets=self.targets,
            channels=self.channels,
            channel_axes=self.channel_axes,
            positions=self.positions,
            prior_dim=self.prior_dim,
            prior=prior_spec(self.prior),
            trained_with=self.backbone_signature,
        ).to_dict()

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        backbone: nn.Module | None = None,
        backbone_name: str | None = None,
        card: Mapping[str, Any] | None = None,
        mask: Tensor | None = None,
        mask_source: str | None = None,
        extra_config: Mapping[str, Any] | None = None,
    ) -> Path:
        """Save the injector (prior + SPIM weights and a JSON config); with ``backbone=model`` also its backbone.

        Files: ``config.json``, ``model.safetensors``, optionally ``backbone.safetensors`` and ``mask.safetensors``
        (the coded aperture ``mask`` the model was trained with, ``mask_source`` saying where it comes from), and a
        model card ``README.md`` listing the backbone, the modulated blocks and ``card``'s entries (e.g. training data,
        scores); written as a unit (:func:`~spectral_prior.saving.write_saved`). :func:`load_injection` loads them.
        ``backbone_name`` (e.g. ``"mst_s"``, see :func:`spectral_prior.adapters.create_backbone`) lets
        :func:`spectral_prior.load_model` rebuild the backbone without being told which it is; ``extra_config``
        entries are recorded in ``config.json`` too.
        """
        config = {**self.to_config(), **(extra_config or {})}
        weights = {WEIGHTS_FILE: self.state_dict()}
        if backbone is not None:
            weights[BACKBONE_FILE] = {
                k: v for k, v in backbone.state_dict().items() if not k.startswith(INJECTOR_NAME + ".")
            }
            config["backbone"] = {"class": type(backbone).__name__, "name": backbone_name, "file": BACKBONE_FILE}
        return write_saved(
            directory, config, weights, card=injection_card(config, card or {}), mask=mask, mask_source=mask_source
        )

    def load_pretrained(self, source: str | Path | Saved) -> None:
        """Load prior + SPIM weights saved by :meth:`save_pretrained` into this injector (strict)."""
        saved = source if isinstance(source, Saved) else open_saved(source, files=(WEIGHTS_FILE,), kind="injector")
        config = saved.config
        recorded = (config["targets"], config["channels"], config["positions"])
        if recorded != (self.targets, self.channels, self.positions):
            raise InvalidInputError(
                f"{saved.directory} was saved for targets {config['targets']} with channels {config['channels']} at "
                f"positions {config['positions']}; this model's injection has {self.targets} with {self.channels} at "
                f"{self.positions}"
            )
        load_state_dict_strict(self, saved.tensors(WEIGHTS_FILE), source=str(saved.directory / WEIGHTS_FILE))

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}, targets={len(self.targets)}, prior_dim={self.prior_dim}"
