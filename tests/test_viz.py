"""sRGB rendering of cubes and the PNG figures of spectral_prior.viz."""
import sys

import pytest
import torch
from PIL import Image

from spectral_prior.data import CASSI_WAVELENGTHS
from spectral_prior.viz import cube_to_srgb, require_matplotlib, save_comparison_figure, save_preview


def _peaked(nm: float, size: int = 2) -> torch.Tensor:
    """A cube whose every pixel has a narrow spectrum peaked at ``nm``."""
    spectrum = torch.exp(-0.5 * ((CASSI_WAVELENGTHS - nm) / 10.0) ** 2) * 0.5
    return spectrum[:, None, None].expand(28, size, size)


def _cube(seed: int, size: int = 24) -> torch.Tensor:
    return torch.rand(28, size, size, generator=torch.Generator().manual_seed(seed))


def _png_size(path) -> tuple:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def test_flat_spectra_are_neutral_and_unit_is_white():
    for value in (0.25, 0.5):
        rgb = cube_to_srgb(torch.full((28, 3, 3), value))
        assert rgb.shape == (3, 3, 3)
        assert torch.allclose(rgb[0], rgb[1], atol=1e-4) and torch.allclose(rgb[1], rgb[2], atol=1e-4)
    assert torch.allclose(cube_to_srgb(torch.ones(28, 2, 2)), torch.ones(3, 2, 2), atol=1e-4)
    assert torch.allclose(cube_to_srgb(torch.full((28, 2, 2), 2.0), white=2.0), torch.ones(3, 2, 2), atol=1e-4)


@pytest.mark.parametrize("nm, channel", [(610.0, 0), (530.0, 1), (460.0, 2)])
def test_narrow_spectra_take_their_hue(nm, channel):
    rgb = cube_to_srgb(_peaked(nm))[:, 0, 0]
    assert int(rgb.argmax()) == channel
    assert rgb[channel] > 2 * max(rgb[c] for c in range(3) if c != channel)


def test_batches_and_range():
    batch = torch.rand(2, 28, 5, 4) * 3 - 1  # out-of-gamut values are clipped
    rgb = cube_to_srgb(batch)
    assert rgb.shape == (2, 3, 5, 4) and rgb.dtype == torch.float32
    assert rgb.min() >= 0 and rgb.max() <= 1
    assert torch.equal(rgb[1], cube_to_srgb(batch[1]))


def test_bad_shapes_are_clear():
    with pytest.raises(ValueError, match="28 bands but 31 wavelengths"):
        cube_to_srgb(torch.rand(28, 4, 4), torch.arange(400.0, 701.0, 10.0))
    with pytest.raises(ValueError, match=r"\[C, H, W\] or \[B, C, H, W\]"):
        cube_to_srgb(torch.rand(28, 4))
    with pytest.raises(ValueError, match="strictly increasing"):
        cube_to_srgb(torch.rand(28, 4, 4), CASSI_WAVELENGTHS.flip(0))
    assert cube_to_srgb(torch.rand(31, 4, 4), torch.arange(400.0, 701.0, 10.0)).shape == (3, 4, 4)


def test_comparison_figure_is_a_png_and_leaves_no_temporary_files(tmp_path):
    gt = _cube(0)
    path = tmp_path / "figures" / "scene.png"
    save_comparison_figure(path, gt, {"bare\n30.1 dB": _cube(1), "prior": gt * 0.9}, title="scene")
    width, height = _png_size(path)
    assert 600 <= width <= 2000 and 600 <= height <= 1200
    assert [p.name for p in path.parent.iterdir()] == ["scene.png"]


def test_comparison_figure_points_and_shapes_are_checked(tmp_path):
    gt = _cube(0)
    save_comparison_figure(tmp_path / "a.png", gt, {"x": _cube(1)}, points=[(0, 0), (23, 23)])
    assert _png_size(tmp_path / "a.png")[0] > 0
    with pytest.raises(ValueError, match="outside the 24x24 image"):
        save_comparison_figure(tmp_path / "b.png", gt, {"x": _cube(1)}, points=[(24, 0)])
    with pytest.raises(ValueError, match="has shape"):
        save_comparison_figure(tmp_path / "b.png", gt, {"x": _cube(1, size=20)})
    with pytest.raises(ValueError, match="at least one"):
        save_comparison_figure(tmp_path / "b.png", gt, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_preview_has_the_cube_size(tmp_path):
    save_preview(tmp_path / "preview.png", torch.rand(28, 20, 36))
    assert _png_size(tmp_path / "preview.png") == (36, 20)
    assert [p.name for p in tmp_path.iterdir()] == ["preview.png"]


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(ImportError, match=r"pip install spectral-prior\[viz\]"):
        require_matplotlib()


def test_figures_are_written_in_the_format_their_suffix_names(tmp_path):
    gt = torch.rand(28, 16, 16)
    for suffix, magic in ((".png", b"\x89PNG"), (".jpg", b"\xff\xd8"), (".pdf", b"%PDF")):
        save_comparison_figure(tmp_path / f"f{suffix}", gt, {"x": gt})
        assert (tmp_path / f"f{suffix}").read_bytes().startswith(magic), suffix
    save_preview(tmp_path / "p.jpeg", gt)
    assert (tmp_path / "p.jpeg").read_bytes().startswith(b"\xff\xd8")
    with pytest.raises(ValueError, match=r"cannot write a figure as 'f.gif': use one of .png, .jpg"):
        save_comparison_figure(tmp_path / "f.gif", gt, {"x": gt})
