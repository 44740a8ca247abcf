"""BiSRNet's binarisation: the straight-through gradients equal the toolbox's, the binary weight cache stays fresh."""
import pytest
import torch

from tolerance import assert_close
from spectral_prior.adapters import bisrnet
from spectral_prior.adapters.binary import (
    ScaledSignWithClampGradient,
    binary_sign,
    binary_weight,
    weight_scale,
)
from spectral_prior.adapters.bisrnet import HardBinaryConv


def toolbox_activation(x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The toolbox's Spectral_Binary_Activation: sign(x) forward through the tanh(beta x) surrogate."""
    soft = torch.tanh(x * beta)
    return torch.sign(x).detach() - soft.detach() + soft


def toolbox_weight(weight: torch.Tensor) -> torch.Tensor:
    """The toolbox's HardBinaryConv weight: scale * sign(w) forward through clamp(w, -1, 1)."""
    scale = weight.abs().mean(dim=3, keepdim=True).mean(dim=2, keepdim=True).mean(dim=1, keepdim=True).detach()
    clipped = weight.clamp(-1.0, 1.0)
    return (scale * torch.sign(weight)).detach() - clipped.detach() + clipped


def gradients(function, *inputs, upstream):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = function(*leaves)
    out.backward(upstream)
    return out.detach(), [leaf.grad for leaf in leaves]


def test_activation_gradient_is_the_toolbox_estimators():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 5, 7, generator=generator) * 2
    beta = torch.tensor([1.7])
    upstream = torch.randn(x.shape, generator=generator)
    ours, (grad_x, grad_beta) = gradients(binary_sign, x, beta, upstream=upstream)
    reference, (ref_x, ref_beta) = gradients(toolbox_activation, x, beta, upstream=upstream)
    assert torch.equal(ours, torch.sign(x))
    torch.testing.assert_close(ours, reference)  # the toolbox's forward is sign(x) up to rounding
    assert_close(grad_x, ref_x, name="sign estimator vs toolbox, d/dx", rtol=1e-6, atol=1e-7)
    assert_close(grad_beta, ref_beta, name="sign estimator vs toolbox, d/dbeta", rtol=1e-5, atol=1e-5)


def test_activation_gradient_on_a_channels_last_input():
    x = torch.randn(2, 6, 4, 4).contiguous(memory_format=torch.channels_last)
    beta, upstream = torch.tensor([0.8]), torch.randn(2, 6, 4, 4)
    _, (grad_x, grad_beta) = gradients(binary_sign, x, beta, upstream=upstream)
    _, (ref_x, ref_beta) = gradients(toolbox_activation, x, beta, upstream=upstream)
    torch.testing.assert_close(grad_x, ref_x)
    assert_close(grad_beta, ref_beta, name="sign estimator vs toolbox, channels-last d/dbeta", rtol=1e-5, atol=1e-5)


def test_weight_gradient_is_the_clamps():
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(6, 3, 3, 3, generator=generator) * 1.5  # a good share outside [-1, 1]
    weight[0, 0, 0, 0] = 1.0  # the bound itself passes the gradient, as torch's clamp does
    upstream = torch.randn(weight.shape, generator=generator)
    ours, (grad,) = gradients(binary_weight, weight, upstream=upstream)
    reference, (ref_grad,) = gradients(toolbox_weight, weight, upstream=upstream)
    torch.testing.assert_close(ours, reference)
    assert torch.equal(grad, ref_grad)
    assert ScaledSignWithClampGradient.apply(weight, weight_scale(weight)).shape == weight.shape


def test_without_a_gradient_the_plain_sign_is_used_and_matches():
    model = bisrnet().eval()
    y, phi = torch.rand(1, 28, 16, 16), torch.rand(1, 28, 16, 16)
    with torch.no_grad():
        fast = model(y, phi)
    slow = model(y, phi)  # parameters require grad: the straight-through path
    assert slow.requires_grad
    torch.testing.assert_close(fast, slow.detach())


