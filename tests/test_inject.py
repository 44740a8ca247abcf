"""inject_prior / remove_prior on toy models and on our backbones: exactness, hooks, contexts, save/load."""
from __future__ import annotations

import copy
import json
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import spectral_prior as sp
from spectral_prior.adapters import bisrnet, mst_s
from spectral_prior.sdp.injector import _active_priors


# -- toy models ----------------------------------------------------------------------------------------------------


class ToyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 12))

    def forward(self, x):
        return self.layers(x)


class ConvBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + F.gelu(self.conv(x))


class ToyUNet(nn.Module):
    """Channels-first features with its own block names; ``use_checkpoint`` re-runs ``mid`` during backward."""

    def __init__(self, bands=28, width=16, use_checkpoint=None):
        super().__init__()
        self.stem = nn.Conv2d(bands, width, 3, padding=1)
        self.down_block = ConvBlock(width)
        self.down = nn.Conv2d(width, 2 * width, 2, stride=2)
        self.mid = ConvBlock(2 * width)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.up_block = ConvBlock(width)
        self.head = nn.Conv2d(width, bands, 3, padding=1)
        self.use_checkpoint = use_checkpoint

    def forward(self, x, scale=1.0):
        skip = self.down_block(self.stem(x))
        h = self.down(skip)
        if self.use_checkpoint is None:
            h = self.mid(h)
        else:
            h = checkpoint(self.mid, h, use_reentrant=self.use_checkpoint)
        return x + scale * self.head(self.up_block(self.up(h) + skip))


class ToyTransformer(nn.Module):
    """Channels-last tokens [B, N, C] from a [B, C, H, W] input."""

    def __init__(self, bands=28, dim=32):
        super().__init__()
        self.embed = nn.Linear(bands, dim)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=64, batch_first=True, dropout=0.0)
            for _ in range(2)
        )
        self.out = nn.Linear(dim, bands)

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = self.embed(x.flatten(2).transpose(1, 2))
        for block in self.blocks:
            tokens = block(tokens)
        return self.out(tokens).transpose(1, 2).reshape(b, c, h, w)


def toy_cube(batch=2, height=16, width=24):
    """Not square, so that the probe tells a channel axis from a spatial one."""
    return torch.rand(batch, 28, height, width)


CASES = {
    "mlp": dict(make=ToyMLP, layers=["layers.0", "layers.2"], inputs=lambda b=2: (torch.rand(b, 12),), channels=[32, 32]),
    "unet": dict(make=ToyUNet, layers=r"(down_block|mid|up_block)", inputs=lambda b=2: (toy_cube(b),), channels=[16, 32, 16]),
    "transformer": dict(make=ToyTransformer, layers=["blocks.0", "blocks.1"], inputs=lambda b=2: (toy_cube(b, 8, 8),), channels=[32, 32]),
    "mst_s-blocks": dict(
        make=mst_s, layers="mst-blocks", inputs=lambda b=2: (toy_cube(b), torch.rand(b, 28, 16, 78)),
        channels=[28, 56, 112, 56, 28],
    ),
    "bisrnet-blocks": dict(
        make=bisrnet, layers="bisrnet-blocks", inputs=lambda b=2: (toy_cube(b), torch.rand(b, 28, 16, 24)),
        channels=[28, 56, 112, 56, 28],
    ),
    # SPIM on block inputs (forward pre-hooks): every attention's and feed-forward's input, channels last.
    "mst_s": dict(
        make=mst_s, layers="mst", inputs=lambda b=2: (toy_cube(b), torch.rand(b, 28, 16, 78)),
        channels=[28] * 4 + [56] * 4 + [112] * 4 + [56] * 4 + [28] * 4,  # (attention, feed-forward) x 2 per level
    ),
    "bisrnet": dict(
        make=bisrnet, layers="bisrnet", inputs=lambda b=2: (toy_cube(b), torch.rand(b, 28, 16, 24)),
        channels=[28, 56, 112, 56, 28],
    ),
    "unet-inputs": dict(
        make=ToyUNet, layers=r"(down_block|mid|up_block)", inputs=lambda b=2: (toy_cube(b),), channels=[16, 32, 16],
        position="input",
    ),
}


