"""Export a bare or injected backbone: a ``torch.export`` program, or an ONNX file (the ``export`` extra).

    program = export_program(model, (x, mask))
    export_onnx(model, (x, mask), "mst_s_sdp.onnx")   # pip install "spectral-prior[export]"

Both trace the model in eval mode without gradients, for the input shapes given (a model exported at 256x256 runs
at 256x256). The injected prior is part of the graph, eval noise included, so the exported program gives what the
eager model gives. The backbones' input checks are not: they are data-dependent, so an exported program trusts its
inputs (shapes are still checked by torch.export).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from .errors import InvalidInputError, MissingDependencyError, MissingFileError

ONNX_PACKAGES = ("onnx", "onnxscript")


def export_program(model: nn.Module, example_inputs: Sequence[Tensor]) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` in eval mode at the shapes of ``example_inputs``; the model's own mode is
    restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.export.export(model, tuple(example_inputs))
    finally:
        model.train(was_training)


def export_onnx(model: nn.Module, example_inputs: Sequence[Tensor], path: str | Path) -> Path:
    """Write ``model`` as an ONNX file at ``path`` (through torch.onnx's exporter, from ``export_program``)."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"ONNX export needs {', '.join(missing)}: pip install 'spectral-prior[export]'"
        )
    path = Path(path)
    if path.suffix != ".onnx":
        raise InvalidInputError(f"the ONNX file must end in .onnx, got {str(path)!r}")
    if not path.parent.is_dir():
        raise MissingFileError(f"no folder {str(path.parent)!r} to write {path.name} into")
    program = export_program(model, example_inputs)
    onnx_program = torch.onnx.export(program, tuple(example_inputs), dynamo=True, verbose=False)
    onnx_program.save(str(path))
    return path
