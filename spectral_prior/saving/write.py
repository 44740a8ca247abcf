"""The one writer of saved folders: weights, ``config.json``, card and mask, written as a unit."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..io import atomic_folder, replaceable_folder, save_json, save_tensors
from .format import CARD_FILE, CONFIG_FILE, MASK_FILE, SAVED_FILES, check_schema, library_stamp, mask_sha256

STAGING_PREFIX = ".saving-"
"""The files of a save into a folder that also holds other files are staged in a sub-folder of this name."""


def mask_entry(mask2d: Tensor, *, source: str) -> dict[str, Any]:
    """The ``mask`` entry of a ``config.json``: file, shape, :func:`mask_sha256`, and ``source`` (where the mask comes
    from: a file name or its provenance, never a local path)."""
    return {"file": MASK_FILE, "shape": list(mask2d.shape), "sha256": mask_sha256(mask2d), "source": source}


def write_saved(
    directory: str | os.PathLike,
    config: Mapping[str, Any],
    weights: Mapping[str, Mapping[str, Tensor]],
    *,
    card: str,
    mask: Tensor | None = None,
    mask_source: str | None = None,
) -> Path:
    """Write a saved folder: ``weights`` (file name -> state dict), ``config`` stamped with the library and format
    version, the ``card`` text, and the coded aperture ``mask`` [H, W] with its ``mask_source``.

    Everything is written into a temporary folder first. A folder that holds only saved files (or nothing) is then
    replaced by it in one step; into a folder that holds other files too (a user's), or one that cannot be renamed (the
    current folder, a mount point), each file is moved, the ``config.json`` last, so that a config never names a file
    that is not there yet. Returns ``directory``.
    """
    directory = Path(directory)
    stamp = library_stamp()
    config = {"kind": config.get("kind"), **stamp, **{k: v for k, v in config.items() if k not in stamp}}
    files = {name: dict(tensors) for name, tensors in weights.items()}
    if mask is not None:
        mask2d = mask.detach().to("cpu", torch.float32).contiguous()
        config["mask"] = mask_entry(mask2d, source=mask_source or "not recorded")
        files[MASK_FILE] = {"mask": mask2d}
    check_schema(config, source=f"the config for {directory}")
    if _holds_other_files(directory) or not replaceable_folder(directory):
        return _write_into(Path(directory).resolve(), config, files, card)
    with atomic_folder(directory, what="save directory") as temporary:
        _write_files(temporary, config, files, card)
    return directory


def _write_files(folder: Path, config: Mapping[str, Any], files: Mapping[str, Mapping[str, Tensor]], card: str) -> None:
    for name, tensors in files.items():
        save_tensors(tensors, folder / name, metadata={"format": "pt"})
    (folder / CARD_FILE).write_text(card)
    save_json(config, folder / CONFIG_FILE)


def _holds_other_files(directory: Path) -> bool:
    """Whether ``directory`` holds anything but saved files (and this writer's own leftovers)."""
    ours = lambda name: name in SAVED_FILES or name.startswith(STAGING_PREFIX)  # noqa: E731
    return directory.is_dir() and any(not ours(entry.name) for entry in directory.iterdir())


def _write_into(directory: Path, config: Mapping[str, Any], files: Mapping[str, Mapping[str, Tensor]], card: str) -> Path:
    stale = [directory / name for name in SAVED_FILES if name not in files and name not in (CONFIG_FILE, CARD_FILE)]
    with tempfile.TemporaryDirectory(dir=directory, prefix=STAGING_PREFIX) as name:
        staged = Path(name)
        _write_files(staged, config, files, card)
        (directory / CONFIG_FILE).unlink(missing_ok=True)  # no config while its files change
        for path in stale:
            path.unlink(missing_ok=True)
        for name in [*files, CARD_FILE, CONFIG_FILE]:
            os.replace(staged / name, directory / name)
    return directory