def injected(case, prior_dim=8, **kwargs):
    spec = CASES[case]
    model = spec["make"]().eval()
    inputs = spec["inputs"]()
    kwargs.setdefault("position", spec.get("position"))
    sp.inject_prior(model, spec["layers"], prior_dim=prior_dim, example_inputs=inputs, **kwargs)
    return model, inputs


def perturb(model):
    """Give the SPIMs non-zero weights so that the prior changes the output."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for spim in model.spectral_prior.spims.values():
            spim.proj.weight.copy_(torch.randn(spim.proj.weight.shape, generator=generator) * 0.1)
            spim.proj.bias.copy_(torch.randn(spim.proj.bias.shape, generator=generator) * 0.1)
    return model


# -- exactness ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_fresh_injection_is_exact_then_modulates_and_removes_without_trace(case):
    spec = CASES[case]
    model = spec["make"]().eval()
    inputs = spec["inputs"]()
    bare_keys = list(model.state_dict())
    with torch.no_grad():
        bare = model(*inputs)
        sp.inject_prior(model, spec["layers"], prior_dim=8, example_inputs=inputs, position=spec.get("position"))
        injector = model.spectral_prior
        assert [injector.channels[name] for name in injector.targets] == spec["channels"]
        assert torch.equal(model(*inputs), bare), "SPIM starts at zero: a fresh injection changes nothing"

        perturb(model)
        assert not torch.allclose(model(*inputs), bare)
        with injector.disable():
            assert torch.equal(model(*inputs), bare)

        extra = [k for k in model.state_dict() if k not in bare_keys]
        assert extra and all(k.startswith("spectral_prior.") for k in extra)
        assert [k for k in model.state_dict() if not k.startswith("spectral_prior.")] == bare_keys

        sp.remove_prior(model)
        assert list(model.state_dict()) == bare_keys
        assert torch.equal(model(*inputs), bare)
        assert not any(model._forward_hooks) and not any(model._forward_pre_hooks)
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_spim_formula_and_errors():
    spim = sp.SPIM(prior_dim=4, channels=3)
    assert torch.count_nonzero(spim.proj.weight) == 0 and torch.count_nonzero(spim.proj.bias) == 0
    with torch.no_grad():
        spim.proj.weight.normal_()
        spim.proj.bias.normal_()
    x, z = torch.rand(2, 3, 5, 5), torch.rand(2, 4)
    scale, shift = spim.proj(z).chunk(2, dim=-1)
    expected = x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    torch.testing.assert_close(spim(x, z), expected)
    tokens = torch.rand(2, 7, 3)
    torch.testing.assert_close(spim(tokens, z, channel_axis=-1), tokens * (1 + scale[:, None]) + shift[:, None])
    with pytest.raises(ValueError, match=r"3 channels on axis 1, got shape \[2, 4, 5, 5\]"):
        spim(torch.rand(2, 4, 5, 5), z)
    with pytest.raises(ValueError, match=r"prior must have shape \[2, 4\]"):
        spim(x, torch.rand(3, 4))


# -- layer matching and errors -----------------------------------------------------------------------------------


class Wrapped(nn.Module):
    """A user's model holding a toolbox-named backbone: the presets still find its blocks."""

    def __init__(self, backbone):
        super().__init__()
        self.net = backbone

    def forward(self, x, mask):
        return self.net(x, mask)


@pytest.mark.parametrize(
    "make, preset, count", [(mst_s, "mst", 20), (bisrnet, "bisrnet", 5), (mst_s, "mst-blocks", 5), (bisrnet, "bisrnet-blocks", 5)]
)
def test_presets_match_toolbox_names_also_when_nested(make, preset, count):
    direct = sp.inject_prior(make(), preset, prior_dim=8).spectral_prior.targets
    nested = sp.inject_prior(Wrapped(make()), preset, prior_dim=8).spectral_prior.targets
    assert nested == ["net." + name for name in direct]
    assert any("bottleneck" in name for name in direct) and len(direct) == count


def test_list_entries_match_full_names_and_dotted_suffixes():
    model = ToyUNet()
    assert sp.sdp.targets.match_targets(model, ["mid", "up_block.conv"]) == ["mid", "up_block.conv"]
    assert sp.sdp.targets.match_targets(Wrapped(ToyUNet()), ["mid"]) == ["net.mid"]


