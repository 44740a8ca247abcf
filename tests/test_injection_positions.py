"""SPIM on a block's input (forward pre-hooks), the channel axis the probe reads, hooks inside BiSRNet, targets
that never run, files saved with block-output SPIMs, and a bfloat16-autocast training step on every backbone."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import spectral_prior as sp
from spectral_prior.adapters import bisrnet, mst_plus_plus, mst_s
from spectral_prior.adapters.bisrnet import BinaryConv2d
from spectral_prior.sdp.targets import infer_channel_axis


def h_and_mask(make, batch=2, height=16, width=24):
    extra = 54 if make is mst_s else 0
    return torch.rand(batch, 28, height, width), torch.rand(batch, 28, height, width + extra)


def perturb(model):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for spim in sp.get_injector(model).spims.values():
            spim.proj.weight.copy_(torch.randn(spim.proj.weight.shape, generator=generator) * 0.1)
            spim.proj.bias.copy_(torch.randn(spim.proj.bias.shape, generator=generator) * 0.1)
    return model


# -- input position ----------------------------------------------------------------------------------------------


def test_an_input_spim_modulates_the_first_tensor_argument_exactly():
    class Block(nn.Module):
        def forward(self, x, gate):
            return x * gate

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()

        def forward(self, x):
            return self.block(x, torch.full_like(x, 2.0))

    net = Net()
    x = torch.rand(2, 3, 4, 6)
    sp.inject_prior(net, ["block"], prior=sp.LinearPrior(5, in_channels=3), position="input", example_inputs=x)
    injector = sp.get_injector(net)
    assert injector.positions == {"block": "input"} and injector.channels == {"block": 3}
    assert torch.equal(net(x), 2 * x)
    perturb(net)
    scale, shift = injector.spims["block"].proj(injector.prior(x)).chunk(2, dim=-1)
    expected = 2 * (x * (1 + scale[:, :, None, None]) + shift[:, :, None, None])  # the gate argument untouched
    torch.testing.assert_close(net(x), expected)
    with pytest.raises(ValueError, match="position 'inside' for target 'block'; a SPIM acts on the block's 'input' or 'output'"):
        sp.inject_prior(net, ["block"], prior_dim=5, position="inside", example_inputs=x, replace=True)


@pytest.mark.parametrize("make, preset, count", [(mst_s, "mst", 20), (mst_plus_plus, "mst_plus_plus", 30), (bisrnet, "bisrnet", 5)])
def test_presets_modulate_inside_every_block_and_start_exact(make, preset, count):
    model = make().eval()
    inputs = h_and_mask(make)
    with torch.no_grad():
        bare = model(*inputs)
        sp.inject_prior(model, preset, prior_dim=8)
        injector = sp.get_injector(model)
        assert len(injector.targets) == count and set(injector.positions.values()) == {"input"}
        assert set(injector.channel_axes.values()) == {-1}
        assert all(name.endswith((".0", ".fn")) for name in injector.targets)
        assert torch.equal(model(*inputs), bare), "a fresh injection changes nothing"
        perturb(model)
        assert not torch.allclose(model(*inputs), bare)
        sp.remove_prior(model)
        assert torch.equal(model(*inputs), bare)
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# -- the channel axis ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, spatial, axis",
    [
        ([1, 28, 32, 48], (32, 48), 1),  # channels first
        ([1, 32, 48, 28], (32, 48), -1),  # channels last
        ([1, 32, 32, 28], (32, 32), -1),  # channels last from a square input: MST's normalised features
        ([1, 56, 16, 24], (32, 48), 1),  # a lower level of the U-Net
        ([1, 16, 24, 56], (32, 48), -1),
        ([2, 7, 32], None, -1),  # tokens
        ([2, 32], None, 1),
        ([1, 28, 5, 7], None, 1),  # no 4-D input to compare with: PyTorch's convention
    ],
)
def test_the_channel_axis_is_read_from_the_aspect_ratio(shape, spatial, axis):
    assert infer_channel_axis(shape, spatial) == axis


class _Wrapped(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_an_ambiguous_channel_axis_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"channel axis of 'mid' \(\[1, 32, 32, 32\]\) is ambiguous: pass channel_axis=1"):
        infer_channel_axis([1, 32, 32, 32], (64, 64), name="mid")
    net = _Wrapped(nn.Conv2d(28, 32, 3, padding=1))
    with pytest.raises(ValueError, match="is ambiguous"):
        sp.inject_prior(net, ["inner"], prior_dim=4, example_inputs=torch.rand(1, 28, 32, 32))
    sp.inject_prior(net, ["inner"], prior_dim=4, example_inputs=torch.rand(1, 28, 32, 32), channel_axis=1)
    assert sp.get_injector(net).channels == {"inner": 32}


def test_mst_features_are_read_channels_last_even_from_a_square_probe():
    model = mst_s()
    square = (torch.rand(1, 28, 32, 32), torch.rand(1, 28, 32, 86))
    sp.inject_prior(model, r"encoder_layers\.0\.0\.blocks\.0\.1\.fn", prior_dim=4, position="input", example_inputs=square)
    injector = sp.get_injector(model)
    assert injector.channels == {"encoder_layers.0.0.blocks.0.1.fn": 28}
    assert injector.channel_axes == {"encoder_layers.0.0.blocks.0.1.fn": -1}
    model(torch.rand(1, 28, 64, 64), torch.rand(1, 28, 64, 118))  # another size runs: the axis was not a spatial one


# -- hooks that fire ------------------------------------------------------------------------------------------------


def test_a_hook_on_any_part_of_a_binary_conv_fires_and_the_result_is_unchanged():
    conv = BinaryConv2d(8, 3, padding=1).eval()
    with torch.no_grad():
        for parameter in conv.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    x = torch.randn(2, 8, 6, 10)
    with torch.no_grad():
        fused = conv(x)
    parts = ("move0", "binary_activation", "binary_conv", "relu", "relu.pr_bias0", "relu.pr_prelu", "relu.pr_bias1")
    modules = dict(conv.named_modules())
    for part in parts:
        fired = []
        handle = modules[part].register_forward_hook(lambda *_: fired.append(True))
        with torch.no_grad():
            torch.testing.assert_close(conv(x), fused, rtol=1e-6, atol=1e-6)  # the conv's bias vs a separate add
        handle.remove()
        assert fired, f"a hook on {part} never fired"


def test_every_named_module_of_bisrnet_can_be_a_target():
    model = bisrnet().eval()
    inputs = h_and_mask(bisrnet)
    with torch.no_grad():
        bare = model(*inputs)
        sp.inject_prior(model, r"body\.0\.embedding\.(move0|relu\.pr_prelu)", prior_dim=8, example_inputs=inputs)
        assert sp.get_injector(model).targets == ["body.0.embedding.move0", "body.0.embedding.relu.pr_prelu"]
        assert torch.equal(model(*inputs), bare)
        perturb(model)
        assert not torch.allclose(model(*inputs), bare)


def test_a_target_that_never_runs_as_a_module_is_refused():
    class CallsForwardDirectly(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Conv2d(4, 4, 1)
            self.outer = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.outer(self.inner.forward(x))  # bypasses inner's hooks

    with pytest.raises(ValueError, match=r"target 'inner' never runs as a module .* modules that do run nearby: \[.*'outer'"):
        sp.inject_prior(CallsForwardDirectly(), ["inner"], prior_dim=4, example_inputs=torch.rand(1, 4, 6, 8))


# -- old files -----------------------------------------------------------------------------------------------------


def test_an_injection_saved_with_block_output_spims_loads_as_it_was():
    """The embedded bisrnet-sdp was saved by release 0.1, before positions were recorded, under the preset name that
    now modulates inside the blocks: it loads with its own recorded targets, on the block outputs."""
    model = sp.inject_prior(bisrnet(), prior="bisrnet-sdp")
    injector = sp.get_injector(model)
    blocks = ["encoder_layers.0.0", "encoder_layers.1.0", "bottleneck", "decoder_layers.0.2", "decoder_layers.1.2"]
    assert [t.removeprefix("body.0.") for t in injector.targets] == blocks
    assert set(injector.positions.values()) == {"output"}
    with torch.no_grad():
        out = model.eval()(*h_and_mask(bisrnet, batch=1))
    assert torch.isfinite(out).all()


def test_an_injection_saved_with_input_spims_loads_on_the_inputs():
    model = sp.inject_prior(mst_s(), prior="mst_s-sdp")  # format 2: the `mst` preset inside every block
    injector = sp.get_injector(model)
    assert len(injector.targets) == 20 and set(injector.positions.values()) == {"input"}
    with torch.no_grad():
        out = model.eval()(*h_and_mask(mst_s, batch=1))
    assert torch.isfinite(out).all()


# -- bfloat16 autocast ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("injected", [False, True], ids=["bare", "injected"])
@pytest.mark.parametrize("make, preset", [(mst_s, "mst"), (mst_plus_plus, "mst_plus_plus"), (bisrnet, "bisrnet")])
def test_a_bf16_autocast_training_step_works_on_every_backbone(make, preset, injected):
    """CPU bfloat16 autocast: the path CUDA training takes with mixed precision (its default there)."""
    model = make().train()
    if injected:
        sp.inject_prior(model, preset, prior=sp.SpectralDiffusionPrior(sp.PriorConfig(prior_dim=16, hfe_dim=8, hfe_depth=1)))
        perturb(model)
    inputs, gt = h_and_mask(make), torch.rand(2, 28, 16, 24)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = (model(*inputs).float() - gt).square().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None and "teacher" not in n]
    assert not missing, f"no gradient reached {missing[:3]}"
    assert all(torch.isfinite(p.grad).all() and p.grad.dtype == p.dtype for p in model.parameters() if p.grad is not None)
    optimizer.step()
