"""The vectorised CASSI forward model against loop references written after the MST toolbox."""
import numpy as np
import pytest
import scipy.io
import torch
from matlab_files import write_mat_v73

from spectral_prior.cassi import (
    BANDS,
    STEP,
    load_mask,
    mask3d,
    mask_input,
    measure,
    measurement_to_input,
    shift,
    shift_back,
    simulate,
)

# ----------------------------------------------------------------------------------------------------------------
# loop references (the toolbox's code, made device- and dtype-agnostic)


def ref_shift(x, step=2):
    bs, nC, row, col = x.shape
    out = x.new_zeros(bs, nC, row, col + (nC - 1) * step)
    for i in range(nC):
        out[:, i, :, step * i : step * i + col] = x[:, i, :, :]
    return out


def ref_shift_back(y, nC=28, step=2):
    bs, row, col = y.shape
    out = y.new_zeros(bs, nC, row, col - (nC - 1) * step)
    for i in range(nC):
        out[:, i, :, :] = y[:, :, step * i : step * i + col - (nC - 1) * step]
    return out


def ref_gen_meas(cube, m3d, setting, step=2):
    nC = cube.shape[1]
    meas = torch.sum(ref_shift(m3d * cube, step), 1)
    if setting == "Y":
        return meas
    h = ref_shift_back(meas / nC * 2, nC, step)
    return h * m3d if setting == "HM" else h


def ref_mask_input(m3d, setting, step=2):
    if setting == "Mask":
        return (m3d,)
    phi = ref_shift(m3d, step)
    if setting == "Phi":
        return (phi,)
    phi_s = torch.sum(phi**2, 1)
    phi_s[phi_s == 0] = 1
    return phi, phi_s


def rand_mask3d(bands, height, width, batch=1, dtype=torch.float32):
    return mask3d(torch.rand(batch, height, width, dtype=dtype), bands)


# ----------------------------------------------------------------------------------------------------------------
# shift / shift_back


