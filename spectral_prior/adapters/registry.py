"""Backbones by name: ``create_backbone("mst_s")`` and the preset each one is injected and trained with."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..errors import InvalidInputError, UnknownNameError
from .bisrnet import bisrnet
from .mst import mst_l, mst_m, mst_s
from .mst_plus_plus import mst_plus_plus
from ..sdp.presets import Preset, get_preset


@dataclass(frozen=True)
class BackboneEntry:
    """A named backbone: its constructor, the name of its preset (blocks, prior input, CASSI inputs) and the
    learning-rate schedule its authors trained it with (``"multistep"`` or ``"cosine"``)."""

    name: str
    build: Callable[..., nn.Module]
    preset: str
    schedule: str = "cosine"


BACKBONES: dict[str, BackboneEntry] = {
    entry.name: entry
    for entry in (
        BackboneEntry("mst_s", mst_s, "mst", "multistep"),
        BackboneEntry("mst_m", mst_m, "mst", "multistep"),
        BackboneEntry("mst_l", mst_l, "mst", "multistep"),
        BackboneEntry("mst_plus_plus", mst_plus_plus, "mst_plus_plus"),
        BackboneEntry("bisrnet", bisrnet, "bisrnet"),
    )
}
"""The built-in backbones; :func:`register_backbone` adds yours."""


def register_backbone(name: str, build: Callable[..., nn.Module], preset: str, *, schedule: str = "cosine") -> None:
    """Make ``create_backbone(name)`` build ``build()``, injected and trained with the preset ``preset``."""
    get_preset(preset)  # fails early on an unknown preset
    if schedule not in ("multistep", "cosine"):
        raise InvalidInputError(f"schedule must be 'multistep' or 'cosine', got {schedule!r}")
    BACKBONES[name] = BackboneEntry(name=name, build=build, preset=preset, schedule=schedule)


def _entry(name: str) -> BackboneEntry:
    try:
        return BACKBONES[name]
    except KeyError:
        raise UnknownNameError(f"no backbone {name!r}; known backbones: {sorted(BACKBONES)}") from None


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """A fresh backbone by name (one of :func:`list_backbones`, e.g. ``"mst_l"``); kwargs go to its constructor."""
    return _entry(name).build(**kwargs)


def backbone_preset(name: str) -> Preset:
    """The preset of the backbone called ``name``."""
    return get_preset(_entry(name).preset)


def backbone_schedule(name: str) -> str:
    """The learning-rate schedule the MST toolbox trains the backbone ``name`` with."""
    return _entry(name).schedule


def list_backbones() -> list[str]:
    """Names :func:`create_backbone` accepts."""
    return sorted(BACKBONES)

