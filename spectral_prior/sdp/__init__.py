"""The method: a Spectral Diffusion Prior (HFE + latent diffusion) and the SPIMs that inject it into a backbone.

:mod:`.config` (PriorConfig, InjectionConfig), :mod:`.spim`, :mod:`.hfe`, :mod:`.diffusion`, :mod:`.prior` (the
networks); :mod:`.injector` (the hooks and the injector module), :mod:`.targets` (matching and probing),
:mod:`.presets` (per-backbone targets), :mod:`.inject` (build, load, remove). It imports no backbone code.
"""
from .config import InjectionConfig, PriorConfig
from .inject import get_injector, inject_prior, load_injection, remove_prior
from .injector import INJECTOR_NAME, SpectralPriorInjector
from .presets import PRESETS, Preset, get_preset
from .prior import ConstantPrior, LinearPrior, SpectralDiffusionPrior
from .spim import SPIM

__all__ = [
    "INJECTOR_NAME",
    "PRESETS",
    "ConstantPrior",
    "InjectionConfig",
    "LinearPrior",
    "Preset",
    "PriorConfig",
    "SPIM",
    "SpectralDiffusionPrior",
    "SpectralPriorInjector",
    "get_injector",
    "get_preset",
    "inject_prior",
    "load_injection",
    "remove_prior",
]