def test_constants():
    assert (BANDS, STEP) == (28, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,step", [((2, 28, 64, 96), 2), ((1, 5, 7, 3), 3), ((3, 1, 4, 4), 2), ((1, 4, 6, 5), 1)])
def test_shift_matches_loop(shape, step, dtype):
    x = torch.randn(shape, dtype=dtype)
    out = shift(x, step)
    assert out.shape == (shape[0], shape[1], shape[2], shape[3] + (shape[1] - 1) * step)
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref_shift(x, step), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nC,step,height,width", [(28, 2, 64, 96), (5, 3, 7, 3), (1, 2, 4, 4), (4, 1, 6, 5)])
def test_shift_back_matches_loop(nC, step, height, width, dtype):
    y = torch.randn(2, height, width + (nC - 1) * step, dtype=dtype)
    out = shift_back(y, nC, step)
    assert out.shape == (2, nC, height, width)
    torch.testing.assert_close(out, ref_shift_back(y, nC, step), rtol=0, atol=0)


def test_shift_back_is_a_view():
    y = torch.randn(1, 8, 8 + 27 * 2)
    assert shift_back(y).untyped_storage().data_ptr() == y.untyped_storage().data_ptr()


def test_shift_of_non_contiguous_input():
    x = torch.randn(2, 6, 9, 7).transpose(-1, -2)  # [2, 6, 7, 9], not contiguous
    torch.testing.assert_close(shift(x, 2), ref_shift(x.contiguous(), 2), rtol=0, atol=0)


def test_per_band_unshift_recovers_input():
    x = torch.randn(2, BANDS, 16, 24)
    shifted = shift(x)
    bands = torch.arange(BANDS)
    columns = STEP * bands[:, None] + torch.arange(24)  # [C, W]: where band i sits
    index = columns[None, :, None, :].expand_as(x)
    torch.testing.assert_close(shifted.gather(-1, index), x, rtol=0, atol=0)


@pytest.mark.parametrize("band", [0, 13, BANDS - 1])
def test_shift_back_of_a_single_band_measurement(band):
    cube = torch.zeros(1, BANDS, 16, 24)
    cube[:, band] = torch.rand(16, 24)
    ones = torch.ones(1, BANDS, 16, 24)
    torch.testing.assert_close(shift_back(measure(cube, ones))[:, band], cube[:, band], rtol=0, atol=0)


def test_shift_back_is_adjoint_of_dispersion():
    x = torch.randn(2, BANDS, 12, 20, dtype=torch.float64)
    y = torch.randn(2, 12, 20 + 27 * 2, dtype=torch.float64)
    lhs = (shift(x).sum(dim=1) * y).sum()
    rhs = (x * shift_back(y)).sum()
    torch.testing.assert_close(lhs, rhs)


# ----------------------------------------------------------------------------------------------------------------
# masks


def test_real_mask_loads(shared_data):
    mask = load_mask(shared_data / "mask_256.mat")
    assert mask.shape == (256, 256) and mask.dtype == torch.float32
    assert mask.min().item() == pytest.approx(0.0066, abs=1e-6)
    assert mask.max().item() == pytest.approx(1.0)
    torch.testing.assert_close(load_mask(str(shared_data / "mask_256.mat"), key="mask"), mask)


def test_load_mask_from_arrays_and_npy(tmp_path):
    array = np.random.rand(5, 7)
    np.save(tmp_path / "m.npy", array)
    expected = torch.from_numpy(array).float()
    for source in (array, torch.from_numpy(array), tmp_path / "m.npy"):
        mask = load_mask(source)
        assert mask.dtype == torch.float32
        torch.testing.assert_close(mask, expected)


def test_load_mask_picks_the_mat_variable(tmp_path):
    array = np.random.rand(4, 6).astype(np.float32) / 2
    scipy.io.savemat(tmp_path / "named.mat", {"other": array + 0.5, "Mask": array})
    scipy.io.savemat(tmp_path / "two.mat", {"a": array, "b": array + 0.5})
    torch.testing.assert_close(load_mask(tmp_path / "named.mat"), torch.from_numpy(array))
    torch.testing.assert_close(load_mask(tmp_path / "two.mat", key="b"), torch.from_numpy(array + 0.5))
    with pytest.raises(ValueError, match=r"which variable is the coded aperture .*mask key option.*: a \[4, 6\], b \[4, 6\]"):
        load_mask(tmp_path / "two.mat")


def test_a_measurement_or_a_scene_is_not_taken_for_a_mask(shared_data, tmp_path):
    with pytest.raises(ValueError, match=r"scene1.mat: cannot tell which variable is the coded aperture.*meas_real \[660, 714\]"):
        load_mask(shared_data / "real_measurements" / "scene1.mat")
    with pytest.raises(ValueError, match=r"span \[0, 2\]: a coded aperture is a transmission in \[0, 1\]"):
        load_mask(np.array([[0.0, 2.0]], dtype=np.float32))


def test_load_mask_reads_matlab_v73(tmp_path):
    array = np.random.rand(4, 6).astype(np.float32)  # not square: a missing transpose would show
    write_mat_v73(tmp_path / "v73.mat", {"mask": array, "other": array[:2]})
    torch.testing.assert_close(load_mask(tmp_path / "v73.mat"), torch.from_numpy(array))
    with pytest.raises(KeyError, match=r"variables in the file: mask \[4, 6\], other \[2, 6\]"):
        load_mask(tmp_path / "v73.mat", key="nope")


def test_load_mask_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="mask file not found"):
        load_mask(tmp_path / "missing.mat")
    scipy.io.savemat(tmp_path / "m.mat", {"mask": np.ones((3, 3))})
    with pytest.raises(KeyError, match=r"no variable 'Phi'.*variables in the file: mask \[3, 3\]"):
        load_mask(tmp_path / "m.mat", key="Phi")
    with pytest.raises(ValueError, match=r"2-D \[H, W\], got shape \[2, 3, 4\]"):
        load_mask(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_mask(np.array([[1.0, np.nan]]))
    with pytest.raises(TypeError, match="path, numpy array or tensor"):
        load_mask([[1.0, 0.0]])


def test_mask3d_shapes_without_copy():
    mask = torch.rand(6, 9)
    m3d = mask3d(mask)
    assert m3d.shape == (1, BANDS, 6, 9)
    assert m3d.data_ptr() == mask.data_ptr()
    torch.testing.assert_close(m3d[0, 17], mask)
    assert mask3d(torch.rand(3, 6, 9), bands=5).shape == (3, 5, 6, 9)
    with pytest.raises(ValueError, match=r"\[H, W\] or \[B, H, W\], got \[1, 2, 6, 9\]"):
        mask3d(torch.rand(1, 2, 6, 9))


# ----------------------------------------------------------------------------------------------------------------
# forward model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("height,width", [(64, 96), (33, 17)])
def test_measure_matches_loop(height, width, dtype):
    cube = torch.rand(2, BANDS, height, width, dtype=dtype)
    m3d = rand_mask3d(BANDS, height, width, dtype=dtype)
    y = measure(cube, m3d)
    assert y.shape == (2, height, width + 27 * 2) and y.dtype == dtype
    torch.testing.assert_close(y, ref_gen_meas(cube, m3d, "Y"))


def test_measure_with_the_real_mask(shared_data):
    m3d = mask3d(load_mask(shared_data / "mask_256.mat"))
    cube = torch.rand(1, BANDS, 256, 256)
    y = measure(cube, m3d)
    assert y.shape == (1, 256, 310)  # the benchmark's measurement size
    torch.testing.assert_close(y, ref_gen_meas(cube, m3d, "Y"))


def test_measure_is_linear():
    x, z = torch.rand(2, 2, BANDS, 32, 40, dtype=torch.float64)
    m3d = rand_mask3d(BANDS, 32, 40, dtype=torch.float64)
    a, b = 0.7, -2.5
    torch.testing.assert_close(measure(a * x + b * z, m3d), a * measure(x, m3d) + b * measure(z, m3d))


def test_measure_with_per_image_masks():
    cube = torch.rand(3, 4, 8, 10)
    m3d = rand_mask3d(4, 8, 10, batch=3)
    y = measure(cube, m3d, step=3)
    for b in range(3):
        torch.testing.assert_close(y[b : b + 1], measure(cube[b : b + 1], m3d[b : b + 1], step=3))


def test_measure_in_bfloat16():
    cube = torch.rand(1, BANDS, 16, 24)
    m3d = rand_mask3d(BANDS, 16, 24)
    y = measure(cube.bfloat16(), m3d.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), measure(cube, m3d), rtol=2e-2, atol=2e-2)