def test_no_match_lists_close_candidates():
    with pytest.raises(ValueError, match=r"matches no module of ToyUNet; close module names: \['mid'"):
        sp.inject_prior(ToyUNet(), ["midd"], prior_dim=8, example_inputs=toy_cube())


def test_nested_targets_are_rejected():
    with pytest.raises(ValueError, match=r"'mid.conv' lies inside target 'mid'"):
        sp.inject_prior(ToyUNet(), ["mid", "mid.conv"], prior_dim=8, example_inputs=toy_cube())


def test_injecting_twice_needs_replace():
    model, inputs = injected("unet")
    with pytest.raises(ValueError, match="already has a prior injected.*replace=True"):
        sp.inject_prior(model, ["mid"], prior_dim=8, example_inputs=inputs)
    sp.inject_prior(model, ["mid"], prior_dim=4, example_inputs=inputs, replace=True)
    assert model.spectral_prior.targets == ["mid"] and model.spectral_prior.prior_dim == 4
    assert len(model._forward_hooks) == 1 and len(model._forward_pre_hooks) == 1


class TupleBlock(nn.Module):
    def forward(self, x):
        return x, x


class TupleModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = TupleBlock()

    def forward(self, x):
        return self.block(x)[0]


def test_target_with_non_tensor_output_is_named():
    with pytest.raises(TypeError, match=r"target 'block' returns tuple; SPIM modulates a tensor"):
        sp.inject_prior(TupleModel(), ["block"], prior_dim=8, example_inputs=toy_cube())


def test_channels_given_or_checked_against_the_probe():
    model = sp.inject_prior(ToyUNet(), ["mid"], prior_dim=8, channels=32, example_inputs=toy_cube())
    assert model.spectral_prior.channels == {"mid": 32}
    with pytest.raises(ValueError, match=r"channels\['mid'\] = 16, but the block outputs 32 channels on axis 1"):
        sp.inject_prior(ToyUNet(), ["mid"], prior_dim=8, channels={"mid": 16}, example_inputs=toy_cube())
    with pytest.raises(ValueError, match="pass example_inputs="):
        sp.inject_prior(ToyUNet(), ["mid"], prior_dim=8)
    with pytest.raises(ValueError, match="prior_dim="):
        sp.inject_prior(ToyUNet(), ["mid"], example_inputs=toy_cube())


# -- the prior's life cycle in a forward ---------------------------------------------------------------------------


class CountingPrior(nn.Module):
    """Pools the input, and offers a teacher path that returns a recognisable constant."""

    prior_dim = 8

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(28, 8)
        self.calls = 0

    def forward(self, h):
        self.calls += 1
        return self.proj(h.mean(dim=(2, 3)))

    def teacher(self, h, gt):
        return torch.full((h.shape[0], 8), 5.0) + 0 * gt.mean()


def test_prior_runs_once_per_forward_and_is_forgotten_after():
    prior = CountingPrior()
    model = perturb(sp.inject_prior(ToyUNet().eval(), r"(down_block|mid|up_block)", prior, example_inputs=toy_cube()))
    prior.calls = 0
    model(toy_cube())
    assert prior.calls == 1
    assert _active_priors() == {}
    with model.spectral_prior.disable():
        model(toy_cube())
    assert prior.calls == 1


