"""The file tree is the architecture: layers import downwards only, no import cycles, small modules, and
imports at module top (except optional dependencies)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGE = ROOT / "patchcore_lib"

#: Layer rank of each top-level part: a module may import only parts of a lower rank or its own part.
LAYERS = {"version": -1, "errors": 0, "utils": 1, "components": 2, "data": 2, "detectors": 3, "evaluation": 4,
          "cli": 5, "__main__": 6, "paper": 7, "study": 8, "__init__": 9}
#: What ``paper`` (published numbers, data only) may import: it sits just below the study, which alone uses it.
PAPER_IMPORTS = {"version", "errors", "utils", "paper"}
#: Function-level imports allowed: optional or platform-specific dependencies only.
OPTIONAL = {"faiss", "fcntl", "papermill", "nbformat", "nbconvert", "onnxruntime", "onnx", "dask", "distributed",
            "dask_cuda", "IPython", "jupyter_client"}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _exports(module: str) -> dict[str, str]:
    """name -> defining module for the ``from patchcore_lib.x import name`` lines of a package __init__ (also those
    under ``if TYPE_CHECKING:``, the names a package loads on first use: patchcore_lib/utils/lazy.py)."""
    path = MODULES[module]
    names = {}
    body = ast.parse(path.read_text()).body
    for node in body + [line for top in body if isinstance(top, ast.If) for line in top.body]:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("patchcore_lib"):
            for alias in node.names:
                names[alias.asname or alias.name] = node.module
    return names


def _resolve(module: str, name: str | None) -> str | None:
    """The module an import really reaches: through package __init__ re-exports; None for the root's own names."""
    if name is not None and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    if MODULES.get(module, Path()).name == "__init__.py" and name is not None:
        target = _exports(module).get(name)
        if target is None:
            return None if module == "patchcore_lib" else module  # a name the root defines itself
        return _resolve(target, name)
    return module


def imports_of(module: str) -> set[str]:
    """Modules of patchcore_lib imported (anywhere in the file) by ``module``."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("patchcore_lib"):
            for alias in node.names:
                target = _resolve(node.module, alias.name)
                if target and target != module:
                    found.add(target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("patchcore_lib.")}
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycles():
    graph = {m: imports_of(m) for m in MODULES if MODULES[m].name != "__init__.py"}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt in graph and not state.get(nxt):
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in graph:
        if not state.get(module):
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "patchcore_lib"))
def test_layers_import_downwards_only(module):
    own = _part(module)
    for target in imports_of(module):
        other = _part(target)
        assert other == own or LAYERS[other] < LAYERS[own], f"{module} (layer {own}) imports {target} (layer {other})"
        if own != "study":
            assert other != "study", f"{module} imports the study layer ({target})"


def test_paper_is_data_for_the_study_only():
    """``paper`` holds the paper's and the official runs' numbers: it needs nothing but errors/utils, and only the
    study (ranked above it) compares results with them."""
    for module in (m for m in MODULES if _part(m) == "paper"):
        assert {_part(t) for t in imports_of(module)} <= PAPER_IMPORTS, f"{module} imports {imports_of(module)}"
    users = {_part(m) for m in MODULES for t in imports_of(m) if _part(t) == "paper"} - {"paper"}
    assert users <= {"study"}, f"paper is imported from {sorted(users)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_small_and_import_at_the_top(module):
    path = MODULES[module]
    lines = path.read_text().count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {lines} lines (> {MAX_LINES})"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom):
                    top = (sub.module or "").split(".")[0]
                elif isinstance(sub, ast.Import):
                    top = sub.names[0].name.split(".")[0]
                else:
                    continue
                assert top in OPTIONAL, f"{path.name}:{sub.lineno} imports {top} inside {node.name}()"


def test_the_checks_catch_a_violation(tmp_path):
    """The cycle finder and the layer rule are not vacuous: a fake upward import is reported."""
    assert "patchcore_lib.components.backbones" in imports_of("patchcore_lib.detectors.patchcore")
    assert LAYERS[_part("patchcore_lib.study.engine.runner")] > LAYERS[_part("patchcore_lib.detectors.base")]
    assert _resolve("patchcore_lib.data", "open_split") == "patchcore_lib.data.layouts"


def test_version_has_one_home_below_every_layer():
    """``__version__`` is defined in patchcore_lib/version.py only (the root re-exports it), no module imports it
    from the root, and pyproject.toml states the same version."""
    import patchcore_lib
    from patchcore_lib import version

    assert patchcore_lib.__version__ == version.__version__
    assert imports_of("patchcore_lib.version") == set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "patchcore_lib":
                assert "__version__" not in {a.name for a in node.names}, f"{module} imports __version__ from the root"
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == version.__version__


#: what the study engine may use of the study: itself and where outputs go, never a notebook back-end
ENGINE_MAY_IMPORT = ("patchcore_lib.study.engine", "patchcore_lib.study.outputs")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("patchcore_lib.study.engine")))
def test_study_engine_does_not_import_notebook_back_ends(module):
    study = {m for m in imports_of(module) if m.startswith("patchcore_lib.study")}
    wrong = sorted(m for m in study if not m.startswith(ENGINE_MAY_IMPORT))
    assert not wrong, f"{module} imports notebook back-ends {wrong}"
