"""Reports of scores: means, a markdown table, the per-scene CSV."""
from __future__ import annotations

import csv
import io
import os
from typing import Any, Dict, Sequence

from ..io import atomic_path
from .protocol import METRICS

def mean_metrics(results: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """The mean of each metric over the scenes."""
    return {name: sum(r[name] for r in results) / len(results) for name in METRICS}


def format_table(results: Sequence[Dict[str, Any]]) -> str:
    """A markdown table: one row per scene (PSNR in dB, SSIM, SAM in degrees) and a mean row."""
    lines = ["| scene | PSNR (dB) | SSIM | SAM (deg) |", "|---|---:|---:|---:|"]
    rows = [(r["name"], r) for r in results] + [("**mean**", mean_metrics(results))]
    for name, values in rows:
        lines.append(f"| {name} | {values['psnr']:.2f} | {values['ssim']:.4f} | {values['sam']:.2f} |")
    return "\n".join(lines)


def write_csv(path: str | os.PathLike, rows: Sequence[Dict[str, Any]]) -> None:
    """Per-scene rows (``model``, ``scene``, size and metrics), atomically."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["model", "scene", "height", "width", *METRICS])
    for row in rows:
        writer.writerow([row["model"], row["name"], row["height"], row["width"], *(repr(row[m]) for m in METRICS)])
    with atomic_path(path) as temporary:
        temporary.write_text(text.getvalue())
