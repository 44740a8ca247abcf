"""``inject_prior`` / ``remove_prior``: SPIM modulation of chosen blocks of any backbone, through forward hooks.

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
import difflib
import logging
import re
import sys
import threading
import uuid
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, NamedTuple, Sequence, Union

import torch
from torch import Tensor, nn

from .adapters.presets import PRESETS, Condition, Preset, first_argument
from .errors import InvalidInputError
from .io import load_state_dict_strict, load_tensors, save_json, save_tensors
from .prior import LinearPrior, build_prior, prior_spec
from .saved import (
    BACKBONE_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    library_stamp,
    model_card,
    read_config,
    write_card,
)
from .spim import SPIM

logger = logging.getLogger("spectral_prior")

INJECTOR_NAME = "spectral_prior"
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
    """The child ``model.spectral_prior`` added by :func:`inject_prior`: the prior network and one SPIM per target.

    Not built directly: use :func:`inject_prior`.
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
        return {
            "kind": "injector",
            **library_stamp(),
            "preset": self.preset,
            "layers": self.layers,
            "targets": self.targets,
            "channels": self.channels,
            "channel_axes": self.channel_axes,
            "positions": self.positions,
            "prior_dim": self.prior_dim,
            "prior": prior_spec(self.prior),
            "trained_with": self.backbone_signature,
        }

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        backbone: nn.Module | None = None,
        backbone_name: str | None = None,
        card: Mapping[str, Any] | None = None,
    ) -> Path:
        """Save the injector (prior + SPIM weights and a JSON config); with ``backbone=model`` also its backbone.

        Files: ``config.json``, ``model.safetensors``, optionally ``backbone.safetensors``, and a model card
        ``README.md`` listing the backbone, the modulated blocks and ``card``'s entries (e.g. training data, scores);
        each written atomically. :func:`inject_prior` with ``prior=directory`` (or a Hub repo with them) loads them.
        ``backbone_name`` (e.g. ``"mst_s"``, see :func:`spectral_prior.adapters.create_backbone`) lets
        :func:`spectral_prior.load_model` rebuild the backbone without being told which it is.
        """
        directory = Path(directory)
        save_tensors(self.state_dict(), directory / WEIGHTS_FILE, metadata={"format": "pt"})
        config = self.to_config()
        if backbone is not None:
            bare = {k: v for k, v in backbone.state_dict().items() if not k.startswith(INJECTOR_NAME + ".")}
            save_tensors(bare, directory / BACKBONE_FILE, metadata={"format": "pt"})
            config["backbone"] = {"class": type(backbone).__name__, "name": backbone_name, "file": BACKBONE_FILE}
        save_json(config, directory / CONFIG_FILE)
        write_card(directory, model_card(config, card or {}))
        return directory

    def load_pretrained(self, directory: str | Path) -> None:
        """Load prior + SPIM weights saved by :meth:`save_pretrained` into this injector (strict)."""
        directory = Path(directory)
        config = read_config(directory / CONFIG_FILE, kind="injector")
        saved = (config["targets"], config["channels"], saved_positions(config))
        if saved != (self.targets, self.channels, self.positions):
            raise InvalidInputError(
                f"{directory} was saved for targets {config['targets']} with channels {config['channels']} at "
                f"positions {saved[2]}; this model's injection has {self.targets} with {self.channels} at "
                f"{self.positions}"
            )
        load_state_dict_strict(self, load_tensors(directory / WEIGHTS_FILE), source=str(directory / WEIGHTS_FILE))

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}, targets={len(self.targets)}, prior_dim={self.prior_dim}"


# -- target selection and channel probing ------------------------------------------------------------------------


