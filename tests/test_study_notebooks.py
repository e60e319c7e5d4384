"""The stored notebooks: thin (no functions or classes: narrative and calls into patchcore_lib.study), clean
(no outputs), one ``parameters`` cell followed by the parameter check."""
from __future__ import annotations

import ast

import pytest

import helpers

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = sorted(helpers.NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin_and_clean(path):
    nb = nbformat.read(str(path), as_version=4)
    # the kernelspec a JupyterLab save writes ("Python 3 (ipykernel)", "Python (patchcore)") is allowed: the study
    # runs every notebook in python3 whatever it names (test_study_check), and the run keys ignore metadata
    assert nb.metadata.get("kernelspec", {}).get("language", "python") == "python"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "notebook saved with outputs"
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for cell in code:
        for node in ast.walk(ast.parse(cell.source)):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), \
                f"{path.name} defines {type(node).__name__} in:\n{cell.source}"
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("patchcore_lib"):
                assert node.module.split(".")[1] in ("study", "data", "detectors", "evaluation", "paper"), node.module
    source = "\n".join(cell.source for cell in code)
    assert "validate_parameters(" in source
