"""Prior networks: the Spectral Diffusion Prior (HFE + latent diffusion) and a linear stand-in.

A prior maps the backbone's input (for MST/BiSRNet the 'H' input [B, 28, H, W]) to a vector z [B, prior_dim].
Priors used for stage-1 training also offer ``teacher(h, gt)``, which sees the ground truth.
Each prior class can describe itself as a JSON-able dict (``to_config``) and be rebuilt from it (``from_config``), so
a saved injector can rebuild its prior; :func:`prior_spec` and :func:`build_prior` do that by class name.
"""
from __future__ import annotations

from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any, Mapping

import torch
from einops import reduce
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from ..errors import InvalidInputError
from ..io import load_state_dict_strict
from ..saving.cards import prior_card
from ..saving.format import WEIGHTS_FILE
from ..saving.load import open_saved
from ..saving.write import write_saved
from .config import PriorConfig
from .diffusion import LatentDiffusion
from .hfe import HFE


class LinearPrior(nn.Module):
    """A stand-in prior: the input averaged over its spatial axes, then one Linear layer to ``prior_dim``.

    ``in_channels=None`` infers the channel count at the first forward (the injection's probe does that).
    """

    def __init__(self, prior_dim: int, in_channels: int | None = None) -> None:
        super().__init__()
        self.prior_dim = prior_dim
        self.proj = nn.Linear(in_channels, prior_dim) if in_channels else nn.LazyLinear(prior_dim)

    def forward(self, condition: Tensor) -> Tensor:
        pooled = reduce(condition, "b c ... -> b c", "mean") if condition.dim() > 2 else condition
        return self.proj(pooled)

    def to_config(self) -> dict[str, Any]:
        if isinstance(self.proj, nn.LazyLinear) and self.proj.has_uninitialized_params():
            raise RuntimeError("LinearPrior's input width is not known yet: run one forward before saving it")
        return {"prior_dim": self.prior_dim, "in_channels": self.proj.in_features}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "LinearPrior":
        return cls(**config)


