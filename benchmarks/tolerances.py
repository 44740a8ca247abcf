"""Measure how much of its tolerance each numeric test uses, across thread counts and CPU kernels.

    python benchmarks/tolerances.py [--threads 1 2 4] [--capabilities default avx2 avx512] [--out FILE]

Runs the tests that compare through ``tests/tolerance.py``'s ``assert_close`` (frozen toolbox references, export,
onnxruntime, torchrun, compile, the binary estimators) once per thread count and ``ATEN_CPU_CAPABILITY``, each in a
fresh process, and prints per comparison the largest absolute deviation and the largest share of its tolerance used
(1 = the limit) over every setting. A tolerance is sound when the worst share stays well below 1 (docs/benchmarks.md
asks for a factor of 10). Writes the table and every record to JSON (default benchmarks/results/tolerances.json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from common import markdown_table, write_json

ROOT = Path(__file__).resolve().parents[1]
NUMERIC_TESTS = [
    "tests/test_backbones.py",
    "tests/test_mst_plus_plus.py",
    "tests/test_binary.py",
    "tests/test_export.py",
    "tests/test_train.py::test_torchrun_two_processes_match_one_process",
    "tests/test_train.py::test_compile_runs_the_training_network_through_torch_compile",
]
"""The tests that compare within a measured tolerance; tests/tolerance.py's ``assert_close`` records them."""


def run_setting(threads: int, capability: str) -> list[dict]:
    """One pytest process over :data:`NUMERIC_TESTS` at ``threads`` and ``capability``; its records."""
    with tempfile.TemporaryDirectory() as folder:
        records = Path(folder) / "deviations.jsonl"
        env = {**os.environ, "SPECTRAL_PRIOR_TEST_THREADS": str(threads), "ATEN_CPU_CAPABILITY": capability,
               "SPECTRAL_PRIOR_DEVIATIONS": str(records)}
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *NUMERIC_TESTS],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"the numeric tests fail at {threads} threads, ATEN_CPU_CAPABILITY={capability}:\n"
                     f"{done.stdout[-4000:]}")
        return [json.loads(line) for line in records.read_text().splitlines()]


def worst_cases(records: list[dict]) -> list[dict]:
    """Per comparison: its tolerance, the worst deviation and share of it used, and where that happened."""
    table: dict[str, dict] = {}
    for record in records:
        row = table.setdefault(record["name"], {"comparison": record["name"], "rtol": record["rtol"],
                                                 "atol": record["atol"], "max abs": 0.0, "worst share": 0.0,
                                                 "at": ""})
        row["max abs"] = max(row["max abs"], record["max_abs"])
        if record["used"] >= row["worst share"]:
            row["worst share"] = record["used"]
            row["at"] = f"{record['threads']} threads, {record['capability']}"
    return sorted(table.values(), key=lambda row: -row["worst share"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--capabilities", nargs="+", default=["default", "avx2", "avx512"])
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/tolerances.json)")
    args = parser.parse_args()
    settings = [(threads, capability) for threads in args.threads for capability in args.capabilities]
    records = []
    for threads, capability in tqdm(settings, desc="settings", unit="setting"):
        records += run_setting(threads, capability)
    rows = worst_cases(records)
    print(markdown_table([{**row, "rtol": f"{row['rtol']:.0e}", "atol": f"{row['atol']:.0e}",
                           "max abs": f"{row['max abs']:.2e}", "worst share": f"{row['worst share']:.3f}"}
                          for row in rows]))
    path = write_json("tolerances", {"settings": settings, "worst": rows, "records": records}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
