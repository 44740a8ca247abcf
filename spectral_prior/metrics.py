"""Moved to :mod:`spectral_prior.evaluation.metrics` (this alias goes away in 0.3)."""
from ._moved import alias_module

alias_module(__name__)
