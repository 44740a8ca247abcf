"""Scoring: the metrics (:mod:`.metrics`: PSNR, SSIM, SAM as the MST toolbox computes them), the simulation protocol
(:mod:`.protocol`) and the reports (:mod:`.report`)."""
from .metrics import psnr, sam, ssim
from .protocol import METRICS, center_crop, evaluate, iter_evaluate, size_multiple
from .report import format_table, mean_metrics, write_csv

__all__ = [
    "METRICS",
    "center_crop",
    "evaluate",
    "format_table",
    "iter_evaluate",
    "mean_metrics",
    "psnr",
    "sam",
    "size_multiple",
    "ssim",
    "write_csv",
]