def match_targets(model: nn.Module, layers: Layers) -> list[str]:
    """Names of the modules ``layers`` selects: a regex (``re.fullmatch``) or names/dotted suffixes (as peft)."""
    names = [name for name, _ in model.named_modules() if name and not name.startswith(INJECTOR_NAME)]
    if isinstance(layers, str):
        try:
            pattern = re.compile(layers)
        except re.error as err:
            raise InvalidInputError(f"layers={layers!r} is not a valid regular expression ({err}) nor a preset name") from err
        matched = [name for name in names if pattern.fullmatch(name)]
        wanted = [layers]
    else:
        wanted = list(layers)
        if not wanted or not all(isinstance(entry, str) for entry in wanted):
            raise TypeError(f"layers must be a preset name, a regex string or a list of module names, got {layers!r}")
        matched = [name for name in names if any(name == w or name.endswith("." + w) for w in wanted)]
    if not matched:
        close = sorted({c for w in wanted for c in difflib.get_close_matches(w, names, n=5, cutoff=0.4)})
        hint = f"close module names: {close}" if close else f"some module names: {names[:8]}"
        raise InvalidInputError(f"layers={layers!r} matches no module of {type(model).__name__}; {hint}")
    nested = [(outer, inner) for outer in matched for inner in matched if inner.startswith(outer + ".")]
    if nested:
        outer, inner = nested[0]
        raise InvalidInputError(
            f"target {inner!r} lies inside target {outer!r}: its output would be modulated twice; "
            "choose blocks that do not contain one another"
        )
    return matched


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _first_tensor(values: Any) -> Tensor | None:
    if isinstance(values, Tensor):
        return values
    return next((v for v in values if isinstance(v, Tensor)), None) if isinstance(values, (tuple, list)) else None


@torch.no_grad()
def _probe_targets(
    model: nn.Module, positions: Mapping[str, str], example: tuple[tuple, dict]
) -> dict[str, Any]:
    """Run ``model`` once in eval mode on ``example``; return what each target's SPIM would modulate (its first
    tensor argument or its output). A target that never runs as a module is refused: a hook on it would never fire."""
    seen: dict[str, Any] = {}
    ran: set[str] = set()

    def record_input(module: nn.Module, args: tuple) -> None:
        ran.add(names[module])
        if positions.get(names[module]) == "input":
            seen.setdefault(names[module], _first_tensor(args))

    def record_output(module: nn.Module, args: tuple, output: Any) -> None:
        seen.setdefault(names[module], output)

    names = {module: name for name, module in model.named_modules()}
    handles = [module.register_forward_pre_hook(record_input) for module in names]
    handles += [module.register_forward_hook(record_output) for module, name in names.items() if positions.get(name) == "output"]
    try:
        with _eval_mode(model):
            model(*example[0], **example[1])
    finally:
        for handle in handles:
            handle.remove()
    silent = [name for name in positions if name not in ran]
    if silent:
        hookable = sorted({c for name in silent for c in difflib.get_close_matches(name, sorted(ran), n=5, cutoff=0.6)})
        raise InvalidInputError(
            f"target {silent[0]!r} never runs as a module in {type(model).__name__}'s forward (its parent calls its "
            f"code directly, or this input does not use it), so a hook on it would never fire; modules that do run "
            f"nearby: {hookable or sorted(ran)[:8]}"
        )
    return seen


