"""A run's checkpoints: ``checkpoints/step-NNNNNNN/`` (weights as safetensors; optimizer, scheduler, EMA and RNG states
in ``state.pt``, versioned by :data:`RUN_STATE_VERSION`), named by ``checkpoints/latest.json``, each written as a unit."""
from __future__ import annotations

import pickle
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..io import atomic_folder, atomic_path, load_json, load_tensors, save_json, save_tensors

RUN_STATE_VERSION = 1
"""Version of ``state.pt``; states written before versions existed (0) hold the same entries."""
WEIGHTS = "weights.safetensors"
STATE = "state.pt"

def _checkpoint_root(output: Path) -> Path:
    return output / "checkpoints"


def latest_checkpoint(output: str | Path) -> Optional[Path]:
    """The newest complete checkpoint folder of a run, or None."""
    root = _checkpoint_root(Path(output))
    pointer = root / "latest.json"
    if not pointer.is_file():
        return None
    folder = root / load_json(pointer)["folder"]
    if not folder.is_dir():
        raise InvalidInputError(f"{pointer} names {folder.name}, which is missing: the run folder was changed by hand")
    return folder


def write_checkpoint(output: Path, step: int, weights: dict[str, Tensor], state: dict[str, Any]) -> Path:
    """Write ``checkpoints/step-N/`` as a unit, then point latest.json at it and delete the previous one.

    A crash or error at any point leaves the previous checkpoint as the latest one and no partial folder behind.
    """
    root = _checkpoint_root(output)
    name = f"step-{step:07d}"
    with atomic_folder(root / name, what="checkpoint folder") as temporary:
        save_tensors(weights, temporary / WEIGHTS, metadata={"format": "pt"})
        with atomic_path(temporary / STATE) as path:
            torch.save({"version": RUN_STATE_VERSION, **state}, path)
    previous = latest_checkpoint(output)
    save_json({"folder": name, "step": step}, root / "latest.json")
    if previous is not None and previous.name != name:
        shutil.rmtree(previous, ignore_errors=True)
    return root / name


def _numpy_rng_globals() -> list[Any]:
    """What unpickling NumPy's generator state (a uint32 array) needs, named the way this NumPy names it."""
    keys = np.random.get_state()[1]
    return [keys.__reduce__()[0], np.ndarray, np.dtype, type(keys.dtype)]


def read_checkpoint(folder: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The weights and the state of a checkpoint folder; a state of a newer version is refused.

    ``state.pt`` is read with ``weights_only=True``: tensors, plain Python values and NumPy's generator state only, so
    resuming a run folder from elsewhere runs no code from it.
    """
    try:
        with torch.serialization.safe_globals(_numpy_rng_globals()):
            state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise InvalidInputError(f"{folder / STATE} holds Python objects a training state does not have, so it is not "
                                f"loaded (weights_only=True): {error}") from None
    version = state.get("version", 0)
    if version > RUN_STATE_VERSION:
        raise InvalidInputError(f"{folder} was written by a newer spectral-prior (run state {version}; this one reads "
                                f"{RUN_STATE_VERSION} at most): upgrade with pip install -U spectral-prior")
    return load_tensors(folder / WEIGHTS), state


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextmanager
def caller_rng_kept() -> Iterator[None]:
    """Inside, training seeds and draws from the global generators; on exit they are the caller's again."""
    states = rng_states()
    try:
        yield
    finally:
        restore_rng(states)


def replace_folder(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` so that ``target`` is either the old folder or the complete copy."""
    with atomic_folder(target) as temporary:
        shutil.copytree(source, temporary, dirs_exist_ok=True)
