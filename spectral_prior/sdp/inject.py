"""Building, loading and removing an injection: ``inject_prior`` (build, or a thin call to ``load_injection``),
``load_injection`` (a saved prior or injection) and ``remove_prior``.

As peft separates ``get_peft_model`` (build) from ``PeftModel.from_pretrained`` (load). The hooks and the injector
module live in :mod:`.injector`, target matching and probing in :mod:`.targets`.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import InvalidInputError
from ..io import load_state_dict_strict
from ..saving.format import BACKBONE_FILE, WEIGHTS_FILE
from ..saving.hub import check_hub_options
from ..saving.load import Saved, open_saved
from .config import InjectionConfig
from .injector import _forget_prior_hook, _compute_prior_hook, HOOKS, INJECTOR_NAME, Layers, Position, SpectralPriorInjector
from .presets import PRESETS, Condition, Preset, first_argument
from .prior import LinearPrior, build_prior
from .targets import (
    match_targets,
    normalise_example,
    preset_targets,
    probe_if_needed,
    probe_prior,
    resolve_channels,
    resolve_positions,
)

logger = logging.getLogger("spectral_prior")


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
        layers: a preset name (``"mst"``, ``"bisrnet"``, see :data:`spectral_prior.sdp.PRESETS`), a regex
            matched with ``re.fullmatch`` against dotted module names, or a list of module names or dotted suffixes
            (as peft's ``target_modules``). May be left out when ``prior`` names a saved injection, which records
            its targets.
        prior: a prior module, or None for a :class:`LinearPrior` stand-in of ``prior_dim``; or the directory, Hub
            repo id, embedded or published name of a saved prior or injection, which :func:`load_injection` loads
            (this call is then a thin call to it).
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
        load_backbone: see :func:`load_injection` (used when ``prior`` names a saved one).
        hub_kwargs: see :func:`load_injection`; any other keyword is a TypeError.
        replace: remove an existing injection first instead of raising.
    """
    check_hub_options(hub_kwargs, inject_prior)
    if isinstance(prior, (str, Path)):
        return load_injection(
            model, prior, layers=layers, condition=condition, channels=channels, prior_dim=prior_dim,
            channel_axis=channel_axis, position=position, example_inputs=example_inputs, load_backbone=load_backbone,
            replace=replace, **hub_kwargs,
        )
    _make_room(model, replace)
    if layers is None:
        raise TypeError("inject_prior() needs layers= (a preset name, a regex or module names), unless prior= names "
                        "a saved injection, which records them")
    preset = PRESETS.get(layers) if isinstance(layers, str) else None
    targets = preset_targets(model, preset) if preset else match_targets(model, layers)
    _build(model, targets, layers=layers, preset=preset, prior=prior, condition=condition, channels=channels,
           prior_dim=prior_dim, channel_axis=channel_axis, position=position, example_inputs=example_inputs)
    return model


