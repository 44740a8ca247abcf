"""timm integration: the backbones and their SDP variants in timm's model registry (the ``timm`` extra).

Importing this module registers, for every backbone of :func:`spectral_prior.adapters.list_backbones`:

* ``<backbone>`` (``mst_s``, ``mst_m``, ``mst_l``, ``mst_plus_plus``, ``bisrnet``): the bare network, with the MST
  toolbox's state-dict keys;
* ``<backbone>_sdp``: the same network with a fresh Spectral Diffusion Prior injected into the blocks of its preset
  (SPIM starts at zero, so it computes what the bare network does until trained). ``prior_config=`` (a
  :class:`~spectral_prior.PriorConfig` or a dict of its fields) sizes the prior.

Registration is explicit: timm has no plugin entry points, and ``import spectral_prior`` never imports timm (timm
costs about 1.7 s more at import and needs torchvision)::

    import timm
    import spectral_prior.integrations.timm  # noqa: F401 - registers the models with timm

    model = timm.create_model("bisrnet_sdp", pretrained=True)    # the embedded "bisrnet-sdp" (tag .cave), offline
    model = timm.create_model("mst_l_sdp", pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id="owner/repo"))
    model = timm.create_model("mst_l_sdp", pretrained=True, pretrained_cfg_overlay=dict(file="runs/x/final"))
    model = timm.create_model("mst_l", pretrained=True, pretrained_cfg_overlay=dict(file="mst_l.pth"))  # toolbox
    timm.list_models(module="timm"), timm.list_pretrained("mst*")

Weights come from the model's timm ``pretrained_cfg``: ``hf_hub_id`` (a Hub repo id, ``"owner/name@revision"``
pins it) or ``file`` (a directory saved by ``SpectralPriorInjector.save_pretrained(..., backbone=model)`` or by
``save_backbone``; for bare backbones also a ``.safetensors`` or MST-toolbox ``.pth`` file). They are this
library's own format, so they are read by :func:`spectral_prior.load_model`, not by timm's state-dict loader. A
source given in ``pretrained_cfg_overlay`` wins over the registered one. The embedded models of
:data:`spectral_prior.saving.hub.EMBEDDED_MODELS` are registered with the pretrained tag ``cave`` (``bisrnet_sdp.cave``,
``bisrnet.cave``, ``mst_s_sdp.cave``, ``mst_s.cave``: trained on the CAVE train scenes; ``bisrnet.bisci``: the
official BiSRNet weights). As with every timm model, a created model is in training mode; call ``.eval()`` before
inference. The models take the CASSI inputs of their preset (``model(h, phi)`` for MST), not one image.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from ..adapters.registry import backbone_preset, create_backbone, list_backbones
from ..errors import InvalidInputError, MissingDependencyError
from ..saving.hub import EMBEDDED_MODELS, PRETRAINED_DIR
from ..sdp.inject import inject_prior
from ..sdp.injector import INJECTOR_NAME, SpectralPriorInjector
from ..models import load_model
from ..sdp.config import PriorConfig
from ..sdp.prior import SpectralDiffusionPrior

try:
    from timm.models import (
        PretrainedCfg,
        build_model_with_cfg,
        generate_default_cfgs,
        register_model,
        resolve_pretrained_cfg,
    )
except ImportError as err:
    raise MissingDependencyError(
        f"spectral_prior.integrations.timm needs timm ({err}): pip install 'spectral-prior[timm]', after installing the "
        "torchvision that matches your torch (on a CPU-only torch, from the same index as torch)"
    ) from err

__all__ = ["SDP_SUFFIX", "pretrained_names", "register"]

#: Suffix of the timm name of a backbone with a prior injected: ``mst_s`` -> ``mst_s_sdp``.
SDP_SUFFIX = "_sdp"

# timm's own order of weight sources (PretrainedCfg fields), highest priority first.
_SOURCE_KEYS = ("state_dict", "file", "hf_hub_id", "url")
_LOADABLE = ("file", "hf_hub_id")
# Constructor arguments timm fills in from a pretrained_cfg; our backbones take none of them.
_TIMM_DEFAULT_KWARGS = ("num_classes", "in_chans", "global_pool")

_PAPERS = {  # backbone -> (paper, arXiv id)
    "mst": ("Mask-guided Spectral-wise Transformer for Efficient Hyperspectral Image Reconstruction", "2111.07910"),
    "mst_plus_plus": ("MST++: Multi-stage Spectral-wise Transformer for Efficient Spectral Reconstruction",
                      "2204.07908"),
    "bisrnet": ("Binarized Spectral Compressive Imaging", "2305.10299"),
}
_SDP_PAPER = ("Learning Spectral Diffusion Prior for Hyperspectral Image Reconstruction", "2507.13769")

#: Pretrained cfgs by timm name, read by :func:`timm.models.register_model` (it looks up ``default_cfgs``).
default_cfgs: dict[str, Any] = {}


def _split(variant: str) -> tuple[str, bool]:
    """``"mst_s_sdp"`` -> ``("mst_s", True)``; ``"mst_s"`` -> ``("mst_s", False)``."""
    if variant.endswith(SDP_SUFFIX):
        return variant[: -len(SDP_SUFFIX)], True
    return variant, False


def _cfg(backbone: str, with_prior: bool, **sources: Any) -> dict[str, Any]:
    """The pretrained_cfg of one timm name: CASSI inputs (28 bands), no classifier, the papers it implements."""
    preset = backbone_preset(backbone).name
    paper, arxiv = _PAPERS.get(preset, (None, None))
    papers = [(paper, arxiv)] + ([_SDP_PAPER] if with_prior else [])
    known = [(name, number) for name, number in papers if number]
    return dict(
        input_size=(28, 256, 256),
        mean=(0.0,) * 28,
        std=(1.0,) * 28,
        crop_pct=1.0,
        interpolation="bilinear",
        num_classes=0,
        license="mit",
        paper_name=", ".join(name for name, _ in known) or None,
        paper_ids=", ".join(f"arXiv:{number}" for _, number in known) or None,
        origin_url="https://github.com/caiyuanhao1998/MST",
        **sources,
    )


EMBEDDED_TAG = "cave"  # the embedded models were trained on the CAVE train scenes
SOURCE_TAGS = {"bisrnet_official": "bisci"}  # embedded folders holding an official release: tagged by its source


def _embedded_cfgs() -> dict[str, dict[str, Any]]:
    """``"<timm name>.cave"`` (``.bisci`` for the official BiSRNet) -> cfg with ``file`` at the packaged directory of
    each embedded model. Read from the folder names (``<backbone>_<arm>``, the SDP arm ``sdp``), not from the files:
    importing reads nothing."""
    cfgs = {}
    for folder in sorted(set(EMBEDDED_MODELS.values())):
        backbone, arm = folder.rsplit("_", 1)
        with_prior = arm == "sdp"
        variant = backbone + (SDP_SUFFIX if with_prior else "")
        cfgs[f"{variant}.{SOURCE_TAGS.get(folder, EMBEDDED_TAG)}"] = _cfg(backbone, with_prior, file=str(PRETRAINED_DIR / folder))
    return cfgs


def pretrained_names() -> list[str]:
    """The registered ``name.tag`` of this module's models that have weights (``["bisrnet.cave", ...]``)."""
    return sorted(
        f"{variant}.{tag}" if tag else variant
        for variant, default in default_cfgs.items()
        for tag, cfg in default.cfgs.items()
        if cfg.has_weights
    )


