"""spectral-prior: a Spectral Diffusion Prior for hyperspectral reconstruction networks, injected in one line."""

__version__ = "0.1.0"

from .inject import SpectralPriorInjector, get_injector, inject_prior, remove_prior  # noqa: E402
from .models import load_model, save_backbone  # noqa: E402
from .prior import LinearPrior, PriorConfig, SpectralDiffusionPrior  # noqa: E402
from .spim import SPIM  # noqa: E402

__all__ = [
    "__version__",
    "inject_prior",
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
