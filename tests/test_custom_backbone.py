"""The recipe for a backbone we do not ship: a user's own U-Net, a regex or a list of names, a condition function."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spectral_prior as sp

BANDS, WIDTH = 28, 8
REGEX = r"(down\d|mid)\.conv"


def conv_pair(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
    )


class Down(nn.Module):
    """Returns a tuple ``(pooled, skip)``: not modulable itself, but its ``conv`` returns one tensor."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv_pair(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv(x)
        return F.avg_pool2d(skip, 2), skip


class Up(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2)
        self.conv = conv_pair(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UserUNet(nn.Module):
    """A user's network with its own names, called as ``net(meas=h, mask=mask3d)``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2 * BANDS, WIDTH, 3, padding=1)
        self.down1 = Down(WIDTH, WIDTH)
        self.down2 = Down(WIDTH, 2 * WIDTH)
        self.mid = nn.Sequential(  # a container: its ``conv`` child is the block to modulate
            OrderedDict(conv=conv_pair(2 * WIDTH, 4 * WIDTH), proj=nn.Conv2d(4 * WIDTH, 2 * WIDTH, 1))
        )
        self.up2 = Up(2 * WIDTH, 2 * WIDTH, WIDTH)
        self.up1 = Up(WIDTH, WIDTH, WIDTH)
        self.head = nn.Conv2d(WIDTH, BANDS, 3, padding=1)

    def forward(self, *, meas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x, skip1 = self.down1(self.stem(torch.cat([meas, mask], dim=1)))
        x, skip2 = self.down2(x)
        x = self.up2(self.mid(x), skip2)
        return meas + self.head(self.up1(x, skip1))


def measurement_from_kwargs(args: tuple, kwargs: dict) -> torch.Tensor:
    return kwargs["meas"]


@pytest.fixture
def inputs() -> dict[str, torch.Tensor]:
    mask = (torch.rand(1, 1, 16, 24) > 0.5).float()  # not square: the probe tells channels from rows and columns
    return {"meas": torch.rand(2, BANDS, 16, 24), "mask": mask.expand(2, BANDS, 16, 24)}


def wrap(net: nn.Module, inputs: dict, layers=REGEX, condition=measurement_from_kwargs) -> nn.Module:
    return sp.inject_prior(net, layers=layers, condition=condition, prior_dim=8, example_inputs=((), inputs))


def set_spim_weights(net: nn.Module, std: float = 0.1) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for spim in sp.get_injector(net).spims.values():
            spim.proj.weight.copy_(torch.randn(spim.proj.weight.shape, generator=generator) * std)


@torch.no_grad()
def test_regex_targets_the_blocks_and_the_prior_sees_the_keyword_argument(inputs):
    seen = []

    def condition(args, kwargs):
        seen.append(kwargs["meas"])
        return kwargs["meas"]

    net = wrap(UserUNet().eval(), inputs, condition=condition)
    injector = sp.get_injector(net)
    assert injector.targets == ["down1.conv", "down2.conv", "mid.conv"]
    assert injector.channels == {"down1.conv": WIDTH, "down2.conv": 2 * WIDTH, "mid.conv": 4 * WIDTH}
    net(**inputs)
    assert seen[-1] is inputs["meas"]


@torch.no_grad()
def test_fresh_injection_is_exact_modulation_changes_outputs_and_removal_restores(inputs):
    net = UserUNet().eval()
    bare = net(**inputs)
    wrap(net, inputs)
    assert torch.equal(net(**inputs), bare), "SPIM starts at zero: a fresh injection changes nothing"
    set_spim_weights(net)
    assert not torch.allclose(net(**inputs), bare)
    sp.remove_prior(net)
    assert torch.equal(net(**inputs), bare)
    assert not any(key.startswith("spectral_prior.") for key in net.state_dict())


def test_training_updates_the_prior_and_spims_only(inputs):
    net = UserUNet()
    backbone_before = {key: value.clone() for key, value in net.state_dict().items()}
    wrap(net, inputs)
    injector = sp.get_injector(net)
    net.requires_grad_(False)
    injector.requires_grad_(True)  # peft-style: only what the injection added is trained
    injection_before = {key: value.clone() for key, value in injector.state_dict().items()}
    optimizer = torch.optim.Adam(injector.trainable_parameters(), lr=1e-2)
    target = torch.rand_like(inputs["meas"])
    for _ in range(3):  # step 1 moves the zero SPIMs; from step 2 on the prior gets gradients through them
        optimizer.zero_grad()
        F.mse_loss(net(**inputs), target).backward()
        optimizer.step()

    changed = {key for key, value in injector.state_dict().items() if not torch.equal(value, injection_before[key])}
    assert {"prior.proj.weight", "spims.down1_conv.proj.weight", "spims.mid_conv.proj.bias"} <= changed
    sp.remove_prior(net)
    assert all(torch.equal(value, backbone_before[key]) for key, value in net.state_dict().items())


def test_list_of_names_and_dotted_suffixes(inputs):
    net = UserUNet().eval()
    with torch.no_grad():
        bare = net(**inputs)
        wrap(net, inputs, layers=["down1.conv", "mid.conv"])
        assert sp.get_injector(net).targets == ["down1.conv", "mid.conv"]
        assert torch.equal(net(**inputs), bare)
        sp.remove_prior(net)
        wrap(net, inputs, layers=["conv"])  # a suffix: every block's conv, the up-sampling path included
        assert sp.get_injector(net).targets == ["down1.conv", "down2.conv", "mid.conv", "up2.conv", "up1.conv"]


def test_a_regex_matching_nothing_lists_close_names(inputs):
    with pytest.raises(ValueError, match=r"matches no module of UserUNet; close module names: \[.*'down1\.conv'"):
        wrap(UserUNet(), inputs, layers=r"down1\.convs")
    with pytest.raises(ValueError, match=r"matches no module of UserUNet; close module names: \[.*'down2\.conv'"):
        wrap(UserUNet(), inputs, layers=["down3.conv"])


def test_a_block_returning_a_tuple_is_named(inputs):
    net = UserUNet()
    with pytest.raises(TypeError, match=r"target 'down1' returns tuple; .*Choose blocks that return one tensor"):
        wrap(net, inputs, layers=r"down\d")
    assert not hasattr(net, "spectral_prior"), "a failed injection leaves the model bare"


def test_a_preset_that_does_not_fit_the_backbone_names_the_presets():
    """A backbone without input checks (e.g. the toolbox's own BiSRNet) given the wrong preset: one clear error."""

    class MaskedByElementwise(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bottleneck = torch.nn.Conv2d(28, 28, 1)

        def forward(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.bottleneck(y) * mask  # the 'mst' probe's Phi is 54 columns wider: a size mismatch deep inside

    with pytest.raises(ValueError, match=r"probe forward of preset 'mst-blocks' fails on MaskedByElementwise \(The size "
                                         r"of tensor .*is 'mst-blocks' this backbone's preset\? Presets: mst, mst-blocks"):
        sp.inject_prior(MaskedByElementwise(), "mst-blocks", prior_dim=8)
    with pytest.raises(ValueError, match=r"preset 'mst' matches no module of MaskedByElementwise: is 'mst' this "
                                         r"backbone's preset\? Presets: mst, mst-blocks"):
        sp.inject_prior(MaskedByElementwise(), "mst", prior_dim=8)
