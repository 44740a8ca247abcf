"""The layout's rules hold: moved modules keep working for one release, with a DeprecationWarning."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from spectral_prior._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_module_still_imports_as_its_new_home_with_a_deprecation_warning(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED[old]}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])


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
