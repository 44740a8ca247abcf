"""Shared fixtures: paths to the real data in ../shared/data and small helpers."""
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch


def _let_torchvision_import_without_its_ops() -> None:
    """Make a CUDA build of torchvision importable next to a CPU-only torch (what pip finds on PyPI for Linux).

    Its C++ ops cannot load there (they link libtorch_cuda), which torchvision tolerates, but its import then fails
    registering a fake kernel for the op ``torchvision::nms`` that was never declared, and timm imports torchvision.
    Declaring the two ops it registers kernels for lets the Python side (FrozenBatchNorm2d, transforms) import; the
    ops themselves still raise torchvision's own "Couldn't load custom C++ ops". Nothing changes where torchvision
    imports on its own.
    """
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as err:
        if "torchvision::nms does not exist" not in str(err):
            raise
    for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package, so that the next import starts over
    for op in ("nms", "qnms"):
        torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401


if importlib.util.find_spec("torchvision") is not None:  # before any test module imports timm
    _let_torchvision_import_without_its_ops()

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def require_shared(path: Path) -> Path:
    """``path`` under ../shared, or skip the test with one reason (a failure under CI=true, where it must be there)."""
    if not path.exists():
        reason = f"needs the project's real data, ../shared ({path} is missing)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI must have it beside the repo")
        pytest.skip(reason)
    return path


def pytest_collection_modifyitems(items: list) -> None:
    """Every test that uses ``shared_data`` (directly or through another fixture) is marked ``data``."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's real data folder (masks, cubes, checkpoints); CI has it beside the repo."""
    return require_shared(SHARED_DATA)


TEST_THREADS_ENV = "SPECTRAL_PRIOR_TEST_THREADS"


@pytest.fixture(scope="session", autouse=True)
def _test_threads():
    """One intra-op thread unless ``$SPECTRAL_PRIOR_TEST_THREADS`` says otherwise: on a busy 2-core machine two
    spinning threads run these small models several times slower. CI also runs the numeric tests at 2 threads, and
    ``benchmarks/tolerances.py`` at 1, 2 and 4, since the thread count reorders float reductions."""
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get(TEST_THREADS_ENV, "1")))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