class ConstantPrior(nn.Module):
    """A control prior: one learned vector, the same for every input, on the student and the teacher path alike.

    Trained in place of the Spectral Diffusion Prior it adds the same SPIMs but no information about the image, so
    what a real prior gains over it is image information, not added parameters. The vector starts at a seeded
    N(0, scale^2 I) draw (at zero, it and the zero-initialised SPIMs would pass each other no gradient). Give it the
    scale of the real prior's vectors: a zero-initialised SPIM's output grows in proportion to its input, so a vector
    much larger than the teacher's moves the modulation faster at the same learning rate, and the control is no
    longer like for like.
    """

    def __init__(self, prior_dim: int, seed: int = 0, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0:
            raise InvalidInputError(f"ConstantPrior: scale must be positive, got {scale!r}")
        self.prior_dim = prior_dim
        self.seed = seed
        self.scale = float(scale)
        draw = torch.randn(prior_dim, generator=torch.Generator().manual_seed(seed))
        self.vector = nn.Parameter(draw * self.scale)

    def forward(self, condition: Tensor, **_: Any) -> Tensor:
        return self.vector.expand(condition.shape[0], -1)

    def teacher(self, condition: Tensor, gt: Tensor) -> Tensor:
        return self(condition)

    def student_parameters(self) -> list[nn.Parameter]:
        return []

    def teacher_parameters(self) -> list[nn.Parameter]:
        return [self.vector]

    def to_config(self) -> dict[str, Any]:
        return {"prior_dim": self.prior_dim, "seed": self.seed, "scale": self.scale}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ConstantPrior":
        return cls(**config)


class SpectralDiffusionPrior(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="spectral-prior",
    tags=["hyperspectral", "cassi", "spectral-compressive-imaging", "diffusion-prior"],
    paper_url="https://arxiv.org/abs/2507.13769",
    license="mit",
):
    """HFE + latent diffusion: the measurement's feature conditions a few-step diffusion that produces z [B, D].

    ``forward(h)`` is the student path (inference and stage 2); ``teacher(h, gt)`` is the stage-1 teacher, which
    also sees the ground truth and whose output the student learns to reproduce.
    """

    def __init__(self, config: PriorConfig | None = None) -> None:
        super().__init__()
        config = config or PriorConfig()
        self.config = config
        self.prior_dim = config.prior_dim
        hfe = dict(bands=config.bands, dim=config.hfe_dim, out_dim=config.prior_dim, depth=config.hfe_depth)
        self.student = HFE(**hfe)
        self.teacher_hfe = HFE(**hfe, teacher=True) if config.teacher else None
        self.diffusion = LatentDiffusion(
            dim=config.prior_dim,
            cond_dim=config.prior_dim,
            steps=config.steps,
            hidden=config.denoiser_hidden,
            depth=config.denoiser_depth,
        )
        eval_noise = torch.randn(config.prior_dim, generator=torch.Generator().manual_seed(config.seed))
        self.register_buffer("eval_noise", eval_noise, persistent=False)

    def forward(
        self,
        h: Tensor,
        *,
        z_teacher: Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """The student prior [B, D] from ``h``.

        With ``z_teacher`` (stage-2 training) the reverse process starts from ``q(z_T | z_teacher)``; otherwise from
        noise: the fixed eval draw in eval mode, fresh noise (from ``generator`` if given) in training mode.
        ``noise`` ([B, D]) overrides the draw, e.g. so that each sample's noise does not depend on how a batch is
        split between processes.
        """
        condition = self.student(h)
        if noise is None and z_teacher is None and generator is None and not self.training:
            noise = self.eval_noise
        return self.diffusion(condition, z_teacher, generator=generator, noise=noise)

    def teacher(self, h: Tensor, gt: Tensor) -> Tensor:
        """The stage-1 teacher prior [B, D] from ``h`` and the ground-truth cube ``gt``."""
        if self.teacher_hfe is None:
            raise InvalidInputError(
                "this prior has no stage-1 teacher (it was saved for inference, PriorConfig.teacher=False): stage-1 "
                "and stage-2 training start from a checkpoint that still holds it"
            )
        return self.teacher_hfe(h, gt)

    def student_parameters(self) -> list[nn.Parameter]:
        """What stage 2a trains: the student HFE and the diffusion model (the inference path)."""
        return [*self.student.parameters(), *self.diffusion.parameters()]

    def teacher_parameters(self) -> list[nn.Parameter]:
        """What only stage 1 trains: the teacher HFE (empty once dropped)."""
        return [] if self.teacher_hfe is None else list(self.teacher_hfe.parameters())

    def drop_teacher(self) -> "SpectralDiffusionPrior":
        """Remove the stage-1 teacher (in place; returns self): an inference model needs only the student path."""
        self.teacher_hfe = None
        self.config = replace(self.config, teacher=False)
        return self

    def to_config(self) -> dict[str, Any]:
        return asdict(self.config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SpectralDiffusionPrior":
        known = {field.name for field in fields(PriorConfig)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise InvalidInputError(f"unknown PriorConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(PriorConfig(**config))

    # -- Hub: save_pretrained / from_pretrained / push_to_hub (the latter from PyTorchModelHubMixin) --------------

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        card: Mapping[str, Any] | None = None,
        model_card_kwargs: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> Path:
        """Write ``config.json``, ``model.safetensors`` and a model card ``README.md`` (listing ``card``'s and
        ``model_card_kwargs``' entries) as a unit."""
        config = {"kind": "prior", "class": type(self).__name__, "config": self.to_config()}
        text = prior_card(config, {**(card or {}), **(model_card_kwargs or {})})
        return write_saved(save_directory, config, {WEIGHTS_FILE: self.state_dict()}, card=text)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        **_: Any,
    ) -> "SpectralDiffusionPrior":
        """Load a prior saved by :meth:`save_pretrained`, or the prior of a saved injection, from a directory, a Hub
        repo id or a published name.

        Loading is strict: a missing or unexpected weight is an error, not a warning. Returns the prior in eval mode.
        """
        saved = open_saved(source, files=(WEIGHTS_FILE,), revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        if saved.kind == "prior":
            spec, prefix = saved.config, ""
        elif saved.kind == "injector":  # the injector's weights hold the prior's under "prior."
            spec, prefix = saved.config["prior"], "prior."
        else:
            raise InvalidInputError(f"{source} holds a {saved.kind!r} checkpoint, not a saved prior or injection")
        if spec["class"] != cls.__name__:
            raise InvalidInputError(f"{source} holds a {spec['class']}, not a {cls.__name__}")
        prior = cls.from_config(spec["config"])
        weights = {key[len(prefix):]: value for key, value in saved.tensors(WEIGHTS_FILE).items() if key.startswith(prefix)}
        load_state_dict_strict(prior, weights, source=str(saved.directory / WEIGHTS_FILE))
        return prior.eval()


PRIOR_CLASSES: dict[str, type[nn.Module]] = {
    "SpectralDiffusionPrior": SpectralDiffusionPrior,
    "LinearPrior": LinearPrior,
    "ConstantPrior": ConstantPrior,
}
"""Prior classes that saved configs can name; add yours with ``PRIOR_CLASSES[cls.__name__] = cls``."""


def prior_spec(prior: nn.Module) -> dict[str, Any]:
    """``{"class": name, "config": {...}}`` for a registered prior class."""
    name = type(prior).__name__
    if PRIOR_CLASSES.get(name) is not type(prior):
        raise TypeError(
            f"cannot save a prior of class {name}: register it with spectral_prior.sdp.prior.PRIOR_CLASSES[{name!r}] = "
            "its class (which needs to_config() and from_config())"
        )
    return {"class": name, "config": prior.to_config()}


def build_prior(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild a prior from :func:`prior_spec`'s description."""
    name = spec.get("class")
    if name not in PRIOR_CLASSES:
        raise InvalidInputError(f"unknown prior class {name!r}; known: {sorted(PRIOR_CLASSES)}")
    return PRIOR_CLASSES[name].from_config(spec.get("config", {}))