class Exploding(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_an_exception_in_forward_leaves_no_stale_prior():
    model = ToyUNet().eval()
    sp.inject_prior(model, ["mid"], CountingPrior(), example_inputs=toy_cube())
    model.up_block = Exploding()
    with pytest.raises(RuntimeError, match="boom"):
        model(toy_cube())
    assert _active_priors() == {}
    # A target called directly, outside a root forward, is not modulated by an old prior.
    perturb(model)
    h = torch.rand(2, 32, 8, 8)
    with torch.no_grad():
        with model.spectral_prior.disable():
            bare_mid = model.mid(h)
        assert torch.equal(model.mid(h), bare_mid)


def test_teacher_context_feeds_the_teacher_prior():
    prior = CountingPrior()
    model = perturb(sp.inject_prior(ToyUNet().eval(), ["mid"], prior, example_inputs=toy_cube()))
    x, gt = toy_cube(), toy_cube()
    with torch.no_grad():
        with model.spectral_prior.teacher(gt):
            taught = model(x)
        spim = model.spectral_prior.spims["mid"]
        seen = {}
        handle = model.spectral_prior.spims["mid"].register_forward_hook(lambda m, a, o: seen.update(z=a[1]))
        with model.spectral_prior.teacher(gt):
            model(x)
        handle.remove()
    assert torch.equal(seen["z"], torch.full((2, 8), 5.0))
    assert not torch.equal(taught, model(x))
    assert spim is model.spectral_prior.spims["mid"]
    linear = sp.inject_prior(ToyUNet(), ["mid"], prior_dim=8, example_inputs=toy_cube())
    with pytest.raises(TypeError, match="LinearPrior has no teacher"):
        with linear.spectral_prior.teacher(gt):
            linear(x)


# -- PyTorch machinery ---------------------------------------------------------------------------------------------


def test_state_dict_round_trip_and_dtype_moves():
    model, inputs = injected("mst_s")
    perturb(model)
    clone, _ = injected("mst_s")
    clone.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(clone(*inputs), model(*inputs))
    model64 = model.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in model64.spectral_prior.parameters())
    with torch.no_grad():
        out = model64(*(t.double() for t in inputs))
    assert out.dtype == torch.float64


def test_torch_compile_matches_eager():
    model, inputs = injected("unet")
    perturb(model)
    with torch.no_grad():
        eager = model(*inputs)
        compiled = torch.compile(model)(*inputs)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def test_autocast_bfloat16_on_cpu():
    model, inputs = injected("unet")
    perturb(model)
    with torch.no_grad():
        reference = model(*inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(*inputs)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, rtol=0.1, atol=0.1)


def data_parallel_replica(model: nn.Module) -> nn.Module:
    """A replica made the way torch.nn.parallel.replicate makes one: shallow copies sharing the hook dicts."""
    replicas = {}
    for module in model.modules():
        replicas[module] = module._replicate_for_data_parallel()
    for module, replica in replicas.items():
        for name, child in module._modules.items():
            replica._modules[name] = replicas[child] if child is not None else None
        for name, param in module._parameters.items():
            if param is not None:
                setattr(replica, name, param.detach().clone())
    return replicas[model]


