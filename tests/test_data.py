"""Tests of spectral_prior.data: cube readers, band resampling, datasets and the CASSI training sampler."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from matlab_files import write_mat_v73
from safetensors.numpy import save_file

from spectral_prior.matfile import VariableChoiceError
from spectral_prior import cassi
from spectral_prior.data import (
    CASSI_WAVELENGTHS,
    CAVE_WAVELENGTHS,
    CassiBatches,
    Cube,
    CubeFolder,
    CubeReadError,
    ProceduralCubes,
    read_cube,
    resample_bands,
    to_cassi_bands,
)


def _hwc(height: int = 6, width: int = 5, bands: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width, bands)).astype(np.float32)


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


# --------------------------------------------------------------------------------------------------------------
# readers


def test_mat_v5_float_img_is_kept_and_put_channels_first(tmp_path):
    hwc = _hwc()
    scipy.io.savemat(tmp_path / "scene.mat", {"img": hwc, "other": np.zeros(3)})
    cube = read_cube(tmp_path / "scene.mat")
    assert cube.data.dtype == torch.float32 and cube.data.shape == (4, 6, 5)
    torch.testing.assert_close(cube.data, _chw(hwc))
    assert cube.wavelengths is None


def test_mat_v5_integer_img_expand_is_divided_by_65536(tmp_path):
    raw = np.random.default_rng(1).integers(0, 30000, (6, 5, 4)).astype(np.int16)
    scipy.io.savemat(tmp_path / "train.mat", {"img_expand": raw, "img": np.zeros((2, 2, 2))})
    cube = read_cube(tmp_path / "train.mat")  # img_expand wins over img
    torch.testing.assert_close(cube.data, _chw(raw.astype(np.float32) / 65536))


def test_mat_v5_explicit_key_and_single_3d_variable(tmp_path):
    hwc = _hwc(bands=3)
    scipy.io.savemat(tmp_path / "a.mat", {"hsi": hwc, "note": np.ones((1, 2))})
    torch.testing.assert_close(read_cube(tmp_path / "a.mat").data, _chw(hwc))
    torch.testing.assert_close(read_cube(tmp_path / "a.mat", key="hsi").data, _chw(hwc))


def test_mat_v73_axes_are_restored(tmp_path):
    hwc = _hwc(height=7, width=5, bands=3)
    write_mat_v73(tmp_path / "v73.mat", {"img": hwc})
    cube = read_cube(tmp_path / "v73.mat")
    torch.testing.assert_close(cube.data, _chw(hwc))


def test_mat_v73_cave_key_gets_cave_wavelengths(tmp_path):
    raw = np.random.default_rng(2).integers(0, 65535, (4, 3, 31)).astype(np.uint16)
    write_mat_v73(tmp_path / "cave.mat", {"Omsi": raw})
    cube = read_cube(tmp_path / "cave.mat")
    torch.testing.assert_close(cube.data, _chw(raw.astype(np.float32) / 65536))
    assert torch.equal(cube.wavelengths, CAVE_WAVELENGTHS)


def test_missing_key_lists_the_variables(tmp_path):
    scipy.io.savemat(tmp_path / "x.mat", {"alpha": _hwc(), "beta": _hwc()})
    with pytest.raises(VariableChoiceError, match=r"no variable 'img' .*: alpha \[\d+, \d+, \d+\], beta") as info:
        read_cube(tmp_path / "x.mat", key="img")
    assert "x.mat" in str(info.value)
    with pytest.raises(VariableChoiceError, match="which variable is the cube .*the key option"):  # two candidates
        read_cube(tmp_path / "x.mat")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupted_mat_names_the_file(tmp_path, damage):
    path = tmp_path / "broken.mat"
    scipy.io.savemat(path, {"img": _hwc(20, 20, 8)})
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2] if damage == "truncate" else b"not a mat file at all" * 20)
    with pytest.raises(CubeReadError, match="broken.mat"):
        read_cube(path)


def test_truncated_v73_and_npy_and_safetensors_name_the_file(tmp_path):
    write_mat_v73(tmp_path / "v73.mat", {"img": _hwc(20, 20, 8)})
    np.save(tmp_path / "c.npy", _hwc(20, 20, 8))
    save_file({"cube": _hwc(8, 20, 20)}, str(tmp_path / "c.safetensors"))
    for name in ("v73.mat", "c.npy", "c.safetensors"):
        path = tmp_path / name
        path.write_bytes(path.read_bytes()[:700])
        with pytest.raises(CubeReadError, match=name):
            read_cube(path)


def test_npy_layout_is_guessed_from_the_short_axis(tmp_path):
    hwc = _hwc(6, 5, 4)
    np.save(tmp_path / "hwc.npy", hwc)
    np.save(tmp_path / "chw.npy", hwc.transpose(2, 0, 1))
    torch.testing.assert_close(read_cube(tmp_path / "hwc.npy").data, _chw(hwc))
    torch.testing.assert_close(read_cube(tmp_path / "chw.npy").data, _chw(hwc))


def test_npy_explicit_layout_and_ambiguous_shape(tmp_path):
    cube = np.random.default_rng(3).random((5, 6, 5)).astype(np.float32)
    np.save(tmp_path / "square.npy", cube)
    with pytest.raises(ValueError, match="layout="):
        read_cube(tmp_path / "square.npy")
    torch.testing.assert_close(read_cube(tmp_path / "square.npy", layout="CHW").data, torch.from_numpy(cube))
    torch.testing.assert_close(read_cube(tmp_path / "square.npy", layout="HWC").data, _chw(cube))


def test_safetensors_cube_and_wavelengths(tmp_path):
    chw = _hwc(4, 6, 5).transpose(2, 0, 1).copy()  # any [C, H, W]
    nm = np.array([450, 500, 550, 600, 650], dtype=np.float32)
    save_file({"cube": chw, "wavelengths": nm}, str(tmp_path / "s.safetensors"))
    cube = read_cube(tmp_path / "s.safetensors")
    torch.testing.assert_close(cube.data, torch.from_numpy(chw))
    torch.testing.assert_close(cube.wavelengths, torch.from_numpy(nm))
    save_file({"other": chw}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CubeReadError, match="'other'"):
        read_cube(tmp_path / "bad.safetensors")


def _write_png_bands(folder: Path, bands: np.ndarray, bits: int, names: str = "scene_ms_{:02d}.png") -> None:
    from PIL import Image

    folder.mkdir()
    for i, band in enumerate(bands, start=1):
        if bits == 16:
            image = Image.fromarray(band.astype(np.uint16))
        else:
            image = Image.fromarray(band.astype(np.uint8), mode="L")
        image.save(folder / names.format(i))


def test_png_folder_16_bit_ordered_by_band_number(tmp_path):
    pytest.importorskip("PIL")
    bands = np.random.default_rng(4).integers(0, 65536, (12, 4, 3))
    _write_png_bands(tmp_path / "scene", bands, 16, names="scene_ms_{}.png")  # _2 sorts after _10 as text
    cube = read_cube(tmp_path / "scene")
    torch.testing.assert_close(cube.data, torch.from_numpy(bands.astype(np.float32) / 65535))
    assert cube.wavelengths is None


def test_png_folder_8_bit_cave_bands(tmp_path):
    pytest.importorskip("PIL")
    bands = np.random.default_rng(5).integers(0, 256, (31, 3, 4))
    _write_png_bands(tmp_path / "cave", bands, 8)
    cube = read_cube(tmp_path / "cave")
    torch.testing.assert_close(cube.data, torch.from_numpy(bands.astype(np.float32) / 255))
    assert torch.equal(cube.wavelengths, CAVE_WAVELENGTHS)
    assert to_cassi_bands(cube).shape == (28, 3, 4)


def test_unsupported_and_missing_files(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=".safetensors"):
        read_cube(tmp_path / "a.txt")
    with pytest.raises(FileNotFoundError, match="nope.mat"):
        read_cube(tmp_path / "nope.mat")


def test_real_cave_cube_reads_and_resamples(shared_data):
    path = shared_data / "cubes" / "cave_toy_150.mat"
    cube = read_cube(path)
    assert cube.data.shape == (31, 150, 150) and cube.data.dtype == torch.float32
    assert torch.equal(cube.wavelengths, CAVE_WAVELENGTHS)
    cassi_cube = to_cassi_bands(cube)
    assert cassi_cube.shape == (28, 150, 150)
    assert cube.data.min() <= cassi_cube.min() and cassi_cube.max() <= cube.data.max()
    assert 0.0 <= cassi_cube.min() and cassi_cube.max() <= 1.0 and cassi_cube.std() > 0.01
    # band 648.1 nm lies 0.19 of the way from 640 to 650 nm
    expected = cube.data[24] + (cube.data[25] - cube.data[24]) * (648.1 - 640.0) / 10.0
    torch.testing.assert_close(cassi_cube[-1], expected)


# --------------------------------------------------------------------------------------------------------------
# bands


def test_resample_bands_is_exact_on_linear_spectra():
    src = CAVE_WAVELENGTHS
    offset, slope = torch.rand(1, 4, 5), torch.rand(1, 4, 5) / 1000
    cube = offset + slope * src.view(-1, 1, 1)
    out = resample_bands(cube, src)
    torch.testing.assert_close(out, offset + slope * CASSI_WAVELENGTHS.view(-1, 1, 1))
    torch.testing.assert_close(resample_bands(cube, src, src), cube)  # the nodes themselves


def test_resample_bands_rejects_extrapolation_and_bad_sources():
    cube = torch.rand(5, 2, 2)
    with pytest.raises(ValueError, match="extrapolate"):
        resample_bands(cube, [460, 500, 550, 600, 640])
    with pytest.raises(ValueError, match="increasing"):
        resample_bands(cube, [400, 500, 450, 600, 700])
    with pytest.raises(ValueError, match="bands"):
        resample_bands(cube, CAVE_WAVELENGTHS)


def test_to_cassi_bands_passthrough_and_missing_wavelengths(tmp_path):
    data = torch.rand(28, 3, 3)
    assert to_cassi_bands(Cube(data)) is data
    with pytest.raises(ValueError, match="wavelengths="):
        to_cassi_bands(Cube(torch.rand(31, 3, 3)))
    np.save(tmp_path / "c.npy", np.random.rand(40, 40, 31).astype(np.float32))
    with pytest.raises(ValueError, match="wavelengths="):
        to_cassi_bands(read_cube(tmp_path / "c.npy"))
    assert to_cassi_bands(read_cube(tmp_path / "c.npy", wavelengths=CAVE_WAVELENGTHS)).shape == (28, 40, 40)
    with pytest.raises(ValueError, match="3 wavelengths"):
        read_cube(tmp_path / "c.npy", wavelengths=[1, 2, 3])


# --------------------------------------------------------------------------------------------------------------
# CubeFolder


def test_cube_folder_mixed_files_sorted_and_cached(tmp_path):
    np.save(tmp_path / "b_scene.npy", np.random.rand(32, 36, 28).astype(np.float32))
    scipy.io.savemat(tmp_path / "a_cave.mat", {"Omsi": np.random.rand(32, 36, 31)})
    save_file({"cube": np.random.rand(28, 32, 36).astype(np.float32)}, str(tmp_path / "c.safetensors"))
    (tmp_path / "notes.txt").write_text("ignored")
    folder = CubeFolder(tmp_path, cache=True)
    assert folder.names == ["a_cave", "b_scene", "c"] and len(folder) == 3
    for i in range(3):
        cube, name = folder[i]
        assert cube.shape == (28, 32, 36) and cube.dtype == torch.float32 and name == folder.names[i]
    assert folder[0][0] is folder[0][0]


def test_cube_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        CubeFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty.*\.mat.*\.npy.*\.safetensors"):
        CubeFolder(tmp_path / "empty")
    (tmp_path / "odd").mkdir()
    np.save(tmp_path / "odd" / "c.npy", np.random.rand(40, 40, 31).astype(np.float32))
    with pytest.raises(ValueError, match="wavelengths="):
        CubeFolder(tmp_path / "odd")[0]
    assert CubeFolder(tmp_path / "odd", wavelengths=CAVE_WAVELENGTHS)[0][0].shape == (28, 40, 40)


# --------------------------------------------------------------------------------------------------------------
# ProceduralCubes


def test_procedural_shape_range_and_wavelengths():
    scene = ProceduralCubes(2, size=(48, 64))[1]
    assert scene.shape == (28, 48, 64) and scene.dtype == torch.float32
    assert scene.min() >= 0 and scene.max() <= 1 and scene.std() > 0.02
    other = ProceduralCubes(1, size=32, bands=31)
    assert other[0].shape == (31, 32, 32) and len(other.wavelengths) == 31
    with pytest.raises(IndexError):
        other[1]


def test_procedural_is_deterministic_per_seed_and_index():
    first = ProceduralCubes(4, size=64, seed=7)
    second = ProceduralCubes(4, size=64, seed=7)
    forward = [first[i] for i in range(4)]
    backward = [second[i] for i in reversed(range(4))][::-1]
    for a, b in zip(forward, backward):
        assert torch.equal(a, b)
    assert not torch.equal(forward[0], forward[1])
    assert not torch.equal(forward[0], ProceduralCubes(4, size=64, seed=8)[0])


def test_procedural_spectra_are_smooth_and_edges_sharp():
    for scene in ProceduralCubes(3, size=96, seed=3):
        spectral_curvature = (scene[2:] - 2 * scene[1:-1] + scene[:-2]).abs().mean()
        # the largest step over the bands between neighbouring pixels, down and across
        down = (scene[:, 1:] - scene[:, :-1]).abs().amax(0).flatten()
        across = (scene[..., 1:] - scene[..., :-1]).abs().amax(0).flatten()
        steps = torch.cat([down, across])
        assert spectral_curvature < 0.05 * torch.quantile(steps, 0.99)
        assert (steps > 0.05).float().mean() > 0.01  # region boundaries and hard textures give sharp edges
        assert (steps < 0.01).float().mean() > 0.3  # yet most of the scene is smooth


# --------------------------------------------------------------------------------------------------------------
# CassiBatches


def _mask(size: int = 64) -> torch.Tensor:
    return torch.rand(size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "mask_setting, mask_shape", [("Phi", (4, 28, 32, 32 + 54)), ("Mask", (4, 28, 32, 32))]
)
def test_batches_shapes_for_mst_and_bisrnet(mask_setting, mask_shape):
    batches = CassiBatches(ProceduralCubes(3, size=48), _mask(), crop=32, batch=4, mask_setting=mask_setting)
    item = next(iter(batches))
    assert item["gt"].shape == (4, 28, 32, 32) and item["gt"].dtype == torch.float32
    assert item["input"].shape == (4, 28, 32, 32)
    assert item["mask"].shape == mask_shape
    # the simulation uses the top-left crop of the mask
    net_input, mask_input = cassi.simulate(item["gt"], cassi.mask3d(_mask()[:32, :32]), "H", mask_setting)
    torch.testing.assert_close(item["input"], net_input)
    torch.testing.assert_close(item["mask"], mask_input)


def test_batches_other_settings_pass_through():
    batches = CassiBatches(
        ProceduralCubes(2, size=32), _mask(), crop=32, batch=2, input_setting="Y", mask_setting="Phi_PhiPhiT"
    )
    item = batches.batch_at(0)
    assert item["input"].shape == (2, 32, 32 + 54)
    phi, phi_s = item["mask"]
    assert phi.shape == (2, 28, 32, 32 + 54) and phi_s.shape == (2, 32, 32 + 54)


def test_batches_are_deterministic_and_resumable():
    scenes = ProceduralCubes(4, size=40)
    one = CassiBatches(scenes, _mask(), crop=32, batch=2, seed=5)
    two = CassiBatches(scenes, _mask(), crop=32, batch=2, seed=5)
    three = CassiBatches(scenes, _mask(), crop=32, batch=2, seed=6)
    stream = iter(one)
    firsts = [next(stream)["gt"] for _ in range(3)]
    assert torch.equal(firsts[2], two.batch_at(2)["gt"])
    resumed = CassiBatches(scenes, _mask(), crop=32, batch=2, seed=5, start_step=1)
    assert torch.equal(next(iter(resumed))["gt"], firsts[1])
    assert not torch.equal(firsts[0], three.batch_at(0)["gt"])


def test_ranks_share_the_global_batch():
    scenes = ProceduralCubes(4, size=40)
    whole = CassiBatches(scenes, _mask(), crop=32, batch=4, seed=1).batch_at(3)["gt"]
    parts = [
        CassiBatches(scenes, _mask(), crop=32, batch=4, seed=1, rank=rank, world_size=2).batch_at(3)["gt"]
        for rank in (0, 1)
    ]
    assert parts[0].shape == (2, 28, 32, 32)
    assert torch.equal(whole[0::2], parts[0]) and torch.equal(whole[1::2], parts[1])


def _dihedral(x: torch.Tensor) -> list:
    turns = [torch.rot90(x, k, dims=(1, 2)) for k in range(4)]
    return turns + [t.flip(2) for t in turns]


def test_rotation_and_flips_preserve_the_scene_values():
    scene = torch.rand(28, 32, 32)
    batches = CassiBatches([scene], _mask(), crop=32, batch=2)  # scene == crop: the crop is the whole scene
    seen = set()
    for step in range(12):
        patch = batches.batch_at(step)["gt"][0]  # the first half of the batch: rotated/flipped crops
        assert torch.equal(patch.flatten().sort().values, scene.flatten().sort().values)
        matches = [k for k, t in enumerate(_dihedral(scene)) if torch.equal(patch, t)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 2  # the augmentation varies


def test_mosaic_quadrants_come_from_scenes():
    size, bands = 24, 28
    # value = (scene id * 10000 + flat pixel index) / 1e5, in [0, 1]: each pixel tells where it came from
    scenes = [
        ((s * 10000 + torch.arange(size * size, dtype=torch.float64).view(1, size, size)) / 1e5).float().expand(bands, -1, -1)
        for s in range(5)
    ]
    batches = CassiBatches(scenes, torch.ones(32, 32), crop=16, batch=2, seed=4)
    for step in range(4):
        mosaic = batches.batch_at(step)["gt"][1]  # the second half: 2x2 mosaics of crop/2 patches
        for top in (0, 8):
            for left in (0, 8):
                tile = mosaic[:, top : top + 8, left : left + 8]
                first = round(float(tile[0, 0, 0]) * 1e5)
                scene, pixel = divmod(first, 10000)
                row, col = divmod(pixel, size)
                assert torch.equal(tile, scenes[scene][:, row : row + 8, col : col + 8])


def test_no_augment_gives_plain_crops():
    scene = (torch.arange(28 * 40 * 40, dtype=torch.float64).view(28, 40, 40) / 1e5).float()  # in [0, 1]
    gt = CassiBatches([scene], _mask(), crop=32, batch=3, augment=False).batch_at(0)["gt"]
    for patch in gt:
        top, left = divmod(round(float(patch[0, 0, 0]) * 1e5), 40)
        assert torch.equal(patch, scene[:, top : top + 32, left : left + 32])


def test_random_mask_crop_moves_the_mask_window():
    mask = torch.arange(64 * 64, dtype=torch.float32).view(64, 64) / 4096
    scenes = ProceduralCubes(2, size=32)
    batches = CassiBatches(scenes, mask, crop=32, batch=2, mask_setting="Mask", random_mask_crop=True)
    corners = set()
    for step in range(4):
        window = batches.batch_at(step)["mask"][0, 0]
        top, left = divmod(int(round(float(window[0, 0]) * 4096)), 64)
        torch.testing.assert_close(window, mask[top : top + 32, left : left + 32])
        corners.add((top, left))
    assert len(corners) > 1


def test_batches_errors():
    scenes = ProceduralCubes(2, size=32)
    with pytest.raises(ValueError, match=r"mask \(16x16\).*crop \(32x32\)"):
        CassiBatches(scenes, torch.rand(16, 16), crop=32)
    with pytest.raises(ValueError, match=r"scene 'scene_00\d' \(32x32\).*crop \(48x48\)"):
        CassiBatches(scenes, _mask(), crop=48, batch=2).batch_at(0)
    with pytest.raises(ValueError, match="world_size"):
        CassiBatches(scenes, _mask(), crop=32, batch=3, world_size=2)
    with pytest.raises(ValueError, match="input"):
        CassiBatches(scenes, _mask(), crop=32, input_setting="X")
