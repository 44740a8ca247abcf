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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
