"""Model cards: the ``README.md`` of a saved folder, with the Hub's YAML front matter."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._version import __version__

FRONT_MATTER = (
    "---\n"
    "library_name: spectral-prior\n"
    "license: mit\n"
    "tags: [hyperspectral, cassi, spectral-compressive-imaging, diffusion-prior]\n"
    "---\n"
)


def _entries(card: Mapping[str, Any]) -> list[str]:
    return [f"- {key}: {value}" for key, value in card.items()]


def injection_card(config: Mapping[str, Any], card: Mapping[str, Any]) -> str:
    """The card of a saved injection: its backbone, blocks and prior, then ``card``'s entries (data, scores)."""
    backbone = (config.get("backbone") or {}).get("class", "not included (prior and SPIM weights only)")
    lines = [
        FRONT_MATTER,
        "# Spectral Diffusion Prior injection",
        "",
        "Load with `spectral_prior.load_injection(model, <this repo or directory>)`; method from",
        "[arXiv 2507.13769](https://arxiv.org/abs/2507.13769).",
        "",
        f"- backbone: {backbone}",
        f"- preset / layers: {config['preset']} / `{config['layers']}`",
        f"- modulated blocks: {', '.join(config['targets'])}",
        f"- prior: {config['prior']['class']} {config['prior']['config']}",
        f"- spectral-prior version: {__version__}",
    ]
    return "\n".join(lines + _entries(card)) + "\n"


def prior_card(config: Mapping[str, Any], card: Mapping[str, Any]) -> str:
    """The card of a bare prior: its class and sizes, then ``card``'s entries."""
    lines = [
        FRONT_MATTER,
        f"# {config['class']} (a Spectral Diffusion Prior without SPIMs)",
        "",
        "Inject with `spectral_prior.load_injection(model, <this repo or directory>, layers=...)`; method from",
        "[arXiv 2507.13769](https://arxiv.org/abs/2507.13769).",
        "",
        f"- sizes: {config['config']}",
        f"- spectral-prior version: {__version__}",
    ]
    return "\n".join(lines + _entries(card)) + "\n"


def backbone_card(name: str, card: Mapping[str, Any]) -> str:
    """The model card of a bare backbone: its name and ``card``'s entries."""
    return "\n".join([f"# {name} (bare backbone, no prior)", ""] + _entries(card)) + "\n"
