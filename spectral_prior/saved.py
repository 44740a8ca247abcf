"""The saved format, in one place: file names, the format version, config reading and writing, model cards, masks.

A saved model is a folder (or a Hub repo) holding

* ``config.json``: what was saved (``kind``: ``"injector"``, ``"backbone"`` or ``"prior"``), by which library version,
  in which :data:`FORMAT_VERSION`, and what it needs to be rebuilt (targets, channels, prior, backbone, mask);
* ``model.safetensors``: prior + SPIM weights (injections) or the prior's (bare priors);
* ``backbone.safetensors``: the backbone's weights, when saved with them;
* ``mask.safetensors``: the coded aperture the model was trained with, its hash in ``config.json``;
* ``README.md``: a model card.

As peft keeps ``adapter_config.json`` beside ``adapter_model.safetensors``, and timm's ``_builder.py`` owns loading.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from . import __version__
from .errors import InvalidInputError, MissingFileError
from .io import atomic_path, load_json, load_tensors, save_json, save_tensors

FORMAT_VERSION = 1
"""Version of the saved-files layout; files of a newer version are refused with an upgrade hint."""
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
BACKBONE_FILE = "backbone.safetensors"
MASK_FILE = "mask.safetensors"
"""The coded aperture a saved model was trained with (tensor ``mask``, [H, W] float32)."""
CARD_FILE = "README.md"
TRAINING_STAGE_KEY = "training_stage"
"""The ``config.json`` entry naming the training stage that ended in a run's ``final/`` folder."""


# -- configs ---------------------------------------------------------------------------------------------------------


def library_stamp() -> dict[str, Any]:
    """What every saved config records about the library that wrote it."""
    return {"library": "spectral-prior", "library_version": __version__, "format_version": FORMAT_VERSION}


def read_config(path: Path, *, kind: str | None = None) -> dict[str, Any]:
    """Read a saved config, refusing files of a newer format or of another kind with a clear message."""
    config = load_json(path)
    version = config.get("format_version")
    if not isinstance(version, int):
        raise InvalidInputError(f"{path} is not a spectral-prior config (no format_version)")
    if version > FORMAT_VERSION:
        raise InvalidInputError(
            f"{path} was written by spectral-prior {config.get('library_version', '?')} in format {version}; this "
            f"version ({__version__}) reads format {FORMAT_VERSION} at most: upgrade with pip install -U spectral-prior"
        )
    if kind is not None and config.get("kind") != kind:
        raise InvalidInputError(f"{path} holds a {config.get('kind')!r} checkpoint, expected a {kind!r} one")
    return config


def saved_files(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The files a saved folder with this ``config.json`` holds besides its card: what a complete upload needs."""
    weights = {"backbone": (BACKBONE_FILE,), "injector": (WEIGHTS_FILE,), "prior": (WEIGHTS_FILE,)}.get(config.get("kind"))
    if weights is None:
        raise InvalidInputError(f"unknown kind of saved model {config.get('kind')!r}; expected backbone, injector or prior")
    if config.get("kind") == "injector" and config.get("backbone"):
        weights += (BACKBONE_FILE,)
    return (CONFIG_FILE, *weights, *((MASK_FILE,) if config.get("mask") else ()))


def add_to_config(directory: Path, entries: Mapping[str, Any]) -> None:
    """Record ``entries`` in the ``config.json`` of a folder just saved (the mask beside it, the training stage)."""
    config = load_json(directory / CONFIG_FILE)
    save_json({**config, **entries}, directory / CONFIG_FILE)


# -- model cards -----------------------------------------------------------------------------------------------------


def model_card(config: Mapping[str, Any], card: Mapping[str, Any]) -> str:
    """A Hub model card (YAML front matter + markdown) for a saved injection."""
    backbone = config.get("backbone", {}).get("class", "not included (prior and SPIM weights only)")
    lines = [
        "---",
        "library_name: spectral-prior",
        "license: mit",
        "tags: [hyperspectral, cassi, spectral-compressive-imaging, diffusion-prior]",
        "---",
        "",
        "# Spectral Diffusion Prior injection",
        "",
        "Load with `spectral_prior.inject_prior(model, layers=..., prior=<this repo or directory>)`; method from",
        "[arXiv 2507.13769](https://arxiv.org/abs/2507.13769).",
        "",
        f"- backbone: {backbone}",
        f"- preset / layers: {config['preset']} / `{config['layers']}`",
        f"- modulated blocks: {', '.join(config['targets'])}",
        f"- prior: {config['prior']['class']} {config['prior']['config']}",
        f"- spectral-prior version: {config['library_version']}",
    ]
    lines += [f"- {key}: {value}" for key, value in card.items()]
    return "\n".join(lines) + "\n"


def backbone_card(name: str, card: Mapping[str, Any]) -> str:
    """The model card of a bare backbone: its name and ``card``'s entries."""
    lines = [f"# {name} (bare backbone, no prior)", ""] + [f"- {key}: {value}" for key, value in card.items()]
    return "\n".join(lines) + "\n"


def write_card(directory: Path, text: str) -> None:
    with atomic_path(directory / CARD_FILE) as temporary:
        temporary.write_text(text)


# -- masks -----------------------------------------------------------------------------------------------------------


def mask_sha256(mask2d: Tensor) -> str:
    """The SHA-256 of a 2-D mask's float32 values (row-major): equal masks, equal hashes."""
    array = mask2d.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(array.tobytes()).hexdigest()


def save_mask(directory: str | Path, mask2d: Tensor, *, source: str) -> dict[str, Any]:
    """Store a model's coded aperture beside it: ``mask.safetensors`` and a ``mask`` entry in its ``config.json``.

    ``source`` says where the mask comes from (a file name or its provenance, never a local path); the entry holds
    it with the file name, shape and :func:`mask_sha256`, and is returned.
    """
    directory = Path(directory)
    mask2d = mask2d.detach().to("cpu", torch.float32).contiguous()
    save_tensors({"mask": mask2d}, directory / MASK_FILE, metadata={"format": "pt"})
    entry = {"file": MASK_FILE, "shape": list(mask2d.shape), "sha256": mask_sha256(mask2d), "source": source}
    add_to_config(directory, {"mask": entry})
    return entry


def load_saved_mask(checkpoint: str | Path, **hub_kwargs: Any) -> Tensor | None:
    """The coded aperture a saved model (directory, embedded name or Hub repo id) was trained with, or None."""
    from .hub import check_hub_options, download_prior

    check_hub_options(hub_kwargs, load_saved_mask)
    directory = download_prior(str(checkpoint), filenames=(CONFIG_FILE,), optional=(MASK_FILE,), **hub_kwargs)
    entry = read_config(directory / CONFIG_FILE).get("mask")
    if entry is None:
        return None
    mask_file = directory / entry["file"]
    if not mask_file.is_file():
        raise MissingFileError(f"{directory} records a mask in {entry['file']}, but the file is missing")
    mask2d = load_tensors(mask_file)["mask"]
    if mask_sha256(mask2d) != entry["sha256"]:
        raise InvalidInputError(f"{mask_file} does not match the hash in its config.json: the file was changed or damaged")
    return mask2d
