"""``inject_prior`` / ``remove_prior``: SPIM modulation of chosen blocks of any backbone, through forward hooks.

How a forward pass of an injected model flows:

1. A forward pre-hook on the root (``with_kwargs=True``) maps the forward arguments to the prior's input with the
   ``condition`` and computes the prior once: ``z = prior(condition(args, kwargs))``.
2. A forward hook on each target block returns ``spim(output, z)``.
3. A root forward hook registered with ``always_call=True`` forgets ``z``, so an exception never leaves it behind.

The hooks are plain functions that find the injector through the module they run on, and ``z`` lives in
thread-local storage, so DataParallel replicas (which share their hooks and run in threads) and models used from
several threads never see each other's prior. In training mode each target also remembers the prior it used for its
input tensor, so that ``torch.utils.checkpoint`` (``use_reentrant=False``, PyTorch's recommended variant) finds
it again when it re-runs the block during backward. The legacy re-entrant variant cannot send gradients to a prior
computed outside the checkpointed call, so it is not supported.
"""
from __future__ import annotations

import difflib
import logging
import re
import sys
import threading
import uuid
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, Union

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
from .spim import SPIM, default_channel_axis

logger = logging.getLogger("spectral_prior")

INJECTOR_NAME = "spectral_prior"
Layers = Union[str, Sequence[str]]

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


class _ModulateOutput:
    """Forward hook of one target block: its output modulated by the SPIM of that block."""

    def __init__(self, key: str, name: str) -> None:
        self.key = key
        self.name = name
        self._remembered: dict[tuple, tuple[SpectralPriorInjector, Tensor]] = {}

    def __call__(self, module: nn.Module, args: tuple, output: Any) -> Any:
        active = _active_priors().get(self.key)
        if active is None:  # outside a root forward: a checkpoint re-running this block during backward?
            active = self._recall(args)
        elif module.training and active[1] is not None and not torch.compiler.is_compiling():
            self._remember(args, active)  # (compiled code traces a checkpoint's recomputation with the prior active)
        if active is None or active[1] is None:
            return None
        injector, z = active
        if not isinstance(output, Tensor):
            raise TypeError(
                f"target {self.name!r} returned {type(output).__name__}; SPIM modulates a tensor [B, C, ...]. "
                "Choose blocks that return one tensor."
            )
        return injector.spims[_spim_key(self.name)](output, z, channel_axis=injector.channel_axes[self.name])

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
        targets: Mapping[str, tuple[int, int]],
        condition: Condition,
        layers: Layers,
        preset: str | None,
    ) -> None:
        super().__init__()
        self.prior = prior
        self.spims = nn.ModuleDict({_spim_key(name): SPIM(prior_dim, channels) for name, (channels, _) in targets.items()})
        self.prior_dim = prior_dim
        self.targets = list(targets)
        self.channels = {name: channels for name, (channels, _) in targets.items()}
        self.channel_axes = {name: axis for name, (_, axis) in targets.items()}
        self.condition = condition
        self.layers = layers if isinstance(layers, str) else list(layers)
        self.preset = preset
        self.key = uuid.uuid4().hex
        self.enabled = True
        self._teacher_gt: Tensor | None = None
        self._distilled: list[tuple[Tensor, Tensor]] | None = None
        self._distill_noise: Tensor | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.backbone_signature: dict[str, Any] | None = None  # set when attached: the class and size of the backbone

    def compute_prior(self, condition: Tensor) -> Tensor:
        """The prior vector for one forward: the teacher's inside :meth:`teacher`, the distilled student's inside
        :meth:`distill`, else the prior's own."""
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
        if config["targets"] != self.targets or config["channels"] != self.channels:
            raise InvalidInputError(
                f"{directory} was saved for targets {config['targets']} with channels {config['channels']}; this "
                f"model's injection has {self.targets} with {self.channels}"
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


@torch.no_grad()
def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _probe_targets(model: nn.Module, targets: Sequence[str], example: tuple[tuple, dict]) -> dict[str, Any]:
    """Run ``model`` once in eval mode on ``example`` and return each target's output."""
    outputs: dict[str, Any] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(lambda _m, _a, out, name=name: outputs.setdefault(name, out))
        for name in targets
    ]
    try:
        with _eval_mode(model):
            model(*example[0], **example[1])
    finally:
        for handle in handles:
            handle.remove()
    return outputs


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