def _weights_source(variant: str, cfg: PretrainedCfg, overlay: dict[str, Any]) -> tuple[str, str]:
    """``(field, location)`` of the weights to load: an overlay's source wins, then timm's priority order."""
    chosen = overlay if any(overlay.get(key) for key in _SOURCE_KEYS) else dataclasses.asdict(cfg)
    if cfg.source == "hf-hub" and chosen.get("hf_hub_id"):
        return "hf_hub_id", chosen["hf_hub_id"]
    for key in _SOURCE_KEYS:
        if chosen.get(key) is None:
            continue
        if key not in _LOADABLE:
            raise InvalidInputError(
                f"pretrained_cfg {key}= is not supported for {variant}: spectral-prior checkpoints are directories "
                "or Hub repos, read by spectral_prior.load_model; give file='<directory or weights file>' or "
                "hf_hub_id='owner/name' (timm's checkpoint_path= loads a plain state dict after creation)"
            )
        if key == "hf_hub_id" and chosen.get("hf_hub_filename"):
            raise InvalidInputError(
                f"pretrained_cfg hf_hub_filename= is not supported for {variant}: a spectral-prior checkpoint is a "
                "whole repo (config.json, model.safetensors, backbone.safetensors); give hf_hub_id alone"
            )
        return key, str(chosen[key])
    raise RuntimeError(
        f"no pretrained weights for {variant}: the spectral-prior models with weights are "
        f"{', '.join(pretrained_names()) or 'none'}; for another checkpoint pass pretrained_cfg_overlay="
        "dict(file='<directory saved by save_pretrained(..., backbone=model)>') or dict(hf_hub_id='owner/name')"
    )


