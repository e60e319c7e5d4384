"""Issue 32, 3: the package type-checks with mypy under the settings of ``[tool.mypy]`` in pyproject.toml (the
package ships ``py.typed``, so its annotations are what users' type checkers read)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.slow
@pytest.mark.subprocess
def test_mypy_passes_over_the_package():
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it comes with the [test] extra: pip install -e '.[test]')")
    result = subprocess.run([sys.executable, "-m", "mypy", "patchcore_lib"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"mypy found problems:\n{result.stdout}{result.stderr}"
    assert "Success: no issues found" in result.stdout
