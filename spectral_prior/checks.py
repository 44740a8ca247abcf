"""Value checks shared by the library: finiteness and the [0, 1] range that CASSI data and the metrics assume."""
from __future__ import annotations

import torch
from torch import Tensor

from .errors import InvalidInputError

__all__ = ["UNIT_RANGE_SLACK", "check_finite", "check_unit_range"]

UNIT_RANGE_SLACK = 0.5
"""How far outside [0, 1] a value may lie before data is taken to be in another scale (8-bit counts, percent):
noise and a network's overshoot stay well inside it, any other scale lies far beyond it."""


def check_finite(x: Tensor, *, name: str) -> None:
    """Refuse ``x`` if it holds NaN or Inf.

    Skipped while ``torch.compile`` or ``torch.export`` traces a model: the check is a data-dependent branch, which a
    traced graph cannot hold (an exported program is checked by its caller).
    """
    if not torch.compiler.is_compiling() and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise InvalidInputError(f"{name} holds {bad} NaN or infinite values")


def check_unit_range(x: Tensor, *, name: str, fix: str) -> None:
    """Refuse ``x`` (finite) if its values lie far outside [0, 1], by more than :data:`UNIT_RANGE_SLACK`.

    ``fix`` ends the message: how the caller brings such data into [0, 1].
    """
    low, high = (float(value) for value in torch.aminmax(x.detach()))
    if low < -UNIT_RANGE_SLACK or high > 1 + UNIT_RANGE_SLACK:
        scale = " (8-bit counts?)" if 1 + UNIT_RANGE_SLACK < high <= 255 and low >= 0 else ""
        raise InvalidInputError(
            f"{name} ranges over [{low:.4g}, {high:.4g}]{scale}, but values in [0, 1] are expected; {fix}"
        )
