"""Vector-space diffusion: schedule constants, forward/posterior statistics, denoiser and sampler."""
import math

import pytest
import torch

from spectral_prior.sdp.diffusion import DiffusionSchedule, LatentDiffusion, MLPDenoiser, linear_beta_schedule

STEPS = 4


def reference_constants(steps, start=0.1, end=0.99):
    """The schedule rebuilt with plain Python floats, one step at a time."""
    lo, hi = math.sqrt(start), math.sqrt(end)
    betas = [(lo + (hi - lo) * i / (steps - 1)) ** 2 for i in range(steps)]
    acp, prev, running = [], [], 1.0
    for beta in betas:
        prev.append(running)
        running *= 1.0 - beta
        acp.append(running)
    coef1 = [b * math.sqrt(p) / (1 - a) for b, p, a in zip(betas, prev, acp)]
    coef2 = [(1 - p) * math.sqrt(1 - b) / (1 - a) for b, p, a in zip(betas, prev, acp)]
    variance = [b * (1 - p) / (1 - a) for b, p, a in zip(betas, prev, acp)]
    return {
        "betas": betas,
        "alphas_cumprod": acp,
        "alphas_cumprod_prev": prev,
        "posterior_mean_coef1": coef1,
        "posterior_mean_coef2": coef2,
        "posterior_variance": variance,
    }


def test_beta_schedule_closed_form():
    betas = linear_beta_schedule(STEPS)
    assert betas.dtype == torch.float64
    expected = torch.tensor(reference_constants(STEPS)["betas"], dtype=torch.float64)
    torch.testing.assert_close(betas, expected, rtol=1e-12, atol=1e-12)
    assert betas[0].item() == pytest.approx(0.1) and betas[-1].item() == pytest.approx(0.99)


@pytest.mark.parametrize("steps", [STEPS, 10])
def test_schedule_constants(steps):
    schedule = DiffusionSchedule(steps=steps)
    acp = schedule.alphas_cumprod
    assert ((acp > 0) & (acp < 1)).all()
    assert (acp[1:] < acp[:-1]).all()
    for name, values in reference_constants(steps).items():
        expected = torch.tensor(values, dtype=torch.float64)
        torch.testing.assert_close(getattr(schedule, name), expected, rtol=1e-12, atol=1e-12, msg=name)


def test_schedule_not_in_state_dict():
    assert len(DiffusionSchedule(steps=STEPS).state_dict()) == 0
    model = LatentDiffusion(dim=8, cond_dim=8)
    assert not any(key.startswith("schedule") for key in model.state_dict())


def test_posterior_at_zero_returns_z0_hat():
    schedule = DiffusionSchedule(steps=STEPS)
    z0_hat, z_t = torch.randn(3, 5), torch.randn(3, 5)
    out = schedule.posterior_mean(z0_hat, z_t, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(out, z0_hat)


@pytest.mark.parametrize("step", range(STEPS))
def test_q_sample_statistics(step):
    schedule = DiffusionSchedule(steps=STEPS)
    n = 200_000
    z0 = torch.full((n, 1), 1.5, dtype=torch.float64)
    t = torch.full((n,), step, dtype=torch.long)
    z_t = schedule.q_sample(z0, t, torch.randn(n, 1, dtype=torch.float64))
    acp = reference_constants(STEPS)["alphas_cumprod"][step]
    assert z_t.mean().item() == pytest.approx(math.sqrt(acp) * 1.5, abs=0.01)
    assert z_t.var().item() == pytest.approx(1 - acp, rel=0.02)


@pytest.mark.parametrize("step", range(1, STEPS))
def test_posterior_mean_is_conditional_expectation(step):
    """Simulate z_{t-1} ~ q(. | z0), z_t ~ q(z_t | z_{t-1}); regressing z_{t-1} on z_t gives coef2 and coef1 * z0."""
    schedule = DiffusionSchedule(steps=STEPS)
    n, z0_value = 400_000, 1.5
    prev = torch.full((n,), step - 1, dtype=torch.long)
    z0 = torch.full((n, 1), z0_value, dtype=torch.float64)
    z_prev = schedule.q_sample(z0, prev, torch.randn(n, 1, dtype=torch.float64))
    beta = schedule.betas[step]
    z_t = (1 - beta).sqrt() * z_prev + beta.sqrt() * torch.randn(n, 1, dtype=torch.float64)

    design = torch.cat((torch.ones_like(z_t), z_t), dim=1)
    solution = torch.linalg.lstsq(design, z_prev).solution.squeeze(1)
    intercept, slope = solution.tolist()
    assert slope == pytest.approx(schedule.posterior_mean_coef2[step].item(), abs=0.01)
    assert intercept == pytest.approx(schedule.posterior_mean_coef1[step].item() * z0_value, abs=0.01)

    t = torch.full((n,), step, dtype=torch.long)
    predicted = schedule.posterior_mean(z0, z_t, t)
    residual = (z_prev - predicted).var().item()
    assert residual == pytest.approx(schedule.posterior_variance[step].item(), rel=0.02)


def test_denoiser_shapes():
    denoiser = MLPDenoiser(dim=12, cond_dim=20, hidden=32, depth=2)
    out = denoiser(torch.randn(5, 12), torch.randint(0, STEPS, (5,)), torch.randn(5, 20))
    assert out.shape == (5, 12)


def test_latent_diffusion_shapes_and_errors():
    model = LatentDiffusion(dim=16, cond_dim=24, hidden=32)
    cond = torch.randn(3, 24)
    assert model(cond).shape == (3, 16)
    assert model(cond, torch.randn(3, 16)).shape == (3, 16)
    with pytest.raises(ValueError, match=r"cond must have shape \[B, 24\]"):
        model(torch.randn(3, 16))
    with pytest.raises(ValueError, match=r"z0 must have shape \[3, 16\]"):
        model(cond, torch.randn(2, 16))


def test_float64_output_follows_cond():
    model = LatentDiffusion(dim=8, cond_dim=8, hidden=16).double()
    out = model(torch.randn(2, 8, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_inference_deterministic_given_generator():
    model = LatentDiffusion(dim=16, cond_dim=16, hidden=32)
    cond = torch.randn(4, 16)
    first = model(cond, generator=torch.Generator().manual_seed(1))
    again = model(cond, generator=torch.Generator().manual_seed(1))
    other = model(cond, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)


def test_training_path_gradients():
    model = LatentDiffusion(dim=16, cond_dim=16, hidden=32)
    cond = torch.randn(4, 16, requires_grad=True)
    model(cond, torch.randn(4, 16)).abs().mean().backward()
    assert cond.grad.abs().sum() > 0
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_learns_toy_prior():
    """z0 = W cond: after training on the teacher path, sampling from pure noise recovers z0."""
    dim = 16
    weight = torch.randn(dim, dim) / math.sqrt(dim)
    model = LatentDiffusion(dim=dim, cond_dim=dim, hidden=64)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)

    test_cond = torch.randn(256, dim)
    test_z0 = test_cond @ weight.T
    with torch.no_grad():
        before = (model(test_cond) - test_z0).abs().mean().item()

    for _ in range(200):
        cond = torch.randn(64, dim)
        z0 = cond @ weight.T
        loss = (model(cond, z0) - z0).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    with torch.no_grad():
        after = (model(test_cond, generator=torch.Generator().manual_seed(0)) - test_z0).abs().mean().item()
    assert after < before / 4, (before, after)
