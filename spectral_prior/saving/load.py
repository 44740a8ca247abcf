"""The one reader of saved folders: :func:`open_saved` finds a folder (local, embedded or on the Hub), reads its
``config.json`` in today's format, and fetches the files its caller needs."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from ..errors import InvalidInputError, MissingFileError
from ..io import load_tensors
from .format import CONFIG_FILE, MASK_FILE, mask_sha256, read_config, saved_files
from .hub import check_hub_options, download_more, download_prior


@dataclass(frozen=True)
class Saved:
    """A saved folder: where it is and its ``config.json`` (upgraded to today's format and checked)."""

    directory: Path
    config: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.config["kind"]

    def has(self, name: str) -> bool:
        return (self.directory / name).is_file()

    def tensors(self, name: str) -> dict[str, Tensor]:
        """The tensors of the saved file ``name`` (``model.safetensors``, ``backbone.safetensors``)."""
        if not self.has(name):
            raise MissingFileError(f"{self.directory} has no {name}")
        return load_tensors(self.directory / name)

    def mask(self) -> Tensor | None:
        """The coded aperture saved with the model (its hash checked), or None when it records none."""
        entry = self.config.get("mask")
        if entry is None:
            return None
        if not self.has(entry["file"]):
            raise MissingFileError(f"{self.directory} records a mask in {entry['file']}, but the file is missing")
        mask2d = load_tensors(self.directory / entry["file"])["mask"]
        if mask_sha256(mask2d) != entry["sha256"]:
            raise InvalidInputError(
                f"{self.directory / entry['file']} does not match the hash in its config.json: the file was changed or "
                "damaged"
            )
        return mask2d


def open_saved(
    source: str | os.PathLike, *, files: Sequence[str] = (), kind: str | None = None, **hub_kwargs: Any
) -> Saved:
    """The saved folder ``source`` names: a directory, an embedded or published name, or a Hub repo id.

    The ``config.json`` comes first; then, of ``files``, those the config records (a backbone's weights only where
    they were saved, the mask only where one was), from the Hub at the same commit. ``kind`` refuses another kind of
    folder; ``hub_kwargs`` are ``revision``, ``cache_dir``, ``local_files_only``, ``token``.
    """
    check_hub_options(hub_kwargs, open_saved)
    directory = download_prior(str(source), filenames=(CONFIG_FILE,), **hub_kwargs)
    config = read_config(directory / CONFIG_FILE, kind=kind)
    recorded = saved_files(config)
    needed = tuple(name for name in files if name in recorded)
    if any(not (directory / name).is_file() for name in needed):
        directory = download_more(str(source), directory, needed, **hub_kwargs)
    return Saved(directory, config)


def load_saved_mask(checkpoint: str | os.PathLike, **hub_kwargs: Any) -> Tensor | None:
    """The coded aperture a saved model (directory, embedded name or Hub repo id) was trained with, or None."""
    check_hub_options(hub_kwargs, load_saved_mask)
    return open_saved(checkpoint, files=(MASK_FILE,), **hub_kwargs).mask()
