"""Aliases that keep the module paths of the flat 0.1 layout importable for one release, with a DeprecationWarning."""
from __future__ import annotations

import importlib
import sys
import types
import warnings
from typing import Any

MOVED: dict[str, tuple[str, ...]] = {
    "spectral_prior.inject": ("spectral_prior.sdp.inject", "spectral_prior.sdp.injector", "spectral_prior.sdp.targets"),
    "spectral_prior.prior": ("spectral_prior.sdp.prior",),
    "spectral_prior.spim": ("spectral_prior.sdp.spim",),
    "spectral_prior.hfe": ("spectral_prior.sdp.hfe",),
    "spectral_prior.diffusion": ("spectral_prior.sdp.diffusion",),
    "spectral_prior.adapters.presets": ("spectral_prior.sdp.presets",),
    "spectral_prior.saved": ("spectral_prior.saving.format", "spectral_prior.saving.load", "spectral_prior.saving.cards",
                             "spectral_prior.saving.write"),
    "spectral_prior.hub": ("spectral_prior.saving.hub",),
    "spectral_prior.metrics": ("spectral_prior.evaluation.metrics",),
    "spectral_prior.evaluate": ("spectral_prior.evaluation", "spectral_prior.models", "spectral_prior.devices",
                                "spectral_prior.cli.eval"),
    "spectral_prior.reconstruct": ("spectral_prior.inference", "spectral_prior.cli.reconstruct"),
    "spectral_prior.train": ("spectral_prior.training", "spectral_prior.training.config", "spectral_prior.training.stages",
                             "spectral_prior.cli.train"),
    "spectral_prior.timm_models": ("spectral_prior.integrations.timm",),
    "spectral_prior.commands": ("spectral_prior.cli.common", "spectral_prior.devices", "spectral_prior.models"),
    "spectral_prior.demo": ("spectral_prior.cli.demo",),
}
"""Old module path -> the modules its names live in now (the first is its main home)."""

REMOVED: dict[str, str] = {
    "spectral_prior.saved.save_mask": "pass mask= to save_pretrained or save_backbone",
    "spectral_prior.saved.add_to_config": "pass extra_config= to save_pretrained or save_backbone",
    "spectral_prior.saved.write_card": "saving.write_saved writes the card with the rest of the folder",
    "spectral_prior.saved.model_card": "use spectral_prior.saving.cards.injection_card",
    "spectral_prior.inject.saved_positions": "configs read by spectral_prior.saving.read_config always hold positions",
    "spectral_prior.demo.demo_mask": "use spectral_prior.models.mask_for_models",
    "spectral_prior.demo.reconstruct": "use spectral_prior.evaluation.evaluate",
    "spectral_prior.demo.scores": "use spectral_prior.evaluation.evaluate",
}
"""Names of the old modules that have no new home, and what to do instead."""


class _Alias(types.ModuleType):
    """An old module whose names now live in several modules: each is looked up in them, in order."""

    def __init__(self, old: str, homes: tuple[str, ...]) -> None:
        super().__init__(old, f"Moved to {', '.join(homes)} (this alias goes away in 0.3).")
        self._homes = homes

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for home in self._homes:
            module = importlib.import_module(home)
            if hasattr(module, name):
                return getattr(module, name)
        hint = REMOVED.get(f"{self.__name__}.{name}")
        raise AttributeError(f"{self.__name__}.{name} was removed: {hint}" if hint else
                             f"module {self.__name__!r} has no attribute {name!r}")


def alias_module(old: str) -> None:
    """Make the module ``old`` (being imported) an alias of its new home, warning that ``old`` is deprecated.

    With one home, ``sys.modules[old]`` becomes that module itself, so that both names see the same objects (patching
    one patches the other). With several, it becomes an alias that looks each name up in them.
    """
    homes = MOVED[old]
    warnings.warn(f"{old} moved to {homes[0]}; import it from there ({old} goes away in spectral-prior 0.3)",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(homes[0]) if len(homes) == 1 else _Alias(old, homes)