def test_cached_binary_weight_follows_every_change_of_the_weight():
    conv = HardBinaryConv(4, 4, 3, padding=1, bias=False).eval()
    x = torch.randn(1, 4, 8, 8)

    def fresh() -> torch.Tensor:
        return torch.nn.functional.conv2d(x, binary_weight(conv.weight.detach()), padding=1)

    with torch.inference_mode():
        first = conv(x)
    torch.testing.assert_close(first, fresh())
    # An optimizer step changes the weight in place.
    optimizer = torch.optim.SGD(conv.parameters(), lr=10.0)
    conv(x).sum().backward()
    optimizer.step()
    with torch.no_grad():
        after_step = conv(x)
    assert not torch.allclose(after_step, first)
    torch.testing.assert_close(after_step, fresh())
    # load_state_dict copies into the same storage.
    conv.load_state_dict({"weight": -conv.weight.detach()})
    with torch.no_grad():
        torch.testing.assert_close(conv(x), fresh())
    # A replaced parameter.
    conv.weight = torch.nn.Parameter(torch.randn(4, 4, 3, 3))
    with torch.no_grad():
        torch.testing.assert_close(conv(x), fresh())
    # The cached tensor made under inference_mode is a normal tensor: usable where autograd records.
    with torch.inference_mode():
        conv(x)
    conv.weight.requires_grad_(False)
    x_grad = x.clone().requires_grad_()
    conv(x_grad).sum().backward()
    assert x_grad.grad is not None


def test_switching_to_training_drops_the_cache():
    conv = HardBinaryConv(2, 2, 1, bias=False).eval()
    with torch.no_grad():
        conv(torch.randn(1, 2, 4, 4))
    assert conv._cached_weight is not None
    conv.train()
    assert conv._cached_weight is None


def test_official_bisrnet_training_step_runs_and_learns():
    model = bisrnet().train()
    y, phi, target = torch.rand(2, 28, 16, 16), torch.rand(2, 28, 16, 16), torch.rand(2, 28, 16, 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = (model(y, phi) - target).square().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("repeat", [True, False])
def test_mst_shares_the_mask_branch_only_when_masks_are_equal(repeat):
    from spectral_prior.adapters import mst_s

    model = mst_s().eval()
    x = torch.rand(3, 28, 16, 16)
    masks = torch.rand(1, 28, 16, 70).repeat(3, 1, 1, 1) if repeat else torch.rand(3, 28, 16, 70)
    with torch.no_grad():
        batched = model(x, masks)
        one_by_one = torch.cat([model(x[i : i + 1], masks[i : i + 1]) for i in range(3)])
    assert_close(batched, one_by_one, name=f"MST-S batch of 3 vs one by one (repeat={repeat})", rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_channelwise_functions_have_autograds_gradients(channels_last):
    from spectral_prior.adapters.channelwise import add_channel_bias, prelu

    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 6, 7, generator=generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    bias = torch.randn(1, 5, 1, 1, generator=generator)
    slope, upstream = torch.rand(5, generator=generator), torch.randn(2, 5, 6, 7, generator=generator)
    cases = [
        (add_channel_bias, lambda a, b: a + b, (x, bias)),
        (prelu, torch.nn.functional.prelu, (x, slope)),
        (lambda a, w, b: prelu(a, w, shift=b), lambda a, w, b: torch.nn.functional.prelu(a, w) + b, (x, slope, bias)),
    ]
    for ours, reference, inputs in cases:
        out, grads = gradients(ours, *inputs, upstream=upstream)
        ref_out, ref_grads = gradients(reference, *inputs, upstream=upstream)
        assert torch.equal(out, ref_out)
        for grad, ref_grad in zip(grads, ref_grads):
            assert_close(grad, ref_grad, name=f"channel-wise function gradients (channels_last={channels_last})",
                         rtol=1e-5, atol=1e-5)


def test_redistributed_sign_gradient_is_the_toolboxs_redistribution_then_activation():
    from spectral_prior.adapters.binary import RedistributedSign

    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 5, 4, generator=generator).contiguous(memory_format=torch.channels_last)
    scale = torch.rand(1, 6, 1, 1, generator=generator) + 0.5
    shift = torch.randn(1, 6, 1, 1, generator=generator) * 0.1
    beta, upstream = torch.tensor([1.3]), torch.randn(2, 6, 5, 4, generator=generator)
    ours, grads = gradients(RedistributedSign.apply, x, scale, shift, beta, upstream=upstream)
    reference, ref_grads = gradients(lambda a, k, b, s: toolbox_activation(a * k + b, s), x, scale, shift, beta,
                                     upstream=upstream)
    torch.testing.assert_close(ours, reference)
    for grad, ref_grad in zip(grads, ref_grads):
        assert_close(grad, ref_grad, name="redistributed sign vs toolbox, gradients", rtol=1e-5, atol=1e-5)
