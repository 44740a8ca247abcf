"""HFE: output shapes, input checks, compute budget and gradients."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from spectral_prior.sdp.hfe import HFE


@pytest.mark.parametrize("teacher", [False, True])
@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_output_shape(teacher, size):
    hfe = HFE(out_dim=32, teacher=teacher)
    h = torch.randn(2, 28, *size)
    out = hfe(h, torch.randn_like(h) if teacher else None)
    assert out.shape == (2, 32)
    assert torch.isfinite(out).all()


def test_teacher_uses_gt():
    hfe = HFE(teacher=True)
    h = torch.randn(1, 28, 32, 32)
    assert not torch.allclose(hfe(h, torch.zeros_like(h)), hfe(h, torch.ones_like(h)))


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 28, 1, 64), "at least 2x2.*1x64"),
        ((1, 31, 64, 64), "28 bands.*got 31"),
        ((28, 64, 64), "shape"),
    ],
)
def test_bad_shapes(shape, message):
    with pytest.raises(ValueError, match=message):
        HFE()(torch.randn(*shape))


@pytest.mark.parametrize("size", [(60, 64), (66, 36), (5, 3)])
def test_sizes_off_the_multiple_of_8_are_padded(size):
    """e.g. the real system's 660x660 scenes: padded, not refused, and the output stays a function of the input."""
    hfe = HFE().eval()
    h = torch.rand(2, 28, *size)
    out = hfe(h)
    assert out.shape == (2, 256) and torch.isfinite(out).all()
    assert torch.allclose(hfe(h[:1]), out[:1], atol=1e-6)


def test_nan_input():
    h = torch.randn(1, 28, 32, 32)
    h[0, 3, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        HFE()(h)
    with pytest.raises(ValueError, match="NaN"):
        HFE(teacher=True)(torch.randn(1, 28, 32, 32), h)


def test_gt_rules():
    h = torch.randn(1, 28, 32, 32)
    with pytest.raises(ValueError, match="teacher"):
        HFE(teacher=True)(h)
    with pytest.raises(ValueError, match="student"):
        HFE()(h, h)
    with pytest.raises(ValueError, match="same shape"):
        HFE(teacher=True)(h, torch.randn(1, 28, 32, 40))


@pytest.mark.parametrize("teacher", [False, True])
def test_flops_budget_at_256(teacher):
    """Well under 5% of a 28-GFLOP backbone at 256x256 (FLOPs = 2 x multiply-accumulates)."""
    hfe = HFE(teacher=teacher)
    h = torch.randn(1, 28, 256, 256)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        hfe(h, h if teacher else None)
    flops = counter.get_total_flops()
    assert 1e8 < flops < 1.4e9
    if not teacher:
        assert flops < 0.7e9


def test_gradients_flow():
    hfe = HFE(teacher=True)
    h = torch.randn(2, 28, 32, 32, requires_grad=True)
    gt = torch.randn(2, 28, 32, 32, requires_grad=True)
    hfe(h, gt).square().mean().backward()
    assert h.grad.abs().sum() > 0 and gt.grad.abs().sum() > 0
    for name, param in hfe.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_float64():
    hfe = HFE(out_dim=16).double()
    out = hfe(torch.randn(1, 28, 32, 32, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (1, 16)
