"""PSNR, SSIM and SAM against hand-computed values and loop references written after the MST toolbox."""
import math

import pytest
import torch
import torch.nn.functional as F

from spectral_prior.evaluation.metrics import psnr, sam, ssim

# ----------------------------------------------------------------------------------------------------------------
# loop references (the toolbox's torch_psnr and ssim_torch, band by band)


def ref_psnr(img, ref):
    img = (img * 256).round()
    ref = (ref * 256).round()
    total = 0.0
    for i in range(img.shape[0]):
        mse = torch.mean((img[i] - ref[i]) ** 2)
        total += 10 * torch.log10((255 * 255) / mse)
    return total / img.shape[0]


def ref_ssim(img1, img2):
    x = torch.arange(11, dtype=img1.dtype)
    gauss = torch.exp(-((x - 5) ** 2) / (2 * 1.5**2))
    gauss = gauss / gauss.sum()
    window = (gauss[:, None] @ gauss[None, :])[None, None]
    total = 0.0
    for i in range(img1.shape[0]):
        a, b = img1[i][None, None], img2[i][None, None]
        mu1, mu2 = F.conv2d(a, window, padding=5), F.conv2d(b, window, padding=5)
        sigma1_sq = F.conv2d(a * a, window, padding=5) - mu1 * mu1
        sigma2_sq = F.conv2d(b * b, window, padding=5) - mu2 * mu2
        sigma12 = F.conv2d(a * b, window, padding=5) - mu1 * mu2
        c1, c2 = 0.01**2, 0.03**2
        ssim_map = ((2 * mu1 * mu2 + c1) * (2 * sigma12 + c2)) / (
            (mu1 * mu1 + mu2 * mu2 + c1) * (sigma1_sq + sigma2_sq + c2)
        )
        total += ssim_map.sum()
    return total / img1.numel()


def ref_sam(img, ref):
    img, ref = img.double(), ref.double()
    cos = (img * ref).sum(0) / (img.norm(dim=0) * ref.norm(dim=0))
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).mean()


def noisy(ref, sigma=0.05):
    return (ref + sigma * torch.randn_like(ref)).clamp(0, 1)


# ----------------------------------------------------------------------------------------------------------------
# PSNR


def test_psnr_of_a_constant_offset():
    ref = torch.randint(0, 200, (28, 32, 40)) / 256
    for k in (1, 3, 40):
        value = psnr(ref + k / 256, ref)
        assert value.shape == () and value.dtype == torch.float64
        assert value.item() == pytest.approx(10 * math.log10(255**2 / k**2), abs=1e-9)


def test_psnr_averages_the_bands():
    ref = torch.randint(0, 200, (2, 16, 16)) / 256
    img = ref.clone()
    img[0] += 1 / 256
    img[1] += 4 / 256
    expected = (10 * math.log10(255**2) + 10 * math.log10(255**2 / 16)) / 2
    assert psnr(img, ref).item() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_psnr_matches_loop(dtype):
    ref = torch.rand(28, 64, 96, dtype=dtype)
    img = noisy(ref)
    torch.testing.assert_close(psnr(img, ref), ref_psnr(img.double(), ref.double()))


def test_psnr_of_identical_inputs_is_inf():
    x = torch.rand(28, 16, 16)
    assert psnr(x, x).item() == math.inf
    assert torch.isinf(psnr(x[None], x[None])).all()


# ----------------------------------------------------------------------------------------------------------------
# SSIM


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(28, 32, 48), (3, 7, 5)])
def test_ssim_matches_loop(shape, dtype):
    ref = torch.rand(shape, dtype=dtype)
    img = noisy(ref, 0.1)
    value = ssim(img, ref)
    assert value.shape == () and value.dtype == dtype
    torch.testing.assert_close(value, ref_ssim(img, ref))


def test_ssim_of_identical_inputs_is_one():
    x = torch.rand(28, 32, 32)
    torch.testing.assert_close(ssim(x, x), torch.tensor(1.0))


def test_ssim_is_symmetric_and_below_one_for_noise():
    ref = torch.rand(28, 32, 32)
    img = noisy(ref)
    torch.testing.assert_close(ssim(img, ref), ssim(ref, img))
    assert -1 < ssim(img, ref).item() < 1
    assert ssim(noisy(ref, 0.2), ref) < ssim(noisy(ref, 0.02), ref)


def test_ssim_in_bfloat16():
    ref = torch.rand(28, 32, 32)
    img = noisy(ref)
    value = ssim(img.bfloat16(), ref.bfloat16())
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, ssim(img, ref), rtol=0, atol=1e-2)


def test_ssim_is_differentiable():
    ref = torch.rand(1, 6, 5, dtype=torch.float64)
    img = noisy(ref).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ssim(x, ref), (img,))


# ----------------------------------------------------------------------------------------------------------------
# SAM


