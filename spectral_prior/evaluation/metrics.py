"""Image-quality metrics of hyperspectral reconstruction, with the MST toolbox's definitions.

Every metric takes ``img`` and ``ref`` of the same shape, either one cube [C, H, W] (the result is a 0-d tensor)
or a batch [B, C, H, W] (the result is [B], one value per cube). Values are expected in [0, 1]: PSNR and SSIM
refuse a reference far outside it (and an integer ``img``) unless told the data's ``data_range`` (255 for 8-bit
data), which they then scale to [0, 1].
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import check_finite, check_unit_range
from ..errors import InvalidInputError

__all__ = ["psnr", "ssim", "sam"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def _as_batch(img: Tensor, ref: Tensor) -> Tuple[Tensor, Tensor, bool]:
    """Check the pair and return it as [B, C, H, W], with whether the input was already batched."""
    for name, x in (("img", img), ("ref", ref)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if img.shape != ref.shape:
        raise InvalidInputError(f"img and ref must have the same shape, got {list(img.shape)} and {list(ref.shape)}")
    if img.dim() not in (3, 4):
        raise InvalidInputError(f"expected [C, H, W] or [B, C, H, W] tensors, got shape {list(img.shape)}")
    for name, x in (("img", img), ("ref", ref)):
        check_finite(x, name=name)
    batched = img.dim() == 4
    return (img, ref, True) if batched else (img.unsqueeze(0), ref.unsqueeze(0), False)


def _unbatch(values: Tensor, batched: bool) -> Tensor:
    return values if batched else values.squeeze(0)


def _in_unit_range(img: Tensor, ref: Tensor, data_range: float | None) -> Tuple[Tensor, Tensor]:
    """The pair scaled from [0, ``data_range``] to [0, 1]; without ``data_range``, ``ref`` (the ground truth) is
    checked to be in [0, 1] and ``img`` to be floating point. ``img`` is an estimate: an untrained network's may lie
    anywhere, and the toolbox scores it as it is."""
    if data_range is None:
        fix = "pass data_range= the data's full scale (255 for 8-bit data)"
        check_unit_range(ref, name="ref", fix=fix)
        if not img.is_floating_point():
            raise InvalidInputError(f"img is {img.dtype} (counts?), but values in [0, 1] are expected; {fix}")
        return img, ref
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise InvalidInputError(f"data_range must be a positive number (the data's full scale), got {data_range!r}")
    return img / data_range, ref / data_range


def _working_dtype(img: Tensor, ref: Tensor) -> torch.dtype:
    """The pair's common floating dtype, at least float32."""
    return torch.promote_types(torch.result_type(img, ref), torch.float32)


def psnr(img: Tensor, ref: Tensor, *, data_range: float | None = None) -> Tensor:
    """Peak signal-to-noise ratio in dB, as the MST toolbox's ``torch_psnr``.

    Both inputs are scaled by 256 and rounded; the PSNR with peak 255 is taken per band and averaged over bands.
    Computed and returned in float64. A band reconstructed exactly has infinite PSNR, so identical inputs (or any
    exact band) give ``inf``. Data in [0, ``data_range``] is first scaled to [0, 1].
    """
    img, ref, batched = _as_batch(img, ref)
    img, ref = _in_unit_range(img, ref, data_range)
    img = (img.double() * 256).round()
    ref = (ref.double() * 256).round()
    mse = (img - ref).square().mean(dim=(-2, -1))  # [B, C]
    band_psnr = 10 * torch.log10(255.0**2 / mse)
    return _unbatch(band_psnr.mean(dim=1), batched)


def _gaussian_window(device: torch.device, dtype: torch.dtype) -> Tensor:
    """The normalised 1-D SSIM gaussian (11 taps); the 2-D window is its outer product with itself."""
    offsets = torch.arange(SSIM_WINDOW, device=device, dtype=torch.float64) - SSIM_WINDOW // 2
    gauss = torch.exp(-offsets.square() / (2 * SSIM_SIGMA**2))
    return (gauss / gauss.sum()).to(dtype)


def _gaussian_blur(x: Tensor) -> Tensor:
    """Depthwise 11x11 gaussian filter with zero padding, done as a column pass then a row pass."""
    channels = x.shape[1]
    gauss = _gaussian_window(x.device, x.dtype).expand(channels, 1, SSIM_WINDOW)
    pad = SSIM_WINDOW // 2
    x = F.conv2d(x, gauss[..., None], padding=(pad, 0), groups=channels)
    return F.conv2d(x, gauss[:, :, None, :], padding=(0, pad), groups=channels)


def ssim(img: Tensor, ref: Tensor, *, data_range: float | None = None) -> Tensor:
    """Structural similarity, as the MST toolbox's ``ssim_torch`` (inputs are not rounded).

    Gaussian window 11x11 with sigma 1.5, applied per band with zero padding (as two separable 1-D passes, equal
    to the toolbox's 2-D convolution up to rounding); the SSIM map is averaged over bands and pixels. Computed in
    float32, or float64 if either input is float64. Data in [0, ``data_range``] is first scaled to [0, 1].
    """
    img, ref, batched = _as_batch(img, ref)
    dtype = _working_dtype(img, ref)
    img, ref = (x.to(dtype) for x in _in_unit_range(img, ref, data_range))
    bands = img.shape[1]
    # One depthwise filtering gives the local means of x, y, x^2, y^2 and x*y for every band.
    local = _gaussian_blur(torch.cat([img, ref, img * img, ref * ref, img * ref], dim=1))
    mu1, mu2, mean11, mean22, mean12 = local.split(bands, dim=1)
    var1 = mean11 - mu1.square()
    var2 = mean22 - mu2.square()
    cov = mean12 - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu1.square() + mu2.square() + SSIM_C1) * (var1 + var2 + SSIM_C2)
    )
    return _unbatch(ssim_map.mean(dim=(1, 2, 3)), batched)


def sam(img: Tensor, ref: Tensor, eps: float = 1e-12) -> Tensor:
    """Spectral angle mapper in degrees: the angle between the two spectra of each pixel, averaged over pixels.

    The angle is ``arccos`` of the spectra's cosine, computed as ``2 * atan2(|u - v|, |u + v|)`` with ``u``, ``v``
    the unit spectra (``eps`` guards the norms): the same angle, but accurate near 0 where ``arccos`` loses half its
    digits. Two zero spectra have angle 0; a zero and a non-zero spectrum, 90 degrees. Computed in float32, or
    float64 if either input is float64.
    """
    img, ref, batched = _as_batch(img, ref)
    dtype = _working_dtype(img, ref)
    u = F.normalize(img.to(dtype), dim=1, eps=eps)
    v = F.normalize(ref.to(dtype), dim=1, eps=eps)
    angle = 2 * torch.atan2(torch.linalg.vector_norm(u - v, dim=1), torch.linalg.vector_norm(u + v, dim=1))
    return _unbatch(torch.rad2deg(angle).mean(dim=(1, 2)), batched)
