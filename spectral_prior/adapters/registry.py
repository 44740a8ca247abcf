"""Backbones by name: ``create_backbone("mst_s")`` and the preset each one is injected and trained with."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from .bisrnet import bisrnet
from .mst import mst_l, mst_m, mst_s
from .presets import Preset, get_preset


@dataclass(frozen=True)
class BackboneEntry:
    """A named backbone: its constructor and the name of its preset (blocks, prior input, CASSI inputs)."""

    name: str
    build: Callable[..., nn.Module]
    preset: str


BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(name: str, build: Callable[..., nn.Module], preset: str) -> None:
    """Make ``create_backbone(name)`` build ``build()``, injected and trained with the preset ``preset``."""
    get_preset(preset)  # fails early on an unknown preset
    BACKBONES[name] = BackboneEntry(name=name, build=build, preset=preset)


def _entry(name: str) -> BackboneEntry:
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"no backbone {name!r}; known backbones: {sorted(BACKBONES)}") from None


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """A fresh backbone by name (``"mst_s"``, ``"mst_m"``, ``"mst_l"``, ``"bisrnet"``); kwargs go to its constructor."""
    return _entry(name).build(**kwargs)


def backbone_preset(name: str) -> Preset:
    """The preset of the backbone called ``name``."""
    return get_preset(_entry(name).preset)


def list_backbones() -> list[str]:
    """Names :func:`create_backbone` accepts."""
    return sorted(BACKBONES)


for _name, _build in (("mst_s", mst_s), ("mst_m", mst_m), ("mst_l", mst_l)):
    register_backbone(_name, _build, preset="mst")
register_backbone("bisrnet", bisrnet, preset="bisrnet")
