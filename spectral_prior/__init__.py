"""spectral-prior: a Spectral Diffusion Prior for hyperspectral reconstruction networks, injected in one line.

The public API. The layers below it (see docs/architecture.md): :mod:`.sdp` (the method), :mod:`.adapters`
(backbones), :mod:`.saving` (the saved format and the Hub), :mod:`.cassi` (physics), :mod:`.data`,
:mod:`.evaluation`, :mod:`.training`, :mod:`.inference`, and :mod:`.cli` (the commands).
"""
from ._version import __version__
from .models import load_model, save_backbone
from .sdp import (
    LinearPrior,
    PriorConfig,
    SPIM,
    SpectralDiffusionPrior,
    SpectralPriorInjector,
    get_injector,
    inject_prior,
    load_injection,
    remove_prior,
)

__all__ = [
    "__version__",
    "inject_prior",
    "load_injection",
    "remove_prior",
    "get_injector",
    "SpectralPriorInjector",
    "SPIM",
    "SpectralDiffusionPrior",
    "PriorConfig",
    "LinearPrior",
    "load_model",
    "save_backbone",
]
