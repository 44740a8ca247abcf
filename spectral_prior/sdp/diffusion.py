"""A small diffusion model over the HFE's prior vector (DiffIR's stage-2 diffusion, x0-parameterised).

The denoiser predicts the clean vector directly, and the reverse process is deterministic: each
step replaces ``z_t`` by the posterior mean of q(z_{t-1} | z_t, z0_hat) without adding noise.
With few steps (DiffIR uses 4) all of them run with gradients during training.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError


def linear_beta_schedule(steps: int, start: float = 0.1, end: float = 0.99) -> Tensor:
    """DiffIR's betas: ``linspace(sqrt(start), sqrt(end), steps) ** 2`` in float64."""
    return torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2


class DiffusionSchedule(nn.Module):
    """The forward-process constants for ``steps`` steps, kept as float64 non-persistent buffers.

    Values are gathered at ``t`` and cast to the dtype of the tensors they multiply.
    """

    def __init__(self, *, steps: int, start: float = 0.1, end: float = 0.99) -> None:
        super().__init__()
        if steps < 1:
            raise InvalidInputError(f"steps must be at least 1, got {steps}")
        self.steps = steps
        betas = linear_beta_schedule(steps, start, end)
        alphas = 1.0 - betas
        acp = torch.cumprod(alphas, dim=0)
        acp_prev = torch.cat((acp.new_ones(1), acp[:-1]))
        buffers = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": acp,
            "alphas_cumprod_prev": acp_prev,
            "sqrt_alphas_cumprod": acp.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - acp).sqrt(),
            "posterior_mean_coef1": betas * acp_prev.sqrt() / (1.0 - acp),
            "posterior_mean_coef2": (1.0 - acp_prev) * alphas.sqrt() / (1.0 - acp),
            "posterior_variance": betas * (1.0 - acp_prev) / (1.0 - acp),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    def _at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """``buffer[t]`` as a [B, 1] column in ``like``'s dtype and device."""
        return getattr(self, name)[t.to(self.betas.device)].to(like).unsqueeze(-1)

    def q_sample(self, z0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw z_t ~ q(z_t | z0) = N(sqrt(acp_t) z0, (1 - acp_t) I) using the given ``noise``."""
        return self._at("sqrt_alphas_cumprod", t, z0) * z0 + self._at("sqrt_one_minus_alphas_cumprod", t, z0) * noise

    def posterior_mean(self, z0_hat: Tensor, z_t: Tensor, t: Tensor) -> Tensor:
        """Mean of q(z_{t-1} | z_t, z0 = z0_hat): ``coef1_t * z0_hat + coef2_t * z_t``."""
        return self._at("posterior_mean_coef1", t, z_t) * z0_hat + self._at("posterior_mean_coef2", t, z_t) * z_t


def timestep_embedding(t: Tensor, width: int) -> Tensor:
    """Sinusoidal embedding of integer steps ``t`` [B] -> [B, width] (sin half, cos half)."""
    half = width // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class MLPDenoiser(nn.Module):
    """Predicts z0 from (z_t, t, cond) with a LeakyReLU(0.1) MLP over ``[cond, emb(t), z_t]``.

    ``t`` is encoded by a fixed 16-wide sinusoidal embedding, so the denoiser does not need to know
    the number of steps. ``depth`` counts the hidden layers of width ``hidden``.
    """

    time_dim = 16

    def __init__(self, *, dim: int, cond_dim: int, hidden: int = 256, depth: int = 3) -> None:
        super().__init__()
        if depth < 1:
            raise InvalidInputError(f"depth must be at least 1, got {depth}")
        self.dim = dim
        self.cond_dim = cond_dim
        layers: list[nn.Module] = [nn.Linear(cond_dim + self.time_dim + dim, hidden), nn.LeakyReLU(0.1)]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.LeakyReLU(0.1)]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """z_t [B, dim], t [B] integer steps, cond [B, cond_dim] -> predicted z0 [B, dim]."""
        emb = timestep_embedding(t, self.time_dim).to(z_t)
        return self.net(torch.cat((cond, emb, z_t), dim=-1))


class LatentDiffusion(nn.Module):
    """Generates the prior vector [B, dim] from a conditioning vector [B, cond_dim] in ``steps`` steps."""

    def __init__(self, *, dim: int, cond_dim: int, steps: int = 4, hidden: int = 256, depth: int = 3) -> None:
        super().__init__()
        self.dim = dim
        self.cond_dim = cond_dim
        self.schedule = DiffusionSchedule(steps=steps)
        self.denoiser = MLPDenoiser(dim=dim, cond_dim=cond_dim, hidden=hidden, depth=depth)

    @property
    def steps(self) -> int:
        return self.schedule.steps

    def forward(
        self,
        cond: Tensor,
        z0: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Run the full deterministic reverse chain and return the estimate of z0, [B, dim].

        Training (``z0`` given, the teacher's vector): start from ``q_sample(z0, T-1, noise)``.
        Inference (``z0`` None): start from N(0, I). Either way, for t = T-1 .. 1 the state becomes
        ``posterior_mean(denoiser(z, t, cond), z, t)``, and the returned tensor is the denoiser's
        prediction at t = 0 (the posterior mean at t = 0 is exactly that prediction). Every step
        keeps its graph. Noise is drawn with ``generator`` on ``cond``'s device and dtype, unless ``noise``
        ([B, dim] or [dim], broadcast over the batch) is given.
        """
        if cond.dim() != 2 or cond.shape[1] != self.cond_dim:
            raise InvalidInputError(f"cond must have shape [B, {self.cond_dim}], got {list(cond.shape)}")
        batch = cond.shape[0]
        if noise is None:
            noise = torch.randn(batch, self.dim, generator=generator, device=cond.device, dtype=cond.dtype)
        elif noise.shape[-1] != self.dim:
            raise InvalidInputError(f"noise must have {self.dim} entries per sample, got shape {list(noise.shape)}")
        noise = noise.to(cond).expand(batch, self.dim)
        last = torch.full((batch,), self.steps - 1, device=cond.device, dtype=torch.long)
        if z0 is None:
            z = noise
        else:
            if z0.shape != (batch, self.dim):
                raise InvalidInputError(f"z0 must have shape [{batch}, {self.dim}] to match cond, got {list(z0.shape)}")
            z = self.schedule.q_sample(z0.to(cond), last, noise)

        for step in reversed(range(self.steps)):
            t = torch.full_like(last, step)
            z0_hat = self.denoiser(z, t, cond)
            z = self.schedule.posterior_mean(z0_hat, z, t) if step > 0 else z0_hat
        return z
