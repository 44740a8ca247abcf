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


class MaskTooSmallError(InvalidInputError):
    """A scene larger than the coded aperture it is to be measured through."""

    def __init__(self, scene: str, scene_shape: tuple[int, int], mask_shape: tuple[int, int]) -> None:
        self.scene, self.scene_shape, self.mask_shape = scene, scene_shape, mask_shape
        super().__init__(
            f"{self.what}: score the scene in tiles no larger than the mask (data.SceneTiles), or crop it; a CASSI "
            "network is specific to its mask, so a larger mask of another pattern is no substitute"
        )

    @property
    def what(self) -> str:
        """What is wrong, without the fix."""
        (mask_h, mask_w), (height, width) = self.mask_shape, self.scene_shape
        return f"the mask ({mask_h}x{mask_w}) is smaller than scene {self.scene!r} ({height}x{width})"


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