def _fresh(backbone: str, with_prior: bool, prior_config: PriorConfig | dict[str, Any] | None,
           **kwargs: Any) -> nn.Module:
    """A new backbone, with a new Spectral Diffusion Prior injected into its preset's blocks when asked."""
    model = create_backbone(backbone, **kwargs)
    if with_prior:
        preset = backbone_preset(backbone)
        config = prior_config if isinstance(prior_config, PriorConfig) else PriorConfig(**(prior_config or {}))
        inject_prior(model, preset.name, prior=SpectralDiffusionPrior(config), condition=preset.condition)
    return model


def _loaded(backbone: str, with_prior: bool, location: str, cache_dir: Any) -> nn.Module:
    """The checkpoint at ``location`` through :func:`load_model`, checked to be the asked-for variant."""
    hub_kwargs = {} if cache_dir is None else {"cache_dir": cache_dir}
    model = load_model(location, backbone=backbone, **hub_kwargs)
    injected = isinstance(getattr(model, INJECTOR_NAME, None), SpectralPriorInjector)
    if injected and not with_prior:
        raise InvalidInputError(f"{location} holds {backbone} with a prior injected: create {backbone + SDP_SUFFIX!r}")
    if with_prior and not injected:
        raise InvalidInputError(
            f"{location} holds a bare {backbone} without a prior: create {backbone!r} to load it, then inject a "
            "prior with spectral_prior.inject_prior"
        )
    return model.train()


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """The timm entrypoint of ``variant``: resolve its pretrained_cfg, then build fresh or load our checkpoint."""
    backbone, with_prior = _split(variant)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    cfg = resolve_pretrained_cfg(variant, kwargs.pop("pretrained_cfg", None), overlay)
    cache_dir = kwargs.pop("cache_dir", None)
    prior_config = kwargs.pop("prior_config", None)
    if prior_config is not None and not with_prior:
        raise TypeError(f"prior_config= sizes the prior of {backbone + SDP_SUFFIX!r}; {variant!r} has no prior")
    build: Callable[..., nn.Module]
    if pretrained:
        key, location = _weights_source(variant, cfg, overlay)
        given = sorted(kwargs) + (["prior_config"] if prior_config is not None else [])
        if given:
            raise InvalidInputError(f"{variant} with pretrained=True is built by its checkpoint; drop {', '.join(given)}")
        cfg = dataclasses.replace(cfg, **{name: None for name in _SOURCE_KEYS if name != key})
        build = partial(_loaded, backbone, with_prior, location, cache_dir)
    else:
        build = partial(_fresh, backbone, with_prior, prior_config)
    return build_model_with_cfg(
        build,
        variant,
        pretrained=False,  # our checkpoints are loaded by `build`, timm's state-dict loader cannot read them
        pretrained_cfg=cfg,
        kwargs_filter=tuple(name for name in _TIMM_DEFAULT_KWARGS if name not in kwargs),
        **kwargs,
    )


def _entrypoint(variant: str) -> Callable[..., nn.Module]:
    """A module-level function named ``variant``, as :func:`timm.models.register_model` expects."""

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return _create(variant, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = variant
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"timm entrypoint of spectral-prior's {variant} (see spectral_prior.integrations.timm)."
    return entrypoint


def register(backbone: str) -> list[str]:
    """Register ``backbone`` (a name of :func:`~spectral_prior.adapters.list_backbones`) and its SDP variant with
    timm; returns their timm names. Done at import for the built-in backbones; call it for one added later with
    :func:`~spectral_prior.adapters.register_backbone`."""
    backbone_preset(backbone)  # an unknown backbone fails here, naming the known ones
    embedded = _embedded_cfgs()
    names = [backbone, backbone + SDP_SUFFIX]
    for variant in names:
        cfgs = {key: cfg for key, cfg in embedded.items() if key.split(".")[0] == variant}
        default_cfgs.update(generate_default_cfgs(cfgs or {variant: _cfg(backbone, variant != backbone)}))
        globals()[variant] = register_model(_entrypoint(variant))
    return names


for _backbone in list_backbones():
    register(_backbone)
