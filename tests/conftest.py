"""Shared fixtures: paths to the real data in ../shared/data and small helpers."""
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's real data folder (masks, cubes, checkpoints); CI has it beside the repo."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data folder not found at {SHARED_DATA}; clone the repo beside ../shared")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One intra-op thread: on a busy 2-core machine two spinning threads run these small models several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
