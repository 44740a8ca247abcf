"""Aliases that keep the module paths of the flat 0.1 layout importable for one release, with a DeprecationWarning."""
from __future__ import annotations

import importlib
import sys
import warnings

MOVED: dict[str, str] = {
    "spectral_prior.inject": "spectral_prior.sdp.inject",
    "spectral_prior.prior": "spectral_prior.sdp.prior",
    "spectral_prior.spim": "spectral_prior.sdp.spim",
    "spectral_prior.hfe": "spectral_prior.sdp.hfe",
    "spectral_prior.diffusion": "spectral_prior.sdp.diffusion",
    "spectral_prior.adapters.presets": "spectral_prior.sdp.presets",
    "spectral_prior.saved": "spectral_prior.saving.format",
    "spectral_prior.hub": "spectral_prior.saving.hub",
    "spectral_prior.metrics": "spectral_prior.evaluation.metrics",
    "spectral_prior.evaluate": "spectral_prior.evaluation",
    "spectral_prior.reconstruct": "spectral_prior.inference",
    "spectral_prior.train": "spectral_prior.training",
    "spectral_prior.timm_models": "spectral_prior.integrations.timm",
    "spectral_prior.commands": "spectral_prior.cli.common",
    "spectral_prior.demo": "spectral_prior.cli.demo",
}
"""Old module path -> where it lives now."""


def alias_module(old: str) -> None:
    """Make the module ``old`` (being imported) the module it moved to, warning that ``old`` is deprecated.

    ``sys.modules[old]`` becomes the new module itself, so that both names see the same objects (patching one
    patches the other, ``isinstance`` checks agree).
    """
    new = MOVED[old]
    warnings.warn(f"{old} moved to {new}; import it from there ({old} goes away in spectral-prior 0.3)",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