def test_forward_model_gradients():
    cube = torch.rand(1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    m3d = torch.rand(1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c, m: measure(c, m, step=2), (cube, m3d))
    y = torch.rand(2, 4, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: measurement_to_input(t, m3d.detach(), "HM"), (y,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("setting", ["H", "HM", "Y"])
def test_measurement_to_input_matches_loop(setting, dtype):
    cube = torch.rand(2, BANDS, 64, 96, dtype=dtype)
    m3d = rand_mask3d(BANDS, 64, 96, dtype=dtype)
    out = measurement_to_input(measure(cube, m3d), m3d, setting)
    expected_shape = (2, 64, 150) if setting == "Y" else (2, BANDS, 64, 96)
    assert out.shape == expected_shape and out.dtype == dtype
    assert out.is_contiguous()  # networks may reshape it with .view or write to it in place
    torch.testing.assert_close(out, ref_gen_meas(cube, m3d, setting))


def test_mask_input_settings():
    mask = (torch.rand(1, 16, 20) > 0.5).float()  # binary, so Phi_s has zeros to replace
    m3d = mask3d(mask, 6)
    assert (ref_shift(m3d).square().sum(1) == 0).any()
    torch.testing.assert_close(mask_input(m3d, "Phi"), *ref_mask_input(m3d, "Phi"), rtol=0, atol=0)
    assert mask_input(m3d, "Mask") is m3d
    phi, phi_s = mask_input(m3d, "Phi_PhiPhiT")
    torch.testing.assert_close((phi, phi_s), ref_mask_input(m3d, "Phi_PhiPhiT"), rtol=0, atol=0)
    assert phi.shape == (1, 6, 16, 20 + 5 * 2) and phi_s.shape == (1, 16, 20 + 5 * 2)


@pytest.mark.parametrize("input_setting", ["H", "HM", "Y"])
@pytest.mark.parametrize("mask_setting", ["Phi", "Phi_PhiPhiT", "Mask"])
def test_simulate_shapes_and_values(input_setting, mask_setting):
    batch, height, width = 3, 64, 96
    cube = torch.rand(batch, BANDS, height, width)
    m3d = mask3d(load_mask(np.random.rand(height, width)))
    net_input, masks = simulate(cube, m3d, input_setting, mask_setting)
    torch.testing.assert_close(net_input, ref_gen_meas(cube, m3d, input_setting))
    masks = masks if isinstance(masks, tuple) else (masks,)
    expected = ref_mask_input(m3d.expand(batch, -1, -1, -1), mask_setting)
    assert [m.shape for m in masks] == [e.shape for e in expected]
    torch.testing.assert_close(masks, expected, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# bad inputs


def test_wrong_number_of_dims():
    with pytest.raises(ValueError, match=r"x must have shape \[B, C, H, W\], got \[28, 8, 8\]"):
        shift(torch.rand(BANDS, 8, 8))
    with pytest.raises(ValueError, match=r"y must have shape \[B, H, W'\], got \[8, 62\]"):
        shift_back(torch.rand(8, 62))
    with pytest.raises(ValueError, match=r"cube must have shape \[B, C, H, W\], got \[28, 8, 8\]"):
        measure(torch.rand(BANDS, 8, 8), rand_mask3d(BANDS, 8, 8))
    with pytest.raises(ValueError, match=r"mask3d must have shape \[B, C, H, W\], got \[8, 8\]"):
        measure(torch.rand(1, BANDS, 8, 8), torch.rand(8, 8))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values(bad):
    cube = torch.rand(1, BANDS, 8, 8)
    cube[0, 3, 2, 2] = bad
    with pytest.raises(ValueError, match="cube holds 1 NaN"):
        measure(cube, rand_mask3d(BANDS, 8, 8))
    y = torch.rand(1, 8, 62)
    y[0, 0, 5] = bad
    with pytest.raises(ValueError, match="measurement y holds .* NaN"):
        measurement_to_input(y, rand_mask3d(BANDS, 8, 8))


def test_mismatched_mask_and_cube():
    cube = torch.rand(2, BANDS, 8, 10)
    with pytest.raises(ValueError, match=r"expected shape \[1 or 2, 28, 8, 10\], got \[1, 27, 8, 10\]"):
        measure(cube, rand_mask3d(27, 8, 10))
    with pytest.raises(ValueError, match=r"expected shape \[1 or 2, 28, 8, 10\], got \[1, 28, 10, 8\]"):
        measure(cube, rand_mask3d(BANDS, 10, 8))
    with pytest.raises(ValueError, match=r"expected shape \[1 or 2, 28, 8, 10\], got \[3, 28, 8, 10\]"):
        measure(cube, rand_mask3d(BANDS, 8, 10, batch=3))
    with pytest.raises(ValueError, match=r"expected shape \[1 or 2, 28, 8, 10\], got \[1, 28, 1, 10\]"):
        measure(cube, rand_mask3d(BANDS, 1, 10))  # would broadcast silently without the check


def test_mismatched_mask_and_measurement():
    y = torch.rand(2, 8, 10 + 54)
    with pytest.raises(ValueError, match=r"measurement of shape \[2, 8, 64\]: expected shape \[1 or 2, 28, 8, 10\]"):
        measurement_to_input(y, rand_mask3d(BANDS, 8, 12))
    with pytest.raises(ValueError, match=r"expected shape \[1 or 2, 14, 8, 38\], got \[1, 14, 8, 10\]"):
        measurement_to_input(y, rand_mask3d(14, 8, 10), "Y")


def test_measurement_too_narrow():
    with pytest.raises(ValueError, match=r"width 54 is too small for 28 bands at step=2.*more than .* = 54 columns"):
        shift_back(torch.rand(1, 8, 54))
    with pytest.raises(ValueError, match="width 30 is too small for 28 bands"):
        measurement_to_input(torch.rand(1, 8, 30), rand_mask3d(BANDS, 8, 8))


def test_unknown_settings_and_steps():
    m3d = rand_mask3d(BANDS, 8, 8)
    with pytest.raises(ValueError, match=r"mask setting 'phi'; valid settings are 'Phi', 'Phi_PhiPhiT', 'Mask'"):
        mask_input(m3d, "phi")
    with pytest.raises(ValueError, match=r"unknown input setting 'X'; valid settings are 'H', 'HM', 'Y'"):
        measurement_to_input(torch.rand(1, 8, 62), m3d, "X")
    with pytest.raises(ValueError, match="unknown input setting"):
        simulate(torch.rand(1, BANDS, 8, 8), m3d, input_setting="HMM")
    with pytest.raises(ValueError, match="step must be a positive int, got 0"):
        shift(torch.rand(1, 2, 3, 3), step=0)


def test_a_cube_far_outside_the_unit_range_is_not_simulated():
    """simulate makes training and test data (cubes in [0, 1]); measure is the linear operator, for any values."""
    cube = torch.rand(1, BANDS, 8, 8)
    with pytest.raises(ValueError, match=r"cube ranges over .*values in \[0, 1\] are expected; divide it by its full scale"):
        simulate(cube * 255, rand_mask3d(BANDS, 8, 8))
    simulate(cube * 1.3, rand_mask3d(BANDS, 8, 8))  # slack for noise and overshoot