def _resolve_channels(
    targets: Sequence[str],
    channels: int | Mapping[str, int] | None,
    channel_axis: int | Mapping[str, int] | None,
    probed: Mapping[str, Any] | None,
) -> dict[str, tuple[int, int]]:
    resolved = {}
    for name in targets:
        given, axis = _per_target(channels, name), _per_target(channel_axis, name)
        if probed is None:
            if given is None:
                raise InvalidInputError(f"no channel count for target {name!r}: pass channels= or example_inputs=")
            resolved[name] = (given, 1 if axis is None else axis)
            continue
        output = probed.get(name)
        if not isinstance(output, Tensor) or output.dim() < 2:
            kind = f"a tensor of shape {list(output.shape)}" if isinstance(output, Tensor) else type(output).__name__
            raise TypeError(
                f"target {name!r} returns {kind}; SPIM modulates a tensor [B, C, ...] output. "
                "Choose blocks that return one tensor."
            )
        axis = default_channel_axis(output.dim()) if axis is None else axis
        found = output.shape[axis]
        if given is not None and given != found:
            raise InvalidInputError(f"channels[{name!r}] = {given}, but the block outputs {found} channels on axis {axis}")
        resolved[name] = (found, axis)
    return resolved


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
    channel_axis: int | None = None,
    example_inputs: Any = None,
    load_backbone: bool = True,
    replace: bool = False,
    **hub_kwargs: Any,
) -> nn.Module:
    """Wrap the ``layers`` of ``model`` with SPIM modulation driven by ``prior``; returns ``model``, changed in place.

    Args:
        model: any ``nn.Module``.
        layers: a preset name (``"mst"``, ``"bisrnet"``), a regex matched with ``re.fullmatch`` against dotted module
            names, or a list of module names or dotted suffixes (as peft's ``target_modules``). May be left out when
            ``prior`` names a saved injection, which records its layers.
        prior: a prior module; a directory, Hub repo id, embedded or published name of a saved prior or injected
            checkpoint (prior + SPIMs, and the backbone weights when saved with them); or None for a
            :class:`LinearPrior` stand-in of ``prior_dim``.
        condition: ``condition(args, kwargs) -> Tensor``, the prior's input from the forward arguments; presets
            supply it, and by default it is the first positional argument.
        channels: channel count of every target (an int) or per target name; inferred by a probe forward otherwise.
        prior_dim: length of the prior vector; read from the prior when it has ``prior_dim``.
        channel_axis: where the channels are in the targets' outputs; by default the last axis of 3-D outputs
            (tokens [B, N, C]) and axis 1 otherwise ([B, C, ...]).
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

    check_hub_options(hub_kwargs, "inject_prior")
    drop_stale_compiled_code()  # before the probe forward, whose hooks compiled code would not run either
    if hasattr(model, INJECTOR_NAME):
        if not replace:
            raise InvalidInputError("this model already has a prior injected; call remove_prior(model) or pass replace=True")
        remove_prior(model)

    checkpoint_dir, saved = None, None
    if isinstance(prior, (str, Path)):
        checkpoint_dir, saved = _load_injected_checkpoint(str(prior), **hub_kwargs)
    if layers is None:
        if saved is None or saved.get("kind") != "injector":
            raise TypeError("inject_prior() needs layers= (a preset name, a regex or module names), unless prior= names "
                            "a saved injection, which records them")
        layers = saved["preset"] or saved["layers"]
    preset: Preset | None = PRESETS.get(layers) if isinstance(layers, str) else None
    pattern = preset.layers if preset else layers
    condition = condition or (preset.condition if preset else first_argument("x"))
    targets = match_targets(model, pattern)

    if saved is not None:
        if saved.get("backbone") and load_backbone:  # first: another architecture fails on its first mismatched key
            load_state_dict_strict(model, load_tensors(checkpoint_dir / BACKBONE_FILE), source=str(checkpoint_dir))
            logger.info("inject_prior: loaded the backbone weights saved in %s into the model", checkpoint_dir)
        if saved.get("kind") == "injector":
            _check_backbone_signature(saved, model, checkpoint_dir)
            _check_saved_targets(saved, targets, checkpoint_dir)
            _check_given_channels(channels, saved["channels"], checkpoint_dir)
            channels, channel_axis = saved["channels"], saved["channel_axes"]
        prior = build_prior(saved["prior"] if saved.get("kind") == "injector" else saved)
    if prior is None:
        if prior_dim is None:
            raise InvalidInputError("pass a prior, or prior_dim= for the LinearPrior stand-in")
        prior = LinearPrior(prior_dim)
    prior_dim = _resolve_prior_dim(prior, prior_dim)

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    example = _normalise_example(example_inputs) or (preset.example_inputs(device, dtype) if preset else None)
    needs_probe = channels is None or (isinstance(channels, Mapping) and not set(targets) <= set(channels))
    lazy_prior = any(isinstance(p, nn.parameter.UninitializedParameter) for p in prior.parameters())
    needs_probe = needs_probe or lazy_prior  # a lazy prior learns its input width from the probe
    probed = None
    if needs_probe:
        if example is None:
            raise InvalidInputError(
                "cannot infer the targets' channels: pass example_inputs= (inputs for one probe forward) or channels="
            )
        try:
            probed = _probe_targets(model, targets, example)
        except (RuntimeError, ValueError) as err:
            if preset is None or example_inputs is not None:
                raise
            raise InvalidInputError(
                f"the probe forward of preset {preset.name!r} fails on {type(model).__name__} ({_first_line(err)}): is "
                f"{preset.name!r} this backbone's preset? Presets: {', '.join(PRESETS)}; or pass example_inputs="
            ) from err
    prior.to(device=device, dtype=dtype)
    if example is not None:
        _probe_prior(prior, condition, example, prior_dim)

    injector = SpectralPriorInjector(
        prior=prior,
        prior_dim=prior_dim,
        targets=_resolve_channels(targets, channels, channel_axis, probed),
        condition=condition,
        layers=layers,
        preset=preset.name if preset else None,
    ).to(device=device, dtype=dtype)
    if saved is not None and saved.get("kind") == "injector":
        injector.load_pretrained(checkpoint_dir)
    if saved is not None and saved.get("kind") == "prior":
        load_state_dict_strict(prior, load_tensors(checkpoint_dir / WEIGHTS_FILE), source=str(checkpoint_dir))

    _attach(model, injector)
    return model


def _check_given_channels(given: Any, saved: Mapping[str, int], directory: Path) -> None:
    if given is None:
        return
    expected = {name: given for name in saved} if isinstance(given, int) else dict(given)
    wrong = {name: (value, saved[name]) for name, value in expected.items() if name in saved and saved[name] != value}
    if wrong:
        details = ", ".join(f"{name}: {value} given, {was} saved" for name, (value, was) in wrong.items())
        raise InvalidInputError(f"channels= disagrees with the injection saved in {directory} ({details}); leave it out")


def _check_saved_targets(saved: Mapping[str, Any], targets: Sequence[str], directory: Path) -> None:
    if list(saved["targets"]) != list(targets):
        raise InvalidInputError(
            f"{directory} was trained for the blocks {saved['targets']} "
            f"(backbone {saved.get('backbone', {}).get('class', '?')}), but layers selects {list(targets)} here"
        )


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


def drop_stale_compiled_code() -> None:
    """Make code compiled before the hooks changed trace them again.

    ``torch.compile`` does not guard on nn-module hooks (``torch._dynamo.config.skip_nnmodule_hook_guards``), so a
    model compiled before :func:`inject_prior` (``model.compile()`` or ``torch.compile(model)``) would keep running
    bare, and one compiled before :func:`remove_prior` would keep modulating. When anything has been compiled in this
    process, injection and removal therefore clear dynamo's caches: compiled functions recompile on their next call.
    """
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None and dynamo.utils.counters["frames"]["ok"]:
        dynamo.reset()


def _attach(model: nn.Module, injector: SpectralPriorInjector) -> None:
    injector.backbone_signature = backbone_signature(model)
    model.add_module(INJECTOR_NAME, injector)
    handles = [
        model.register_forward_pre_hook(_compute_prior_hook, with_kwargs=True),
        model.register_forward_hook(_forget_prior_hook, always_call=True),
    ]
    modules = dict(model.named_modules())
    handles += [modules[name].register_forward_hook(_ModulateOutput(injector.key, name)) for name in injector.targets]
    injector._handles = handles


def remove_prior(model: nn.Module) -> nn.Module:
    """Remove every hook and the ``spectral_prior`` child: the model is the bare backbone again. Returns ``model``."""
    injector = getattr(model, INJECTOR_NAME, None)
    if not isinstance(injector, SpectralPriorInjector):
        raise InvalidInputError(f"{type(model).__name__} has no injected prior to remove")
    for handle in injector._handles:
        handle.remove()
    injector._handles = []
    delattr(model, INJECTOR_NAME)
    drop_stale_compiled_code()
    return model


def get_injector(model: nn.Module) -> SpectralPriorInjector:
    """The injector of an injected model (``model.spectral_prior``); a clear error if there is none."""
    injector = getattr(model, INJECTOR_NAME, None)
    if not isinstance(injector, SpectralPriorInjector):
        raise InvalidInputError(f"{type(model).__name__} has no injected prior: call inject_prior(model, layers=...) first")
    return injector
