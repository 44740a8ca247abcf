"""Which blocks an injection modulates, and what they look like: name matching (a regex or names, as peft's
``target_modules``), and the probe forward that finds each target's channel count and axis."""
from __future__ import annotations

import difflib
import re
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError
from .injector import HOOKS, INJECTOR_NAME, Layers, TargetSpec
from .presets import PRESETS, Condition, Preset


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


def preset_targets(model: nn.Module, preset: Preset) -> list[str]:
    try:
        return match_targets(model, preset.layers)
    except InvalidInputError:
        raise InvalidInputError(
            f"preset {preset.name!r} matches no module of {type(model).__name__}: is {preset.name!r} this backbone's "
            f"preset? Presets: {', '.join(PRESETS)}; or pass layers= a regex or module names"
        ) from None


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
def probe_prior(prior: nn.Module, condition: Condition, example: tuple[tuple, dict], prior_dim: int) -> None:
    """Run the prior once on the example's condition: materialises lazy layers and checks the output width."""
    with _eval_mode(prior):
        z = prior(condition(*example))
    if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[-1] != prior_dim:
        shape = list(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise InvalidInputError(f"the prior returned {shape}, expected a tensor [B, {prior_dim}]")


def probe_if_needed(
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


def _per_target(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, Mapping) else value


def resolve_positions(targets: Sequence[str], position: Any) -> dict[str, str]:
    positions = {name: _per_target(position, name) or "output" for name in targets}
    wrong = {name: value for name, value in positions.items() if value not in HOOKS}
    if wrong:
        name, value = next(iter(wrong.items()))
        raise InvalidInputError(f"position {value!r} for target {name!r}; a SPIM acts on the block's 'input' or 'output'")
    return positions


def resolve_channels(
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


def normalise_example(example: Any) -> tuple[tuple, dict] | None:
    if example is None:
        return None
    if isinstance(example, Tensor):
        return (example,), {}
    if isinstance(example, tuple) and len(example) == 2 and isinstance(example[1], dict):
        return tuple(example[0]), example[1]
    return tuple(example), {}
