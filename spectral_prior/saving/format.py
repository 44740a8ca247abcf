"""The saved format: file names, kinds, the format version, the schema of ``config.json`` and its upgrades.

A saved model is a folder (or a Hub repo) holding

* ``config.json``: what was saved (``kind``: ``"injector"``, ``"backbone"`` or ``"prior"``), by which library version,
  in which :data:`FORMAT_VERSION`, and what it needs to be rebuilt (targets, channels, prior, backbone, mask);
* ``model.safetensors``: prior + SPIM weights (injections) or the prior's (bare priors);
* ``backbone.safetensors``: the backbone's weights, when saved with them;
* ``mask.safetensors``: the coded aperture the model was trained with, its hash in ``config.json``;
* ``README.md``: a model card.

Every reader goes through :func:`read_config`, which takes a config of any older format to today's one step at a
time (:data:`UPGRADES`) and checks the keys its kind needs, so that a damaged file is one clear error, not a
``KeyError`` deep in a loader. As peft keeps ``adapter_config.json`` beside ``adapter_model.safetensors``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._version import __version__
from ..errors import InvalidInputError
from ..io import load_json

FORMAT_VERSION = 2
"""Version of the saved-files layout; older ones are upgraded on reading, newer ones refused with an upgrade hint."""
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
BACKBONE_FILE = "backbone.safetensors"
MASK_FILE = "mask.safetensors"
"""The coded aperture a saved model was trained with (tensor ``mask``, [H, W] float32)."""
CARD_FILE = "README.md"
SAVED_FILES = (CONFIG_FILE, WEIGHTS_FILE, BACKBONE_FILE, MASK_FILE, CARD_FILE)
TRAINING_STAGE_KEY = "training_stage"
"""The ``config.json`` entry naming the training stage that ended in a run's ``final/`` folder."""

REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "injector": ("preset", "layers", "targets", "channels", "channel_axes", "positions", "prior_dim", "prior"),
    "prior": ("class", "config"),
    "backbone": ("backbone",),
}
"""The entries each kind of ``config.json`` must hold (besides the library stamp)."""


def _upgrade_1_to_2(config: dict[str, Any]) -> dict[str, Any]:
    """Format 2 records every injection's positions: format-1 files written before positions existed modulated
    block outputs."""
    if config.get("kind") == "injector" and not config.get("positions"):
        config["positions"] = {name: "output" for name in config.get("targets", [])}
    return config


UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _upgrade_1_to_2}
"""``UPGRADES[n]`` takes a format-``n`` config to format ``n + 1``."""


def library_stamp() -> dict[str, Any]:
    """What every saved config records about the library that wrote it."""
    return {"library": "spectral-prior", "library_version": __version__, "format_version": FORMAT_VERSION}


def upgrade_config(config: Mapping[str, Any], *, source: str = "config") -> dict[str, Any]:
    """``config`` in today's format: each older format upgraded a step at a time; a newer one is refused."""
    config = dict(config)
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInputError(f"{source} is not a spectral-prior config (no format_version)")
    if version > FORMAT_VERSION:
        raise InvalidInputError(
            f"{source} was written by spectral-prior {config.get('library_version', '?')} in format {version}; this "
            f"version ({__version__}) reads format {FORMAT_VERSION} at most: upgrade with pip install -U spectral-prior"
        )
    for step in range(version, FORMAT_VERSION):
        config = UPGRADES[step](config)
        config["format_version"] = step + 1
    return config


def check_schema(config: Mapping[str, Any], *, source: str = "config") -> None:
    """A clear error when ``config`` is not of a known kind or lacks an entry its kind needs."""
    kind = config.get("kind")
    if kind not in REQUIRED_KEYS:
        raise InvalidInputError(f"{source} holds an unknown kind of saved model {kind!r}; expected one of "
                                f"{', '.join(REQUIRED_KEYS)}")
    missing = [key for key in REQUIRED_KEYS[kind] if key not in config]
    if missing:
        raise InvalidInputError(f"{source} is damaged: a {kind!r} config needs {', '.join(map(repr, missing))}, which "
                                "it lacks; save the model again")


def read_config(path: Path, *, kind: str | None = None) -> dict[str, Any]:
    """Read a saved ``config.json`` in today's format, checked against its kind's schema (and ``kind`` if given)."""
    config = upgrade_config(load_json(path), source=str(path))
    check_schema(config, source=str(path))
    if kind is not None and config["kind"] != kind:
        raise InvalidInputError(f"{path} holds a {config['kind']!r} checkpoint, expected a {kind!r} one")
    return config


def saved_files(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The files a saved folder with this ``config.json`` holds besides its card: what a complete upload needs."""
    check_schema(config)
    weights = (BACKBONE_FILE,) if config["kind"] == "backbone" else (WEIGHTS_FILE,)
    if config["kind"] == "injector" and config.get("backbone"):
        weights += (BACKBONE_FILE,)
    return (CONFIG_FILE, *weights, *((MASK_FILE,) if config.get("mask") else ()))


def mask_sha256(mask2d: Tensor) -> str:
    """The SHA-256 of a 2-D mask's float32 values (row-major): equal masks, equal hashes."""
    array = mask2d.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(array.tobytes()).hexdigest()
