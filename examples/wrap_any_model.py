"""Inject a spectral prior into a network the library has never seen: your own U-Net.

    python examples/wrap_any_model.py [--steps 40]

Three things tell ``inject_prior`` how to wrap a model it has no preset for:

* ``layers``: which blocks SPIM modulates, as a regex (``re.fullmatch`` on dotted module names) or a list of names /
  dotted suffixes. Each block must return one tensor, [B, C, ...] or tokens [B, N, C].
* ``condition``: what the prior sees, taken from the model's forward arguments (here the keyword ``meas``).
* ``example_inputs``: one small input for a probe forward that reads each block's channel count.

The backbone is frozen and only the prior and the SPIMs train (as a peft adapter would), on a few random scenes;
removing the prior gives back the bare network, bit for bit. Runs in a few seconds on a CPU.
"""
from __future__ import annotations

import argparse
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

import spectral_prior as sp
from spectral_prior import cassi

BANDS = 28


def conv_pair(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
    )


class Down(nn.Module):
    """Returns ``(pooled, skip)``: a tuple, so the block itself cannot be modulated, but its ``conv`` can."""

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


class TinyUNet(nn.Module):
    """A reconstruction network with its own block names, called as ``net(meas=h, mask=mask3d)``."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2 * BANDS, width, 3, padding=1)
        self.down1 = Down(width, width)
        self.down2 = Down(width, 2 * width)
        self.mid = nn.Sequential(  # a container: its ``conv`` child is the block to modulate
            OrderedDict(conv=conv_pair(2 * width, 4 * width), proj=nn.Conv2d(4 * width, 2 * width, 1))
        )
        self.up2 = Up(2 * width, 2 * width, width)
        self.up1 = Up(width, width, width)
        self.head = nn.Conv2d(width, BANDS, 3, padding=1)

    def forward(self, *, meas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x, skip1 = self.down1(self.stem(torch.cat([meas, mask], dim=1)))
        x, skip2 = self.down2(x)
        x = self.up2(self.mid(x), skip2)
        return meas + self.head(self.up1(x, skip1))


def random_scenes(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth random cubes [B, 28, size, size] in [0, 1]: a coarse random grid, upsampled."""
    coarse = torch.rand(batch, BANDS, size // 8, size // 8, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="optimisation steps (default 40)")
    args = parser.parse_args()
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)

    gt = random_scenes(4, 32, generator)
    mask = (torch.rand(32, 32, generator=generator) > 0.5).float()
    meas, mask3d = cassi.simulate(gt, cassi.mask3d(mask), input_setting="H", mask_setting="Mask")

    net = TinyUNet().eval()
    with torch.no_grad():
        bare = net(meas=meas, mask=mask3d)

    sp.inject_prior(
        net,
        layers=r"(down\d|mid)\.conv",  # the blocks to modulate; a list works too: ["down1.conv", "mid.conv"]
        condition=lambda args, kwargs: kwargs["meas"],  # the prior sees the 'H' input, passed by keyword
        prior_dim=32,  # a small stand-in prior (LinearPrior); pass prior=sp.SpectralDiffusionPrior() for the real one
        example_inputs=((), {"meas": meas[:1], "mask": mask3d[:1]}),  # one probe forward reads the channel counts
    )
    injector = sp.get_injector(net)
    print("modulated blocks:", ", ".join(f"{name} ({injector.channels[name]} ch)" for name in injector.targets))

    net.requires_grad_(False)  # freeze the backbone: train only what the injection added
    injector.requires_grad_(True)
    injector.print_trainable_parameters(net)

    net.train()
    optimizer = torch.optim.Adam(injector.trainable_parameters(), lr=1e-2)
    losses = []
    for step in range(args.steps):
        optimizer.zero_grad()
        loss = F.mse_loss(net(meas=meas, mask=mask3d), gt).sqrt()  # RMSE, as the MST toolbox trains
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:3d}  loss {loss.item():.4f}")
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")

    sp.remove_prior(net.eval())
    with torch.no_grad():
        restored = torch.equal(net(meas=meas, mask=mask3d), bare)
    print(f"remove_prior: bare outputs restored exactly: {restored}")


if __name__ == "__main__":
    main()