@torch.no_grad()
def _probe_prior(prior: nn.Module, condition: Condition, example: tuple[tuple, dict], prior_dim: int) -> None:
    """Run the prior once on the example's condition: materialises lazy layers and checks the output width."""
    with _eval_mode(prior):
        z = prior(condition(*example))
    if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[-1] != prior_dim:
        shape = list(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise InvalidInputError(f"the prior returned {shape}, expected a tensor [B, {prior_dim}]")


def _per_target(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, Mapping) else value


def _resolve_positions(targets: Sequence[str], position: Any) -> dict[str, str]:
    positions = {name: _per_target(position, name) or "output" for name in targets}
    wrong = {name: value for name, value in positions.items() if value not in HOOKS}
    if wrong:
        name, value = next(iter(wrong.items()))
        raise InvalidInputError(f"position {value!r} for target {name!r}; a SPIM acts on the block's 'input' or 'output'")
    return positions


def _resolve_channels(
    positions: Mapping[str, str],
    channels: int | Mapping[str, int] | None,
    channel_axis: int | Mapping[str, int] | None,
    probed: Mapping[str, Any] | None,
    example: tuple[tuple, dict] | None,
) -> dict[str, TargetSpec]:
    resolved = {}
    for name, position in positions.items():
        given, axis = _per_target(channels, name), _per_target(channel_axis, name)
        if probed is None:
            if given is None:
                raise InvalidInputError(f"no channel count for target {name!r}: pass channels= or example_inputs=")
            resolved[name] = TargetSpec(given, 1 if axis is None else axis, position)
            continue
        features = probed.get(name)
        if not isinstance(features, Tensor) or features.dim() < 2:
            kind = f"a tensor of shape {list(features.shape)}" if isinstance(features, Tensor) else type(features).__name__
            if position == "output":
                what, fix = "returns", "Choose blocks that return one tensor, or position='input'."
            else:
                what, fix = "takes as its first tensor argument", "Choose blocks called with one feature tensor first."
            raise TypeError(f"target {name!r} {what} {kind}; SPIM modulates a tensor [B, C, ...]. {fix}")
        if axis is None:
            axis = infer_channel_axis(list(features.shape), _spatial_size(example), name=name)
        found = features.shape[axis]
        if given is not None and given != found:
            verb = "outputs" if position == "output" else "takes"
            raise InvalidInputError(f"channels[{name!r}] = {given}, but the block {verb} {found} channels on axis {axis}")
        resolved[name] = TargetSpec(found, axis, position)
    return resolved


def _spatial_size(example: tuple[tuple, dict] | None) -> tuple[int, int] | None:
    """(H, W) of the example's first 4-D tensor: the model's input size, which feature maps scale with."""
    values = [*example[0], *example[1].values()] if example is not None else []
    image = next((v for v in values if isinstance(v, Tensor) and v.dim() == 4), None)
    return None if image is None else (image.shape[-2], image.shape[-1])


def infer_channel_axis(shape: Sequence[int], spatial: tuple[int, int] | None = None, *, name: str = "target") -> int:
    """The channel axis of a feature map of ``shape``: the last of 3-D tokens [B, N, C]; of 4-D maps, axis 1
    ([B, C, H, W]) or the last ([B, H, W, C]), whichever leaves two spatial axes with the input's aspect ratio
    ``spatial`` (H, W); axis 1 otherwise. Refused where both readings fit and disagree."""
    if len(shape) == 3:
        return -1
    if len(shape) != 4 or spatial is None:
        return 1
    height, width = spatial
    first = shape[2] * width == shape[3] * height  # [B, C, H, W]
    last = shape[1] * width == shape[2] * height  # [B, H, W, C]
    if first and last:
        raise InvalidInputError(
            f"the channel axis of {name!r} ({shape}) is ambiguous: pass channel_axis=1 (channels first) or -1 "
            "(channels last), or a non-square example_inputs"
        )
    return -1 if last and not first else 1


# -- public API --------------------------------------------------------------------------------------------------


def _normalise_example(example: Any) -> tuple[tuple, dict] | None:
    if example is None:
        return None
    if isinstance(example, Tensor):
        return (example,), {}
    if isinstance(example, tuple) and len(example) == 2 and isinstance(example[1], dict):
        return tuple(example[0]), example[1]
    return tuple(example), {}


def _load_injected_checkpoint(source: str, **hub_kwargs: Any) -> tuple[Path, dict[str, Any]]:
    from .hub import download_prior

    directory = download_prior(source, optional=(BACKBONE_FILE,), **hub_kwargs)
    return directory, read_config(directory / CONFIG_FILE)


def inject_prior(
    model: nn.Module,
    layers: Layers | None = None,
    prior: nn.Module | str | Path | None = None,
    *,
    condition: Condition | None = None,
    channels: int | Mapping[str, int] | None = None,
    prior_dim: int | None = None,
    channel_axis: int | Mapping[str, int] | None = None,
    position: Position | Mapping[str, Position] | None = None,
    example_inputs: Any = None,
    load_backbone: bool = True,
    replace: bool = False,
    **hub_kwargs: Any,
) -> nn.Module:
    """Wrap the ``layers`` of ``model`` with SPIM modulation driven by ``prior``; returns ``model``, changed in place.

    Args:
        model: any ``nn.Module``.
        layers: a preset name (``"mst"``, ``"bisrnet"``, see :data:`spectral_prior.adapters.PRESETS`), a regex
            matched with ``re.fullmatch`` against dotted module names, or a list of module names or dotted suffixes
            (as peft's ``target_modules``). May be left out when ``prior`` names a saved injection, which records
            its targets.
        prior: a prior module; a directory, Hub repo id, embedded or published name of a saved prior or injected
            checkpoint (prior + SPIMs, and the backbone weights when saved with them); or None for a
            :class:`LinearPrior` stand-in of ``prior_dim``.
        condition: ``condition(args, kwargs) -> Tensor``, the prior's input from the forward arguments; presets
            supply it, and by default it is the first positional argument.
        channels: channel count of every target (an int) or per target name; inferred by a probe forward otherwise.
        prior_dim: length of the prior vector; read from the prior when it has ``prior_dim``.
        channel_axis: where the channels are in what each SPIM modulates (an int, or per target name); presets set
            it, and otherwise it is read from the probe (see :func:`infer_channel_axis`).
        position: ``"output"`` (a forward hook modulates the block's output) or ``"input"`` (a forward pre-hook
            modulates its first tensor argument), for every target or per target name; presets set it, and the
            default is ``"output"``. Recorded in the saved config.
        example_inputs: inputs for the probe forward (a tensor, a tuple of args, or ``(args, kwargs)``); presets
            supply small ones.
        load_backbone: when ``prior`` names a checkpoint saved with its backbone's weights, load them into ``model``
            (the default, as the one-line path ``inject_prior(fresh_backbone, prior=NAME)`` needs; logged at INFO on
            the ``spectral_prior`` logger). False keeps the model's own weights (your fine-tuned backbone).
        replace: remove an existing injection first instead of raising.
        hub_kwargs: ``revision``, ``cache_dir``, ``local_files_only``, ``token`` for loading ``prior`` by name;
            any other keyword is a TypeError.
    """
    from .hub import check_hub_options

    check_hub_options(hub_kwargs, inject_prior)
    require_module(model, "inject_prior")
    drop_stale_compiled_code(model)  # before the probe forward, whose hooks compiled code would not run either
    if hasattr(model, INJECTOR_NAME):
        if not replace:
            raise InvalidInputError("this model already has a prior injected; call remove_prior(model) or pass replace=True")
        remove_prior(model)

    checkpoint_dir, saved = None, None
    if isinstance(prior, (str, Path)):
        checkpoint_dir, saved = _load_injected_checkpoint(str(prior), **hub_kwargs)
    saved_injection = saved if saved is not None and saved.get("kind") == "injector" else None
    if saved_injection is not None:  # before any weights load: another backbone would fail on its first key
        _check_backbone_signature(saved_injection, model, checkpoint_dir)
    if saved is not None and saved.get("backbone") and load_backbone:  # first: another architecture fails on its
        load_state_dict_strict(model, load_tensors(checkpoint_dir / BACKBONE_FILE), source=str(checkpoint_dir))
        logger.info("inject_prior: loaded the backbone weights saved in %s into the model", checkpoint_dir)  # first key
    if layers is None and saved_injection is None:
        raise TypeError("inject_prior() needs layers= (a preset name, a regex or module names), unless prior= names "
                        "a saved injection, which records them")
    preset_name = layers if isinstance(layers, str) else None
    if saved_injection is not None and layers is None:
        preset_name, layers = saved_injection["preset"], saved_injection["layers"]
    preset: Preset | None = PRESETS.get(preset_name) if preset_name else None
    condition = condition or (preset.condition if preset else first_argument("x"))
    if saved_injection is not None:
        targets = _saved_targets(model, saved_injection, layers, checkpoint_dir)
        _check_given_channels(channels, saved_injection["channels"], checkpoint_dir)
        channels, channel_axis = saved_injection["channels"], saved_injection["channel_axes"]
        position = saved_positions(saved_injection)
    else:
        targets = _preset_targets(model, preset) if preset else match_targets(model, layers)
        if preset is not None:
            position = preset.position if position is None else position
            channel_axis = preset.channel_axis if channel_axis is None else channel_axis
    positions = _resolve_positions(targets, position)

    if saved is not None:
        prior = build_prior(saved["prior"] if saved_injection is not None else saved)
    if prior is None:
        if prior_dim is None:
            raise InvalidInputError("pass a prior, or prior_dim= for the LinearPrior stand-in")
        prior = LinearPrior(prior_dim)
    prior_dim = _resolve_prior_dim(prior, prior_dim)

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    example = _normalise_example(example_inputs) or (preset.example_inputs(device, dtype) if preset else None)
    probed = _probe_if_needed(model, positions, channels, prior, example, preset, example_inputs is not None)
    prior.to(device=device, dtype=dtype)
    if example is not None:
        _probe_prior(prior, condition, example, prior_dim)

    injector = SpectralPriorInjector(
        prior=prior,
        prior_dim=prior_dim,
        targets=_resolve_channels(positions, channels, channel_axis, probed, example),
        condition=condition,
        layers=layers,
        preset=preset.name if preset else None,
    ).to(device=device, dtype=dtype)
    if saved_injection is not None:
        injector.load_pretrained(checkpoint_dir)
    elif saved is not None:
        load_state_dict_strict(prior, load_tensors(checkpoint_dir / WEIGHTS_FILE), source=str(checkpoint_dir))

    _attach(model, injector)
    return model


def _preset_targets(model: nn.Module, preset: Preset) -> list[str]:
    try:
        return match_targets(model, preset.layers)
    except InvalidInputError:
        raise InvalidInputError(
            f"preset {preset.name!r} matches no module of {type(model).__name__}: is {preset.name!r} this backbone's "
            f"preset? Presets: {', '.join(PRESETS)}; or pass layers= a regex or module names"
        ) from None


def _probe_if_needed(
    model: nn.Module,
    positions: Mapping[str, str],
    channels: int | Mapping[str, int] | None,
    prior: nn.Module,
    example: tuple[tuple, dict] | None,
    preset: Preset | None,
    example_given: bool,
) -> dict[str, Any] | None:
    """The probe forward's features per target, when a channel count is unknown or the prior is lazy; else None."""
    needs_probe = channels is None or (isinstance(channels, Mapping) and not set(positions) <= set(channels))
    needs_probe = needs_probe or any(isinstance(p, nn.parameter.UninitializedParameter) for p in prior.parameters())
    if not needs_probe:
        return None
    if example is None:
        raise InvalidInputError(
            "cannot infer the targets' channels: pass example_inputs= (inputs for one probe forward) or channels="
        )
    try:
        return _probe_targets(model, positions, example)
    except (RuntimeError, ValueError) as err:
        if preset is None or example_given or isinstance(err, InvalidInputError):
            raise
        raise InvalidInputError(
            f"the probe forward of preset {preset.name!r} fails on {type(model).__name__} ({_first_line(err)}): is "
            f"{preset.name!r} this backbone's preset? Presets: {', '.join(PRESETS)}; or pass example_inputs="
        ) from err


def saved_positions(config: Mapping[str, Any]) -> dict[str, str]:
    """Each saved target's position; files written before positions existed modulated block outputs."""
    return dict(config.get("positions") or {name: "output" for name in config["targets"]})


def _saved_targets(model: nn.Module, saved: Mapping[str, Any], layers: Layers, directory: Path) -> list[str]:
    """The targets a saved injection records (not its preset re-resolved: presets change, files do not), checked
    against this model and against ``layers`` when it was given."""
    recorded = list(saved["targets"])
    names = {name for name, _ in model.named_modules()}
    missing = [name for name in recorded if name not in names]
    where = f"{directory} was trained for the blocks {recorded} (backbone {saved.get('backbone', {}).get('class', '?')})"
    if missing:
        raise InvalidInputError(f"{where}, but this model has no module {missing[0]!r}")
    if layers not in (saved["layers"], saved["preset"]):
        pattern = PRESETS[layers].layers if isinstance(layers, str) and layers in PRESETS else layers
        selected = match_targets(model, pattern)
        if selected != recorded:
            raise InvalidInputError(f"{where}, but layers selects {selected} here; leave layers out to use them")
    return recorded


def _check_given_channels(given: Any, saved: Mapping[str, int], directory: Path) -> None:
    if given is None:
        return
    expected = {name: given for name in saved} if isinstance(given, int) else dict(given)
    wrong = {name: (value, saved[name]) for name, value in expected.items() if name in saved and saved[name] != value}
    if wrong:
        details = ", ".join(f"{name}: {value} given, {was} saved" for name, (value, was) in wrong.items())
        raise InvalidInputError(f"channels= disagrees with the injection saved in {directory} ({details}); leave it out")


def _resolve_prior_dim(prior: nn.Module, prior_dim: int | None) -> int:
    own = getattr(prior, "prior_dim", None)
    if prior_dim is not None and own is not None and own != prior_dim:
        raise InvalidInputError(f"prior_dim={prior_dim} but the prior produces vectors of length {own}")
    resolved = prior_dim if prior_dim is not None else own
    if resolved is None:
        raise InvalidInputError(f"cannot tell the length of {type(prior).__name__}'s vectors: pass prior_dim=")
    return resolved


def backbone_signature(model: nn.Module) -> dict[str, Any]:
    """What identifies a backbone variant without its weights: its class and parameter count (MST-S vs MST-L)."""
    parameters = sum(p.numel() for name, p in model.named_parameters() if not name.startswith(INJECTOR_NAME + "."))
    return {"class": type(model).__name__, "parameters": parameters}


def _check_backbone_signature(saved: Mapping[str, Any], model: nn.Module, directory: Path) -> None:
    trained, here = saved.get("trained_with"), backbone_signature(model)
    if trained is not None and trained != here:
        raise InvalidInputError(
            f"{directory} was trained with a {trained['class']} of {trained['parameters']:,} parameters, but this model "
            f"is a {here['class']} of {here['parameters']:,}: a prior and its SPIMs belong to the backbone variant "
            "they were trained with"
        )


def drop_stale_compiled_code(model: nn.Module) -> None:
    """Make code compiled for ``model``'s module classes trace its hooks again; other compiled code is kept.

    ``torch.compile`` does not guard on nn-module hooks (``torch._dynamo.config.skip_nnmodule_hook_guards``), and it
    caches compiled code per ``forward`` of a class, shared by every instance. Code compiled before :func:`inject_prior`
    (``model.compile()``, ``torch.compile(model)``, or another model of the same class) would run this model bare, and
    code compiled before :func:`remove_prior` would keep modulating. Injection and removal therefore drop the compiled
    code of the ``forward`` of every class in ``model``: those recompile on their next call. Code compiled for a
    module that contains ``model`` (an outer wrapper) is not seen: compile that after injecting.
    """
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is None:
        return
    for cls in {type(module) for module in model.modules()}:
        forward = getattr(cls.forward, "__code__", None)
        if forward is not None:
            dynamo.reset_code(forward)


def _attach(model: nn.Module, injector: SpectralPriorInjector) -> None:
    injector.backbone_signature = backbone_signature(model)
    model.add_module(INJECTOR_NAME, injector)
    handles = [
        model.register_forward_pre_hook(_compute_prior_hook, with_kwargs=True),
        model.register_forward_hook(_forget_prior_hook, always_call=True),
    ]
    modules = dict(model.named_modules())
    for name, position in injector.positions.items():
        hook = HOOKS[position](injector, name)
        register = modules[name].register_forward_hook if position == "output" else modules[name].register_forward_pre_hook
        handles.append(register(hook))
    injector._handles = handles


def require_module(model: Any, caller: str) -> None:
    """TypeError unless ``model`` is an ``nn.Module`` (a backbone's name is not: build the backbone first)."""
    if isinstance(model, nn.Module):
        return
    hint = f": build it first, e.g. create_backbone({model!r})" if isinstance(model, str) else ""
    raise TypeError(f"{caller}() takes the model (an nn.Module), got the {type(model).__name__} {model!r}{hint}")


def remove_prior(model: nn.Module) -> nn.Module:
    """Remove every hook and the ``spectral_prior`` child: the model is the bare backbone again. Returns ``model``."""
    require_module(model, "remove_prior")
    injector = getattr(model, INJECTOR_NAME, None)
    if not isinstance(injector, SpectralPriorInjector):
        raise InvalidInputError(f"{type(model).__name__} has no injected prior to remove")
    for handle in injector._handles:
        handle.remove()
    injector._handles = []
    delattr(model, INJECTOR_NAME)
    drop_stale_compiled_code(model)
    return model


def get_injector(model: nn.Module) -> SpectralPriorInjector:
    """The injector of an injected model (``model.spectral_prior``); a clear error if there is none."""
    injector = getattr(model, INJECTOR_NAME, None)
    if not isinstance(injector, SpectralPriorInjector):
        raise InvalidInputError(f"{type(model).__name__} has no injected prior: call inject_prior(model, layers=...) first")
    return injector
