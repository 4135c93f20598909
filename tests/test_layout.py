"""The package's shape: public names that stay what they are, and layers no import runs back up."""

import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import glassformer

ROOT = Path(__file__).resolve().parents[1]


def every_submodule() -> list[str]:
    """Every module of the package but __main__ (importing it runs the command)."""
    return [m.name for m in pkgutil.walk_packages(glassformer.__path__, "glassformer.")
            if not m.name.endswith("__main__")]


def test_public_names_are_the_same_objects_after_every_submodule_is_imported():
    # A fresh interpreter: in this one other tests have imported submodules already.
    code = (
        "import importlib, glassformer\n"
        "before = {n: getattr(glassformer, n) for n in glassformer.__all__}\n"
        f"for m in {every_submodule()!r}: importlib.import_module(m)\n"
        "changed = [n for n in glassformer.__all__ if getattr(glassformer, n) is not before[n]]\n"
        "print(','.join(changed) or 'none')\n"
        "assert callable(glassformer.generate) and callable(glassformer.load)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "none"


def test_generate_is_the_function_after_load_is_touched(tmp_path):
    # glassformer.load imports the checkpoint code, which once imported a submodule named `generate`.
    assert glassformer.load is not None
    for name in every_submodule():
        importlib.import_module(name)
    assert callable(glassformer.generate) and glassformer.generate.__module__.endswith("sampling")


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is not installed")
def test_import_layers_hold():
    # The contracts in pyproject.toml: no circle, no import (lazy ones included) running back up.
    # .ci/run also runs lint-imports itself, so the check never rests on this test not being skipped.
    result = subprocess.run(["lint-imports"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
