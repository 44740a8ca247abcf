"""The layout's rules hold: moved modules keep working for one release, with a DeprecationWarning."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import spectral_prior
from spectral_prior._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_module_still_imports_from_its_new_home_with_a_deprecation_warning(old):
    sys.modules.pop(old, None)
    homes = MOVED[old]
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {homes[0]}"):
        module = importlib.import_module(old)
    if len(homes) == 1:
        assert module is importlib.import_module(homes[0])
    home = importlib.import_module(homes[0])
    public = [name for name in getattr(home, "__all__", dir(home)) if not name.startswith("_")]
    assert all(getattr(module, name) is getattr(home, name) for name in public)


@pytest.mark.parametrize("old, name, home", [
    ("spectral_prior.saved", "load_saved_mask", "spectral_prior.saving.load"),
    ("spectral_prior.saved", "backbone_card", "spectral_prior.saving.cards"),
    ("spectral_prior.inject", "infer_channel_axis", "spectral_prior.sdp.targets"),
    ("spectral_prior.inject", "TargetSpec", "spectral_prior.sdp.injector"),
    ("spectral_prior.train", "EMA", "spectral_prior.training.stages"),
    ("spectral_prior.train", "VALIDATION_SEED_OFFSET", "spectral_prior.training.config"),
    ("spectral_prior.train", "config_from_arguments", "spectral_prior.cli.train"),
    ("spectral_prior.evaluate", "load_model_and_backbone", "spectral_prior.models"),
    ("spectral_prior.evaluate", "resolve_device", "spectral_prior.devices"),
    ("spectral_prior.evaluate", "evaluate_command", "spectral_prior.cli.eval"),
    ("spectral_prior.reconstruct", "reconstruct_command", "spectral_prior.cli.reconstruct"),
    ("spectral_prior.commands", "resolve_device", "spectral_prior.devices"),
])
def test_the_names_of_a_split_module_are_found_in_each_of_its_homes(old, name, home):
    with pytest.warns(DeprecationWarning):
        sys.modules.pop(old, None)
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(home), name)


def test_a_removed_name_says_what_to_do_instead():
    with pytest.warns(DeprecationWarning):
        sys.modules.pop("spectral_prior.saved", None)
        saved = importlib.import_module("spectral_prior.saved")
    with pytest.raises(AttributeError, match="save_mask was removed: pass mask= to save_pretrained"):
        saved.save_mask


def test_the_public_api_imports_without_deprecation_warnings():
    code = (
        "import spectral_prior as sp\n"
        "from spectral_prior import adapters\n"
        "for name in ('inject_prior', 'load_injection', 'remove_prior', 'load_model', 'SpectralDiffusionPrior',"
        " 'PriorConfig'):\n"
        "    assert callable(getattr(sp, name))\n"
        "assert callable(adapters.mst_s) and 'mst' in adapters.PRESETS\n"
    )
    subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], check=True)


# -- the rules of the house ------------------------------------------------------------------------------------------

PACKAGE = Path(spectral_prior.__file__).parent

LAYERS = {  # lowest first; a module may import its own layer and the ones below, never one above
    "spectral_prior._version": 0, "spectral_prior.errors": 0, "spectral_prior.checks": 0, "spectral_prior.io": 0,
    "spectral_prior.matfile": 0, "spectral_prior.devices": 0,
    "spectral_prior.saving": 1, "spectral_prior.cassi": 1,
    "spectral_prior.sdp": 2, "spectral_prior.data": 2,
    "spectral_prior.adapters": 3, "spectral_prior.viz": 3, "spectral_prior.export": 3,
    "spectral_prior.models": 4, "spectral_prior.evaluation": 4, "spectral_prior.inference": 4,
    "spectral_prior.training": 5, "spectral_prior.integrations": 5,
    "spectral_prior.cli": 6,
    "spectral_prior": 7,  # the package's __init__: the public API, above everything
}
"""The layers of docs/architecture.md."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer of LAYERS: add it (and to docs/architecture.md)")


def _imports(path: Path) -> list[str]:
    """The spectral_prior modules ``path`` imports, at module level or inside functions."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found += [f"{base}.{alias.name}" if importlib.util.find_spec(base) and _is_module(f"{base}.{alias.name}")
                      else base for alias in node.names]
    return [name for name in found if name == "spectral_prior" or name.startswith("spectral_prior.")]


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _sources() -> list[Path]:
    moved = {old.removeprefix("spectral_prior.").replace(".", "/") + ".py" for old in MOVED}
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).as_posix() not in moved]


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{_module_name(path)} (layer {_layer(_module_name(path))}) imports {name} (layer {_layer(name)})"
        for path in _sources() for name in _imports(path)
        if _layer(name) > _layer(_module_name(path)) and not name.startswith("spectral_prior._moved")
    ]
    assert not upward, "\n".join(upward)


def test_the_library_never_imports_the_command_line():
    offenders = [_module_name(p) for p in _sources() if not _module_name(p).startswith("spectral_prior.cli")
                 and _module_name(p) != "spectral_prior" and any(n.startswith("spectral_prior.cli") for n in _imports(p))]
    assert not offenders


def test_no_module_over_400_lines_and_no_function_over_80():
    too_long = []
    for path in _sources():
        source = path.read_text()
        if source.count("\n") > 400:
            too_long.append(f"{path.relative_to(PACKAGE)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: "
                                f"{node.end_lineno - node.lineno + 1} lines")
    assert not too_long, "\n".join(too_long)