def run_in_threads(calls):
    """Run each zero-argument call in its own thread, all released together; return their results."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def worker(index, call):
        barrier.wait()
        for _ in range(5):
            results[index] = call()

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_data_parallel_style_replicas_in_threads_keep_their_own_prior():
    model, _ = injected("unet")
    perturb(model)
    replicas = [data_parallel_replica(model) for _ in range(2)]
    assert replicas[0]._forward_pre_hooks is model._forward_pre_hooks  # shared, as DataParallel shares them
    chunks = [toy_cube(2), toy_cube(2) * 3]
    with torch.no_grad():
        expected = [model(chunk) for chunk in chunks]
        outputs = run_in_threads([lambda r=r, c=c: r(c) for r, c in zip(replicas, chunks)])
    for out, ref in zip(outputs, expected):
        assert torch.equal(out, ref)


def test_two_injected_models_in_two_threads_do_not_mix_priors():
    models = [perturb(injected("unet")[0]) for _ in range(2)]
    perturb(models[1]).spectral_prior.spims["mid"].proj.bias.data.add_(1.0)
    inputs = [toy_cube(), toy_cube()]
    with torch.no_grad():
        expected = [m(x) for m, x in zip(models, inputs)]
        outputs = run_in_threads([lambda m=m, x=x: m(x) for m, x in zip(models, inputs)])
    for out, ref in zip(outputs, expected):
        assert torch.equal(out, ref)


def test_checkpointed_target_gets_its_prior_on_recomputation():
    def gradients(use_checkpoint):
        torch.manual_seed(0)
        model = ToyUNet(use_checkpoint=use_checkpoint)
        sp.inject_prior(model, ["mid"], CountingPrior(), example_inputs=toy_cube())
        perturb(model).train()
        x = torch.rand(2, 28, 16, 16, generator=torch.Generator().manual_seed(3))
        out_a = model(x)
        out_b = model(x * 2)  # a second forward before backward: each recomputation must use its own prior
        (out_a.square().mean() + out_b.abs().mean()).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain, checkpointed = gradients(None), gradients(False)  # use_reentrant=False
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)
    assert plain["spectral_prior.spims.mid.proj.weight"].abs().sum() > 0


def test_deepcopy_gives_an_independent_injected_model():
    model, inputs = injected("unet")
    twin = copy.deepcopy(perturb(model))
    with torch.no_grad():
        assert torch.equal(twin(*inputs), model(*inputs))
        sp.remove_prior(twin)
        assert not torch.equal(twin(*inputs), model(*inputs))


def test_a_deep_copy_has_its_own_key_even_when_run_inside_the_original():
    """The copy's forward, run from inside the original's (a model holding its own copy), leaves the original's
    prior alone."""
    model, inputs = injected("unet")
    perturb(model)
    twin = copy.deepcopy(model)
    assert twin.spectral_prior.key != model.spectral_prior.key
    with torch.no_grad():
        expected = model(*inputs)

        def run_the_copy(*_):
            twin(inputs[0] * 0.5)  # mid-forward of the original: the copy's prior must not replace the original's

        handle = model.down_block.register_forward_hook(run_the_copy)
        assert torch.equal(model(*inputs), expected)
        handle.remove()


# -- trainable parameters and save / load --------------------------------------------------------------------------


def test_trainable_parameters_and_peft_style_print(capsys):
    model, _ = injected("unet")
    injector = model.spectral_prior
    assert {id(p) for p in injector.trainable_parameters()} == {id(p) for p in injector.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in injector.parameters():
        p.requires_grad_(True)
    injector.print_trainable_parameters(model)
    added = sum(p.numel() for p in injector.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert capsys.readouterr().out.strip() == (
        f"trainable params: {added:,} || all params: {total:,} || trainable%: {100 * added / total:.4f}"
    )


def test_save_pretrained_then_inject_from_the_directory(tmp_path):
    model, inputs = injected("mst_s")
    perturb(model)
    card = {"training data": "procedural scenes, 64x64 crops", "PSNR": "30.1 dB"}
    model.spectral_prior.save_pretrained(tmp_path / "prior", backbone=model, card=card)
    readme = (tmp_path / "prior" / "README.md").read_text()
    assert "library_name: spectral-prior" in readme and "- backbone: MST" in readme
    assert "- training data: procedural scenes, 64x64 crops" in readme and "- PSNR: 30.1 dB" in readme
    config = json.loads((tmp_path / "prior" / "config.json").read_text())
    assert config["kind"] == "injector" and config["preset"] == "mst" and config["layers"] == "mst"
    assert config["channels"]["bottleneck.blocks.0.1.fn"] == 112 and config["prior_dim"] == 8
    assert config["library_version"] == sp.__version__ and config["prior"]["class"] == "LinearPrior"

    fresh = sp.inject_prior(mst_s().eval(), "mst", prior=tmp_path / "prior")
    with torch.no_grad():
        assert torch.equal(fresh(*inputs), model(*inputs))
    assert sorted(p.name for p in (tmp_path / "prior").iterdir()) == [
        "README.md", "backbone.safetensors", "config.json", "model.safetensors"
    ]

    with pytest.raises(ValueError, match=r"trained with a MST of [\d,]+ parameters, but this model is a BiSRNet"):
        sp.inject_prior(bisrnet(), "mst", prior=tmp_path / "prior")  # before its backbone weights fail to load
    model.spectral_prior.save_pretrained(tmp_path / "no-backbone")
    with pytest.raises(ValueError, match=r"trained with a MST of [\d,]+ parameters, but this model is a BiSRNet"):
        sp.inject_prior(bisrnet(), "mst", prior=tmp_path / "no-backbone")
    with pytest.raises(ValueError, match=r"trained with a MST of 922,648 parameters, but this model is a MST of [\d,]+"):
        sp.inject_prior(mst_s(num_blocks=(1, 1, 1)), "mst", prior=tmp_path / "prior")  # another MST variant


def test_distill_drives_the_blocks_with_the_student_started_from_the_teacher():
    from spectral_prior.adapters import mst_s

    torch.manual_seed(0)
    config = sp.PriorConfig(prior_dim=16, hfe_dim=8, hfe_depth=1, denoiser_hidden=16, denoiser_depth=1)
    model = sp.inject_prior(mst_s(), "mst", prior=sp.SpectralDiffusionPrior(config)).train()
    injector = sp.get_injector(model)
    h, phi, gt = torch.rand(2, 28, 32, 32), torch.rand(2, 28, 32, 86), torch.rand(2, 28, 32, 32)
    with injector.distill(gt) as pairs:
        model(h, phi)
    assert len(pairs) == 1
    z_student, z_teacher = pairs[0]
    assert z_student.shape == z_teacher.shape == (2, 16)
    assert not z_teacher.requires_grad and z_student.requires_grad
    assert torch.equal(z_teacher, injector.prior.teacher(h, gt))
    assert injector._distilled is None and injector._teacher_gt is None


class _TwoConvs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Conv2d(4, 4, 1)
        self.dec = torch.nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


class _Other(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).relu()


def test_injection_recompiles_the_models_own_classes_only():
    """Code compiled for another model of the same class is not reused bare; other classes' code is kept."""
    compilations = []

    def counting_backend(graph, example_inputs):
        compilations.append(graph)
        return graph.forward

    x, other_input = torch.rand(1, 4, 8, 8), torch.rand(2, 3)
    other, first, second = _Other(), _TwoConvs().eval(), _TwoConvs().eval()
    run_other, run_first = torch.compile(other, backend=counting_backend), torch.compile(first, backend=counting_backend)
    with torch.no_grad():
        run_other(other_input), run_first(x)
        assert len(compilations) == 2
        sp.inject_prior(second, ["enc"], prior_dim=8, example_inputs=(x,))
        for p in sp.get_injector(second).spims.parameters():
            p.normal_()
        eager = second(x)
        assert torch.allclose(torch.compile(second, backend=counting_backend)(x), eager)
        traced = len(compilations)
        assert traced > 2  # the injected model was traced again, with its hooks
        run_other(other_input)
        assert len(compilations) == traced  # _Other's compiled code survived the injection