def load_injection(
    model: nn.Module,
    source: str | Path | Saved,
    *,
    layers: Layers | None = None,
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
    """Inject a saved injection or prior into ``model``; returns ``model``, changed in place.

    Args:
        model: the backbone the injection was trained with (its class and size are checked first).
        source: a directory, Hub repo id (``"owner/name[@revision]"``), embedded or published name (or a folder
            :func:`~spectral_prior.saving.open_saved` opened).
        layers: for a saved injection, may be left out (it records its targets; given, it must select them); a saved
            bare prior needs it, as :func:`inject_prior` does.
        condition: as for :func:`inject_prior`.
        channels: as for :func:`inject_prior`; for a saved injection it must agree with what it recorded.
        prior_dim: as for :func:`inject_prior`; it must agree with the saved prior's.
        channel_axis: as for :func:`inject_prior`; for a saved injection it must agree with what it recorded.
        position: as for :func:`inject_prior`; for a saved injection it must agree with what it recorded.
        example_inputs: as for :func:`inject_prior`.
        load_backbone: when the injection was saved with its backbone's weights, load them into ``model`` (the
            default, as the one-line ``load_injection(fresh_backbone, NAME)`` needs; logged at INFO on the
            ``spectral_prior`` logger). False keeps the model's own weights (your fine-tuned backbone).
        replace: remove an existing injection first instead of raising.
        hub_kwargs: ``revision``, ``cache_dir``, ``local_files_only``, ``token``.
    """
    check_hub_options(hub_kwargs, load_injection)
    _make_room(model, replace)
    files = (WEIGHTS_FILE, BACKBONE_FILE) if load_backbone else (WEIGHTS_FILE,)
    saved = source if isinstance(source, Saved) else open_saved(source, files=files, **hub_kwargs)
    if saved.kind == "prior":
        if layers is None:
            raise TypeError(f"{saved.directory} holds a bare prior, which records no blocks: pass layers= (a preset "
                            "name, a regex or module names)")
        prior = build_prior(saved.config)
        load_state_dict_strict(prior, saved.tensors(WEIGHTS_FILE), source=str(saved.directory))
        return inject_prior(model, layers, prior, condition=condition, channels=channels, prior_dim=prior_dim,
                            channel_axis=channel_axis, position=position, example_inputs=example_inputs)
    if saved.kind != "injector":
        raise InvalidInputError(f"{saved.directory} holds a bare {saved.kind}, not a prior: load it with load_model")
    record = InjectionConfig.from_dict(saved.config)
    _check_backbone_signature(record, model, saved.directory)  # before any weights load: another backbone would fail
    if record.backbone and load_backbone:  # on its first key
        load_state_dict_strict(model, saved.tensors(BACKBONE_FILE), source=str(saved.directory))
        logger.info("load_injection: loaded the backbone weights saved in %s into the model", saved.directory)
    for option, given, recorded in (("channels", channels, record.channels),
                                    ("channel_axis", channel_axis, record.channel_axes),
                                    ("position", position, record.positions),
                                    ("prior_dim", prior_dim, {"prior": record.prior_dim})):
        _check_given(option, given, recorded, saved.directory)
    injector = _build(
        model, _saved_targets(model, record, layers, saved.directory), layers=record.layers,
        preset=PRESETS.get(record.preset) if record.preset else None, prior=build_prior(record.prior),
        condition=condition, channels=record.channels, prior_dim=record.prior_dim, channel_axis=record.channel_axes,
        position=record.positions, example_inputs=example_inputs,
    )
    injector.load_pretrained(saved)
    return model


def _make_room(model: nn.Module, replace: bool) -> None:
    """Check ``model`` and clear the way for a new injection (removing the present one only when ``replace``)."""
    require_module(model, "inject_prior")
    if isinstance(model, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        raise InvalidInputError(
            f"inject_prior: cannot attach the prior to a bare {type(model).__name__}, which would run or list it as one "
            "of its own entries; wrap it in an nn.Module whose forward calls it"
        )
    drop_stale_compiled_code(model)  # before the probe forward, whose hooks compiled code would not run either
    if hasattr(model, INJECTOR_NAME):
        if not replace:
            raise InvalidInputError("this model already has a prior injected; call remove_prior(model) or pass replace=True")
        remove_prior(model)


def _build(
    model: nn.Module,
    targets: list[str],
    *,
    layers: Layers,
    preset: Preset | None,
    prior: nn.Module | None,
    condition: Condition | None,
    channels: int | Mapping[str, int] | None,
    prior_dim: int | None,
    channel_axis: int | Mapping[str, int] | None,
    position: Any,
    example_inputs: Any,
) -> SpectralPriorInjector:
    """Probe what is unknown, build the injector for ``targets`` and attach it to ``model``."""
    condition = condition or (preset.condition if preset else first_argument("x"))
    if preset is not None:
        position = preset.position if position is None else position
        channel_axis = preset.channel_axis if channel_axis is None else channel_axis
    positions = resolve_positions(targets, position)
    if prior is None:
        if prior_dim is None:
            raise InvalidInputError("pass a prior, or prior_dim= for the LinearPrior stand-in")
        prior = LinearPrior(prior_dim)
    prior_dim = _resolve_prior_dim(prior, prior_dim)

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    example = normalise_example(example_inputs) or (preset.example_inputs(device, dtype) if preset else None)
    probed = probe_if_needed(model, positions, channels, prior, example, preset, example_inputs is not None)
    prior.to(device=device, dtype=dtype)
    if example is not None:
        probe_prior(prior, condition, example, prior_dim)
    injector = SpectralPriorInjector(
        prior=prior,
        prior_dim=prior_dim,
        targets=resolve_channels(positions, channels, channel_axis, probed, example),
        condition=condition,
        layers=layers,
        preset=preset.name if preset else None,
    ).to(device=device, dtype=dtype)
    _attach(model, injector)
    return injector


def _saved_targets(model: nn.Module, saved: InjectionConfig, layers: Layers | None, directory: Path) -> list[str]:
    """The targets a saved injection records (not its preset re-resolved: presets change, files do not), checked
    against this model and against ``layers`` when it was given."""
    recorded = list(saved.targets)
    names = {name for name, _ in model.named_modules()}
    missing = [name for name in recorded if name not in names]
    where = f"{directory} was trained for the blocks {recorded} (backbone {(saved.backbone or {}).get('class', '?')})"
    if missing:
        raise InvalidInputError(f"{where}, but this model has no module {missing[0]!r}")
    if layers is not None and layers not in (saved.layers, saved.preset):
        pattern = PRESETS[layers].layers if isinstance(layers, str) and layers in PRESETS else layers
        selected = match_targets(model, pattern)
        if selected != recorded:
            raise InvalidInputError(f"{where}, but layers selects {selected} here; leave layers out to use them")
    return recorded


def _check_given(option: str, given: Any, saved: Mapping[str, Any], directory: Path) -> None:
    """An option given with a saved injection must agree with what it recorded (one value, or one per target)."""
    if given is None:
        return
    expected = dict(given) if isinstance(given, Mapping) else {name: given for name in saved}
    wrong = {name: (value, saved[name]) for name, value in expected.items() if name in saved and saved[name] != value}
    if wrong:
        details = ", ".join(f"{name}: {value!r} given, {was!r} saved" for name, (value, was) in wrong.items())
        raise InvalidInputError(f"{option}= disagrees with the injection saved in {directory} ({details}); leave it out")


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


def _check_backbone_signature(saved: InjectionConfig, model: nn.Module, directory: Path) -> None:
    trained, here = saved.trained_with, backbone_signature(model)
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
