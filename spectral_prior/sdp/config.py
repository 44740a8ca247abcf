"""The method's two configs: :class:`PriorConfig` sizes a prior network, :class:`InjectionConfig` records an
injection (which blocks, their channels and positions, which prior) and is what its ``config.json`` holds."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional, Union

from ..errors import InvalidInputError


@dataclass
class PriorConfig:
    """Sizes of a :class:`SpectralDiffusionPrior`.

    Attributes:
        bands: spectral bands of the input.
        prior_dim: D, the length of the prior vector.
        hfe_dim: feature width of the HSI Feature Extractors.
        hfe_depth: residual blocks in each extractor.
        steps: T, diffusion steps (all run at inference; DiffIR uses 4).
        denoiser_hidden: width of the MLP denoiser.
        denoiser_depth: hidden layers of the MLP denoiser.
        seed: seed of the fixed N(0, I) draw the reverse process starts from in eval mode, which makes an injected
            model a deterministic function of its input (training mode draws fresh noise).
        teacher: whether the prior holds its stage-1 teacher HFE (needed by stage-1 and stage-2 training only;
            inference models are shipped without it, see :meth:`SpectralDiffusionPrior.drop_teacher`).
    """

    bands: int = 28
    prior_dim: int = 256
    hfe_dim: int = 64
    hfe_depth: int = 2
    steps: int = 4
    denoiser_hidden: int = 256
    denoiser_depth: int = 3
    seed: int = 0
    teacher: bool = True

    def __post_init__(self) -> None:
        for name in ("bands", "prior_dim", "hfe_dim", "hfe_depth", "steps", "denoiser_hidden", "denoiser_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"PriorConfig.{name} must be a positive integer, got {value!r}")


@dataclass
class InjectionConfig:
    """What an injection is, without its weights: the ``config.json`` of a saved injection (kind ``"injector"``).

    Attributes:
        preset: the preset it was built with (``"mst"``, ``"bisrnet"``, ...), or None.
        layers: the ``layers`` it was built with (a preset name, a regex or module names).
        targets: the modulated blocks' dotted names, in order. Loading uses these, not the preset re-resolved:
            presets change, files do not.
        channels: target -> channel count of what its SPIM modulates.
        channel_axes: target -> the axis holding those channels.
        positions: target -> ``"input"`` or ``"output"``.
        prior_dim: the length of the prior vector.
        prior: ``{"class": ..., "config": {...}}`` of the prior network.
        trained_with: the backbone's class and parameter count, checked before any weight loads.
        backbone: ``{"class", "name", "file"}`` when the backbone's weights were saved beside it.
    """

    preset: Optional[str]
    layers: Union[str, list]
    targets: list
    channels: dict
    channel_axes: dict
    positions: dict
    prior_dim: int
    prior: dict
    trained_with: Optional[dict] = None
    backbone: Optional[dict] = None

    def to_dict(self) -> dict[str, Any]:
        entries = asdict(self)
        if entries["backbone"] is None:
            del entries["backbone"]
        return {"kind": "injector", **entries}

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "InjectionConfig":
        """The injection a saved config (today's format: see :func:`spectral_prior.saving.read_config`) records."""
        if config.get("kind") != "injector":
            raise InvalidInputError(f"expected the config of a saved injection, got kind {config.get('kind')!r}")
        return cls(**{item.name: config.get(item.name) for item in fields(cls)})
