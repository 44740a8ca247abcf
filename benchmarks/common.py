"""Timing, table and JSON helpers shared by the benchmarks."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from spectral_prior.io import save_json
from spectral_prior.training import LOG_FILE

RESULTS = Path(__file__).parent / "results"


def interleaved_medians(candidates: Mapping[str, Callable[[], object]], *, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each candidate, calls interleaved round-robin so that they share machine noise."""
    for _ in range(warmup):
        for run in candidates.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Rows of equal keys as a markdown table; floats with 3 significant decimals."""
    columns = list(rows[0])
    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def train_seconds(run: Path) -> float:
    """Seconds spent in optimisation steps, summed over every training log below ``run`` (resumed runs included)."""
    return sum(json.loads(line)["seconds"] for log in run.rglob(LOG_FILE) for line in log.read_text().splitlines())


def cached_json(path: Path, compute: Callable[[], dict]) -> dict:
    """What ``compute()`` returns, kept at ``path`` as JSON (written atomically) and read back on later calls: the
    unit by which a study resumes."""
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_json(result, path)
    return result


def write_json(name: str, payload: Mapping[str, object], out: Path | None = None) -> Path:
    """Write ``payload`` plus the machine description to ``out`` (default benchmarks/results/NAME.json)."""
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2))
    return path
