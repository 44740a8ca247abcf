"""One MATLAB reader for cubes, masks and measurements: the same answer from v5 and v7.3 files, the same errors."""
import numpy as np
import pytest
import scipy.io
import torch
from matlab_files import write_mat_v73

from spectral_prior import cassi
from spectral_prior.data import CubeReadError, read_cube
from spectral_prior.errors import InvalidInputError, UnknownNameError
from spectral_prior.matfile import UnreadableMatFileError, read_mat
from spectral_prior.inference import read_measurement


@pytest.fixture(params=["v5", "v73"])
def write(request, tmp_path):
    def write_file(name, variables):
        path = tmp_path / f"{name}-{request.param}.mat"
        if request.param == "v5":
            scipy.io.savemat(path, variables)
        else:
            write_mat_v73(path, variables)
        return path

    return write_file


def test_every_reader_gets_the_same_arrays_from_either_version(write):
    generator = np.random.default_rng(0)
    cube = generator.random((6, 5, 28)).astype(np.float32)  # H x W x C, nothing square: a lost transpose shows
    mask = generator.random((6, 5)).astype(np.float32)
    measurement = generator.random((6, 59)).astype(np.float32)
    torch.testing.assert_close(read_cube(write("cube", {"img": cube})).data, torch.from_numpy(cube.transpose(2, 0, 1)))
    torch.testing.assert_close(cassi.load_mask(write("mask", {"mask": mask})), torch.from_numpy(mask))
    torch.testing.assert_close(read_measurement(write("meas", {"meas_real": measurement})), torch.from_numpy(measurement))
    name, array = read_mat(write("any", {"a": mask, "b": cube}), lambda shapes: next(k for k, s in shapes.items() if len(s) == 3))
    assert name == "b" and array.shape == (6, 5, 28)


def test_the_choice_sees_matlab_shapes_and_its_errors_pass_unchanged(write):
    path = write("two", {"a": np.zeros((2, 3)), "b": np.zeros((4, 5, 6))})
    seen = {}

    def refuse(shapes):
        seen.update(shapes)
        raise UnknownNameError("nothing fits")

    with pytest.raises(UnknownNameError, match="nothing fits"):
        read_mat(path, refuse)
    assert seen == {"a": (2, 3), "b": (4, 5, 6)}


@pytest.mark.parametrize("content", [b"MATLAB 5.0 MAT-file" + b"\0" * 200, b"not a mat file at all"])
def test_a_damaged_file_is_named_by_every_reader(tmp_path, content):
    path = tmp_path / "broken.mat"
    path.write_bytes(content)
    for read in (cassi.load_mask, read_measurement):
        with pytest.raises(InvalidInputError, match="broken.mat"):
            read(path)
    with pytest.raises(CubeReadError, match="broken.mat"):
        read_cube(path)
    with pytest.raises(UnreadableMatFileError, match="corrupted or truncated"):
        read_mat(path, lambda shapes: "x")
