"""torch.export and ONNX: bare and injected backbones export, and the exported programs give the eager outputs."""
import importlib.util
import os

import pytest
import torch

from tolerance import assert_close
import spectral_prior as sp
from spectral_prior.adapters import bisrnet, mst_l, mst_plus_plus, mst_s
from spectral_prior.export import export_onnx, export_program

SIZE = 32
BACKBONES = {  # constructor, preset, mask width
    "mst_s": (mst_s, "mst", SIZE + 54),
    "mst_l": (mst_l, "mst", SIZE + 54),
    "mst_plus_plus": (mst_plus_plus, "mst_plus_plus", SIZE),
    "bisrnet": (bisrnet, "bisrnet", SIZE),
}


def example(name: str, injected: bool) -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    constructor, preset, mask_width = BACKBONES[name]
    torch.manual_seed(0)
    model = constructor().eval()
    inputs = (torch.rand(1, 28, SIZE, SIZE), torch.rand(1, 28, SIZE, mask_width))
    if injected:
        sp.inject_prior(model, preset, prior_dim=16, example_inputs=inputs)
        with torch.no_grad():  # SPIMs away from their zero start, so that the prior changes the output
            for spim in model.spectral_prior.spims.values():
                spim.proj.weight.normal_(0, 0.1)
    return model, inputs


@pytest.mark.slow
@pytest.mark.parametrize("injected", [False, True], ids=["bare", "injected"])
@pytest.mark.parametrize("name", list(BACKBONES))
def test_exported_program_equals_eager(name, injected):
    model, inputs = example(name, injected)
    program = export_program(model, inputs)
    with torch.no_grad():
        expected = model(*inputs)
        if injected:
            assert not torch.allclose(expected, sp.remove_prior(example(name, True)[0])(*inputs))
        assert_close(program.module()(*inputs), expected, name=f"torch.export vs eager, {name}{' + SDP' if injected else ''}",
                     rtol=1e-4, atol=1e-5)


def test_the_checks_still_guard_eager_calls_after_an_export():
    model, inputs = example("mst_s", injected=False)
    export_program(model, inputs)
    with pytest.raises(ValueError, match="NaN or infinite"):
        model(torch.full_like(inputs[0], float("nan")), inputs[1])


def _onnx_ready() -> bool:
    if all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime")):
        return True
    message = "onnx, onnxscript or onnxruntime missing (pip install -e '.[export]')"
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}: CI must run the ONNX tests", pytrace=False)
    pytest.skip(message)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mst_s", "bisrnet"])
def test_onnx_file_runs_in_onnxruntime_as_eager(name, tmp_path):
    _onnx_ready()
    import onnxruntime

    model, inputs = example(name, injected=True)
    path = export_onnx(model, inputs, tmp_path / f"{name}.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {arg.name: tensor.numpy() for arg, tensor in zip(session.get_inputs(), inputs)}
    (out,) = session.run(None, feed)
    with torch.no_grad():
        assert_close(torch.from_numpy(out), model(*inputs), name=f"onnxruntime vs eager, {name}", rtol=1e-4, atol=1e-4)


def test_onnx_export_names_a_bad_path(tmp_path):
    _onnx_ready()
    model, inputs = example("mst_s", injected=False)
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(model, inputs, tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="no folder"):
        export_onnx(model, inputs, tmp_path / "missing" / "model.onnx")
