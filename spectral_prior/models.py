"""Ready-to-run models from saved files: a trained injection, a bare backbone's weights, or a toolbox ``.pth``.

``load_model(checkpoint)`` is what ``spectral-prior eval`` and ``reconstruct`` use:

* a directory (or Hub repo id) saved by :meth:`SpectralPriorInjector.save_pretrained` with its backbone: the
  backbone named in its config, with the prior injected and every weight loaded;
* a directory saved by :func:`save_backbone` (a baseline run): the bare backbone named in its config;
* a weights file (``.safetensors``, or an MST-toolbox ``.pth``): the bare backbone ``backbone``, loaded strictly;
* nothing: a freshly initialised ``backbone``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .adapters.checkpoint import load_toolbox_checkpoint
from .adapters.registry import backbone_preset, create_backbone
from .inject import BACKBONE_FILE, inject_prior
from .io import atomic_path, load_state_dict_strict, load_tensors, save_json, save_tensors
from .prior import CONFIG_FILE, WEIGHTS_FILE, library_stamp, read_config


def save_backbone(directory: str | Path, model: nn.Module, *, name: str, card: dict[str, Any] | None = None) -> Path:
    """Save a bare backbone as ``backbone.safetensors`` + ``config.json`` (kind ``"backbone"``), atomically."""
    directory = Path(directory)
    save_tensors(model.state_dict(), directory / BACKBONE_FILE, metadata={"format": "pt"})
    save_json(
        {"kind": "backbone", **library_stamp(), "backbone": {"class": type(model).__name__, "name": name,
                                                               "file": BACKBONE_FILE}},
        directory / CONFIG_FILE,
    )
    lines = [f"# {name} (bare backbone, no prior)", ""] + [f"- {key}: {value}" for key, value in (card or {}).items()]
    with atomic_path(directory / "README.md") as temporary:
        temporary.write_text("\n".join(lines) + "\n")
    return directory


def load_model(checkpoint: str | Path | None = None, *, backbone: str | None = None, **hub_kwargs: Any) -> nn.Module:
    """The model a checkpoint describes, in eval mode (see the module docstring for the accepted checkpoints).

    ``backbone`` names the architecture (``"mst_s"``, ...); it may be left out for directories whose config names
    it, and must then agree with it. ``hub_kwargs`` (``revision``, ``cache_dir``, ``local_files_only``,
    ``token``) apply to Hub repo ids.
    """
    if checkpoint is None:
        if backbone is None:
            raise ValueError("pass a checkpoint, a backbone name, or both")
        return create_backbone(backbone).eval()
    path = Path(checkpoint)
    if path.is_file():
        if backbone is None:
            raise ValueError(f"{path} is a bare weights file: say which backbone it is for, e.g. backbone='mst_s'")
        model = create_backbone(backbone)
        if path.suffix == ".safetensors":
            load_state_dict_strict(model, load_tensors(path), source=str(path))
        else:
            load_toolbox_checkpoint(model, path)
        return model.eval()

    from .hub import download_prior

    directory = download_prior(
        str(checkpoint), filenames=(CONFIG_FILE,), optional=(WEIGHTS_FILE, BACKBONE_FILE), **hub_kwargs
    )
    config = read_config(directory / CONFIG_FILE)
    name = _backbone_name(config, backbone, directory)
    model = create_backbone(name)
    if config["kind"] == "backbone":
        load_state_dict_strict(model, load_tensors(directory / BACKBONE_FILE), source=str(directory))
        return model.eval()
    if config["kind"] != "injector":
        raise ValueError(
            f"{directory} holds a bare {config['kind']!r}; inject it into a backbone with "
            f"inject_prior(model, layers=..., prior={str(checkpoint)!r}) instead"
        )
    if not config.get("backbone"):
        raise ValueError(
            f"{directory} holds prior and SPIM weights without the backbone's: load your trained backbone, then "
            f"inject_prior(model, layers=..., prior={str(checkpoint)!r})"
        )
    layers = config["preset"] or config["layers"]
    preset = backbone_preset(name)
    return inject_prior(model, layers, prior=directory, condition=preset.condition).eval()


def _backbone_name(config: dict[str, Any], given: str | None, directory: Path) -> str:
    saved = (config.get("backbone") or {}).get("name")
    if given is not None and saved is not None and given != saved:
        raise ValueError(f"{directory} holds a {saved!r} checkpoint, but backbone={given!r} was asked for")
    name = given or saved
    if name is None:
        raise ValueError(f"{directory} does not name its backbone: pass backbone= (e.g. 'mst_s')")
    return name
