"""Backbone adapters: one module per network family (the network, toolbox-compatible) and their presets."""
from .bisrnet import BiSRNet, bisrnet
from .checkpoint import load_toolbox_checkpoint
from .mst import MST, mst_l, mst_m, mst_s
from .mst_plus_plus import MSTPlusPlus, mst_plus_plus
from ..sdp.presets import PRESETS, Preset, get_preset
from .registry import (
    BACKBONES,
    backbone_preset,
    create_backbone,
    list_backbones,
    register_backbone,
)

__all__ = [
    "MST", "mst_s", "mst_m", "mst_l", "MSTPlusPlus", "mst_plus_plus", "BiSRNet", "bisrnet", "load_toolbox_checkpoint",
    "PRESETS", "Preset", "get_preset",
    "BACKBONES", "create_backbone", "backbone_preset", "list_backbones", "register_backbone",
]
