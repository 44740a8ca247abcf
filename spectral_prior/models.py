"""Ready-to-run models from saved files: a trained injection, a bare backbone's weights, or a toolbox ``.pth``.

``load_model(checkpoint)`` is what ``spectral-prior eval`` and ``reconstruct`` use:

* a directory (or Hub repo id) saved by :meth:`SpectralPriorInjector.save_pretrained` with its backbone: the
  backbone named in its config, with the prior injected and every weight loaded;
* a directory saved by :func:`save_backbone` (a baseline run): the bare backbone named in its config;
* a weights file (``.safetensors``, or an MST-toolbox ``.pth``): the bare backbone ``backbone``, loaded strictly;
* nothing: a freshly initialised ``backbone``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .adapters.checkpoint import load_toolbox_checkpoint
from .adapters.registry import backbone_preset, create_backbone
from .errors import InvalidInputError, UntrainedPriorWarning
from .io import load_state_dict_strict, load_tensors
from .saving.cards import backbone_card
from .saving.format import BACKBONE_FILE, TRAINING_STAGE_KEY, WEIGHTS_FILE, mask_sha256
from .saving.hub import check_hub_options
from .saving.load import Saved, load_saved_mask, open_saved
from .saving.write import write_saved
from .sdp.inject import load_injection


def check_mask(mask2d: Tensor, trained: Tensor | None, *, model: str) -> None:
    """Warn when ``mask2d`` is not the mask the model was trained with (a CASSI network is specific to its mask)."""
    if trained is None or (trained.shape == mask2d.shape and mask_sha256(trained) == mask_sha256(mask2d)):
        return
    warnings.warn(
        f"{model} was trained with another coded aperture ({trained.shape[0]}x{trained.shape[1]}, sha256 "
        f"{mask_sha256(trained)[:12]}) than the one given ({mask2d.shape[0]}x{mask2d.shape[1]}, sha256 "
        f"{mask_sha256(mask2d)[:12]}); expect a large loss (the official BiSRNet drops from 29.6 to 19.7 dB on "
        "CAVE balloons with another mask). To score simulated data, leave the mask out and the model's own is "
        "used; a real measurement needs a model trained with the mask of the camera that took it.",
        UserWarning,
        stacklevel=2,
    )


def resolve_model_mask(checkpoint: str | Path | None, mask: Tensor | None = None) -> Tensor:
    """The coded aperture to run a saved model with: ``mask`` if given (with :func:`check_mask`'s warning when the
    model was trained with another one), else the mask saved with the model; ValueError when there is neither."""
    trained = None
    if checkpoint is not None and not Path(checkpoint).is_file():  # weights files carry no mask
        trained = load_saved_mask(checkpoint)
    if mask is None:
        if trained is None:
            raise InvalidInputError(f"{checkpoint or 'an untrained model'} records no coded aperture: give the mask option "
                             "(the mask the model was trained with, or the one your measurement was taken with)")
        return trained
    check_mask(mask, trained, model=str(checkpoint))
    return mask


def mask_for_models(checkpoints: list[str | Path | None], mask: Tensor | None = None) -> Tensor:
    """The one coded aperture to run several saved models with: ``mask`` if given, else the first model's (see
    :func:`resolve_model_mask`), with a warning for each model trained with another one."""
    mask2d = resolve_model_mask(checkpoints[0], mask)
    for other in checkpoints[1:]:
        resolve_model_mask(other, mask2d)
    return mask2d


def save_backbone(
    directory: str | Path,
    model: nn.Module,
    *,
    name: str,
    card: dict[str, Any] | None = None,
    mask: Tensor | None = None,
    mask_source: str | None = None,
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """Save a bare backbone as ``backbone.safetensors`` + ``config.json`` (kind ``"backbone"``) + card, and its coded
    aperture ``mask`` when given, as a unit (:func:`~spectral_prior.saving.write_saved`)."""
    config = {"kind": "backbone", "backbone": {"class": type(model).__name__, "name": name, "file": BACKBONE_FILE},
              **(extra_config or {})}
    return write_saved(directory, config, {BACKBONE_FILE: model.state_dict()}, card=backbone_card(name, card or {}),
                       mask=mask, mask_source=mask_source)


def load_model(
    checkpoint: str | Path | None = None, *, backbone: str | None = None, compile: bool = False, **hub_kwargs: Any
) -> nn.Module:
    """The model a checkpoint describes, in eval mode (see the module docstring for the accepted checkpoints).

    ``backbone`` names the architecture (``"mst_s"``, ...); it may be left out for directories whose config names
    it, and must then agree with it. ``compile=True`` compiles the model in place (``nn.Module.compile``: its
    ``state_dict`` keys stay as they are; the first call at each input shape pays for a compilation). ``hub_kwargs``
    (``revision``, ``cache_dir``, ``local_files_only``, ``token``) apply to Hub repo ids.
    """
    check_hub_options(hub_kwargs, load_model)
    model, _ = _load_model(checkpoint, backbone, hub_kwargs)
    if compile:
        model.compile(dynamic=False)  # one compilation per input shape (see Trainer._wrap on dynamic shapes)
    return model


def _load_model(checkpoint: str | Path | None, backbone: str | None, hub_kwargs: dict[str, Any]) -> tuple[nn.Module, str]:
    """The model and the name of its backbone."""
    if checkpoint is None:
        if backbone is None:
            raise InvalidInputError("pass a checkpoint, a backbone name, or both")
        return create_backbone(backbone).eval(), backbone
    path = Path(checkpoint)
    if path.is_file():
        if backbone is None:
            raise InvalidInputError(f"{path} is a bare weights file: say which backbone it is for, e.g. backbone='mst_s'")
        model = create_backbone(backbone)
        if path.suffix == ".safetensors":
            load_state_dict_strict(model, load_tensors(path), source=str(path))
        else:
            load_toolbox_checkpoint(model, path)
        return model.eval(), backbone

    saved = open_saved(checkpoint, files=(WEIGHTS_FILE, BACKBONE_FILE), **hub_kwargs)
    name = _backbone_name(saved.config, backbone, saved.directory)
    model = create_backbone(name)
    if saved.kind == "backbone":
        load_state_dict_strict(model, saved.tensors(BACKBONE_FILE), source=str(saved.directory))
        return model.eval(), name
    _check_whole_injection(saved, checkpoint)
    return load_injection(model, saved, condition=backbone_preset(name).condition).eval(), name


def _check_whole_injection(saved: Saved, checkpoint: str | Path) -> None:
    """Refuse what is not a whole injected model; warn for the end of stage 1, whose student is untrained."""
    if saved.kind != "injector":
        raise InvalidInputError(
            f"{saved.directory} holds a bare {saved.kind!r}; inject it into a backbone with "
            f"load_injection(model, {str(checkpoint)!r}, layers=...) instead"
        )
    if not saved.config.get("backbone"):
        raise InvalidInputError(
            f"{saved.directory} holds prior and SPIM weights without the backbone's: load your trained backbone, then "
            f"load_injection(model, {str(checkpoint)!r})"
        )
    if saved.config.get(TRAINING_STAGE_KEY) == "stage1":
        warnings.warn(
            f"{saved.directory} is the end of training stage 1: its measurement-only prior has not been trained yet "
            "(stage 1 trains the teacher, which sees the ground truth), so its scores are not the method's; train "
            "stages 2a and 2b from it first",
            UntrainedPriorWarning,
            stacklevel=4,
        )


def _backbone_name(config: dict[str, Any], given: str | None, directory: Path) -> str:
    saved = (config.get("backbone") or {}).get("name")
    if given is not None and saved is not None and given != saved:
        raise InvalidInputError(f"{directory} holds a {saved!r} checkpoint, but backbone={given!r} was asked for")
    name = given or saved
    if name is None:
        raise InvalidInputError(f"{directory} does not name its backbone: pass backbone= (e.g. 'mst_s')")
    return name


def load_model_and_backbone(checkpoint: str | Path | None, backbone: str | None) -> tuple[nn.Module, str]:
    """:func:`load_model` of ``checkpoint``, with the name of its backbone (``backbone``, or the one its saved config
    names), from one read of the checkpoint."""
    return _load_model(checkpoint, backbone, {})