def test_sam_of_a_scaled_copy_is_zero():
    ref = torch.rand(28, 16, 16) + 0.1
    scale = torch.rand(1, 16, 16) * 3 + 0.5  # a different positive scale per pixel
    assert sam(ref * scale, ref).item() == pytest.approx(0.0, abs=1e-4)
    assert sam(ref, ref).item() == 0.0


def test_sam_of_orthogonal_spectra_is_ninety_degrees():
    even = (torch.arange(28) % 2 == 0).float()[:, None, None]
    ref = even * (torch.rand(28, 8, 8) + 0.1)
    img = (1 - even) * (torch.rand(28, 8, 8) + 0.1)
    assert sam(img, ref).item() == pytest.approx(90.0, abs=1e-4)


def test_sam_of_a_known_angle():
    img = torch.tensor([1.0, 0.0]).view(2, 1, 1).expand(2, 4, 4)
    ref = torch.tensor([1.0, 1.0]).view(2, 1, 1).expand(2, 4, 4)
    assert sam(img, ref).item() == pytest.approx(45.0, abs=1e-4)
    assert sam(-ref, ref).item() == pytest.approx(180.0, abs=1e-4)


def test_sam_with_zero_spectra():
    ref = torch.rand(28, 4, 4)
    ref[:, 0, 0] = 0
    assert sam(ref, ref).item() == 0.0  # two zero spectra agree
    img = ref.clone()
    img[:, 1, 1] = 0
    assert sam(img, ref).item() == pytest.approx(90.0 / 16, abs=1e-4)  # one pixel of 16 at 90 degrees
    assert torch.isfinite(sam(torch.zeros(28, 4, 4), ref))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sam_matches_arccos_reference(dtype):
    ref = torch.rand(28, 32, 40, dtype=dtype)
    img = noisy(ref, 0.1)
    value = sam(img, ref)
    assert value.dtype == dtype
    torch.testing.assert_close(value.double(), ref_sam(img, ref), rtol=0, atol=1e-3)


def test_sam_is_differentiable():
    ref = torch.rand(4, 3, 3, dtype=torch.float64)
    img = noisy(ref, 0.2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: sam(x, ref), (img,))


# ----------------------------------------------------------------------------------------------------------------
# shapes


@pytest.mark.parametrize("metric", [psnr, ssim, sam])
def test_batched_equals_per_image(metric):
    ref = torch.rand(3, 28, 24, 32)
    img = torch.stack([noisy(ref[b], sigma) for b, sigma in enumerate((0.01, 0.05, 0.2))])
    values = metric(img, ref)
    assert values.shape == (3,)
    torch.testing.assert_close(values, torch.stack([metric(img[b], ref[b]) for b in range(3)]))
    assert values[0] != values[2]


@pytest.mark.parametrize("metric", [psnr, ssim, sam])
def test_shape_errors(metric):
    with pytest.raises(ValueError, match=r"same shape, got \[28, 8, 8\] and \[28, 8, 9\]"):
        metric(torch.rand(28, 8, 8), torch.rand(28, 8, 9))
    with pytest.raises(ValueError, match=r"same shape, got \[2, 28, 8, 8\] and \[28, 8, 8\]"):
        metric(torch.rand(2, 28, 8, 8), torch.rand(28, 8, 8))
    with pytest.raises(ValueError, match=r"\[C, H, W\] or \[B, C, H, W\] tensors, got shape \[8, 8\]"):
        metric(torch.rand(8, 8), torch.rand(8, 8))


@pytest.mark.parametrize("metric", [psnr, ssim, sam])
def test_non_finite_inputs_are_refused(metric):
    ref = torch.rand(2, 28, 16, 16)
    bad = ref.clone()
    bad[0, 3, 2, 2] = float("nan")
    bad[1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="img holds 2 NaN or infinite values"):
        metric(bad, ref)
    with pytest.raises(ValueError, match="ref holds 2 NaN"):
        metric(ref, bad)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_data_outside_the_unit_range_needs_its_data_range(metric):
    """0..255 data gave -40 dB: refused by name, and scored as its [0, 1] version once data_range is given."""
    ref = torch.rand(4, 16, 16)
    img = (ref + 0.05 * torch.randn_like(ref)).clamp(0, 1)
    with pytest.raises(ValueError, match=r"ref ranges over \[.*\] \(8-bit counts\?\), but values in \[0, 1\] are expected; "
                       "pass data_range="):
        metric(img, ref * 255)
    with pytest.raises(ValueError, match=r"img is torch.uint8 \(counts\?\), but values in \[0, 1\] are expected"):
        metric((img * 255).round().to(torch.uint8), ref)
    assert torch.allclose(metric(img * 255, ref * 255, data_range=255), metric(img, ref), atol=1e-6)
    assert torch.isfinite(metric(img * 6 - 3, ref))  # an estimate is scored wherever it lies, as the toolbox does
    with pytest.raises(ValueError, match="data_range must be a positive number"):
        metric(img, ref, data_range=0)
