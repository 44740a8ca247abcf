"""Saving and loading: the saved format (:mod:`.format`), its one writer (:mod:`.write`) and one reader
(:mod:`.load`), model cards (:mod:`.cards`) and the Hugging Face Hub (:mod:`.hub`).

This layer knows files, not networks: it imports nothing of the method, the backbones or the workflows above it.
"""
from .format import FORMAT_VERSION, read_config, saved_files
from .hub import EMBEDDED_MODELS, PUBLISHED_PRIORS, PriorDownloadError, download_prior, push_to_hub
from .load import Saved, load_saved_mask, open_saved
from .write import write_saved

__all__ = [
    "FORMAT_VERSION",
    "EMBEDDED_MODELS",
    "PUBLISHED_PRIORS",
    "PriorDownloadError",
    "Saved",
    "download_prior",
    "load_saved_mask",
    "open_saved",
    "push_to_hub",
    "read_config",
    "saved_files",
    "write_saved",
]