@pytest.mark.parametrize("compiled", ["torch.compile(model)", "model.compile()"])
def test_a_model_compiled_before_injection_runs_the_prior_and_runs_bare_after_removal(compiled):
    """torch.compile does not guard on hooks: injection and removal must not leave stale compiled code running."""
    x = torch.rand(1, 4, 8, 8)
    net = _TwoConvs().eval()
    reference = copy.deepcopy(net)
    if compiled == "model.compile()":
        net.compile(backend="eager")
        run = net
    else:
        run = torch.compile(net, backend="eager")
    with torch.no_grad():
        bare = run(x)
        sp.inject_prior(net, ["enc"], prior_dim=8, example_inputs=(x,))
        for p in sp.get_injector(net).spims.parameters():
            p.normal_()
        sp.inject_prior(reference, ["enc"], prior_dim=8, example_inputs=(x,))
        reference.load_state_dict(net.state_dict())
        injected = run(x)
        assert torch.allclose(injected, reference(x)) and not torch.allclose(injected, bare)
        sp.remove_prior(net)
        assert torch.allclose(run(x), bare)


def test_misused_calls_name_the_fix():
    with pytest.raises(TypeError, match=r"takes the model \(an nn.Module\), got the str 'mst_s': build it first, "
                       r"e.g. create_backbone\('mst_s'\)"):
        sp.inject_prior("mst_s", "mst")
    with pytest.raises(TypeError, match=r"unexpected keyword arguments 'prior_dimm' \(did you mean 'prior_dim'\?\); "
                       "it takes model, layers, prior"):
        sp.inject_prior(mst_s(), "mst", prior_dimm=8)
    with pytest.raises(ValueError, match="was trained with a BiSRNet of .* but this model is a MST"):
        sp.inject_prior(mst_s(), prior="bisrnet-sdp")  # refused before any weight loads, not on a missing key


@pytest.mark.parametrize("container", [nn.Sequential(nn.Conv2d(3, 3, 1)), nn.ModuleList([nn.Conv2d(3, 3, 1)])])
def test_a_bare_container_is_refused_with_the_fix(container):
    with pytest.raises(sp.errors.InvalidInputError, match="wrap it in an nn.Module"):
        sp.inject_prior(container, ["0"], prior=sp.LinearPrior(4, in_channels=3), channels=3)
