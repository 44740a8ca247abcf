"""Backbone adapters: one module per network family (the network, toolbox-compatible, and its preset)."""
from .bisrnet import BiSRNet, bisrnet
from .checkpoint import load_toolbox_checkpoint
from .mst import MST, mst_l, mst_m, mst_s

__all__ = ["MST", "mst_s", "mst_m", "mst_l", "BiSRNet", "bisrnet", "load_toolbox_checkpoint"]
