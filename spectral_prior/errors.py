"""The errors spectral-prior raises for bad input, all under :class:`SpectralPriorError`.

Each is also the built-in exception it refines (``InvalidInputError`` is a ``ValueError``, ...), so code that catches
the built-in still works. The command line prints a ``SpectralPriorError`` as one line; any other exception is a bug
and keeps its traceback.
"""
from __future__ import annotations


class SpectralPriorError(Exception):
    """Base class: an input the library cannot use, with a message that says what is expected."""


class InvalidInputError(SpectralPriorError, ValueError):
    """A value, a tensor, a file's content or a configuration that cannot be used."""


class UnknownNameError(SpectralPriorError, KeyError):
    """A name (backbone, preset, scene, embedded model) that is not known; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0]) if self.args else ""


class MissingFileError(SpectralPriorError, FileNotFoundError):
    """A file or folder that is not where it was said to be."""


class MissingDependencyError(SpectralPriorError, ImportError):
    """An optional dependency (an extra) that is not installed; the message names the ``pip install``."""


class UntrainedPriorWarning(UserWarning):
    """A model whose measurement-only prior has not been trained yet (the end of training stage 1) was loaded."""
