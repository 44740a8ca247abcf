"""``assert_close`` that can record how much of its tolerance each comparison uses.

Comparisons against frozen references, or between two code paths whose float reductions run in another order (export,
torchrun, compile), hold only within a tolerance. These tolerances are measured, not guessed:
``benchmarks/tolerances.py`` runs the tests that use this helper at 1, 2 and 4 threads and under each
``ATEN_CPU_CAPABILITY``, with ``SPECTRAL_PRIOR_DEVIATIONS`` naming a JSON-lines file, and reports the worst use of
each tolerance (docs/benchmarks.md, "Test tolerances").
"""
import json
import os

import torch

DEVIATIONS_ENV = "SPECTRAL_PRIOR_DEVIATIONS"


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, name: str, rtol: float, atol: float) -> None:
    """``torch.testing.assert_close`` at ``rtol`` / ``atol``; with ``$SPECTRAL_PRIOR_DEVIATIONS`` set, first record
    the largest absolute deviation and the largest share of the tolerance used (1 is the limit)."""
    record_to = os.environ.get(DEVIATIONS_ENV)
    if record_to:
        difference = (actual.detach().double() - expected.detach().double()).abs()
        allowed = atol + rtol * expected.detach().double().abs()
        entry = {
            "name": name,
            "threads": torch.get_num_threads(),
            "capability": os.environ.get("ATEN_CPU_CAPABILITY", "native"),
            "max_abs": float(difference.max()),
            "used": float((difference / allowed).max()),
            "rtol": rtol,
            "atol": atol,
        }
        with open(record_to, "a") as file:
            file.write(json.dumps(entry) + "\n")
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda default: f"{name}: {default}")
