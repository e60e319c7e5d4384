"""Code fingerprints from the static import closure: a key changes with the code a computation can run, and
only with that (notebook skip keys, the evaluation's resume key)."""
import json
import logging
from pathlib import Path

import nbformat

from patchcore_lib.study.engine import keys as run_keys
from patchcore_lib.utils.source_fingerprint import code_fingerprint, import_closure, imported_names
from helpers import NOTEBOOKS


def _package(root: Path) -> None:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "data").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "a.py").write_text("import numpy\n\ndef f():\n    from .sub import b  # a lazy relative import\n")
    (root / "pkg" / "sub" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "b.py").write_text("from pkg import c\n")
    (root / "pkg" / "c.py").write_text("X = 1\n")
    (root / "pkg" / "d.py").write_text("import pkg.a\n")
    (root / "pkg" / "data" / "table.csv").write_text("x\n1\n")


def test_closure_follows_lazy_and_relative_imports_only_inside_the_package(tmp_path):
    _package(tmp_path)
    closure = import_closure(["pkg.a"], tmp_path)
    assert sorted(closure) == ["pkg", "pkg.a", "pkg.c", "pkg.sub", "pkg.sub.b"]  # not numpy, not pkg.d
    assert imported_names("from . import x\nfrom ..y import z", "p.q.r") == {"p.q", "p.q.x", "p.y", "p.y.z"}


def test_fingerprint_changes_with_the_code_it_can_run_and_nothing_else(tmp_path):
    _package(tmp_path)
    before = code_fingerprint(["pkg.a"], tmp_path)
    (tmp_path / "pkg" / "d.py").write_text("import pkg.a\nY = 2\n")  # imports a, not imported by it
    assert code_fingerprint(["pkg.a"], tmp_path) == before
    (tmp_path / "pkg" / "c.py").write_text("X = 2\n")  # two imports deep, behind a function-level import
    after = code_fingerprint(["pkg.a"], tmp_path)
    assert after != before
    (tmp_path / "pkg" / "data" / "table.csv").write_text("x\n2\n")  # a data file of an imported package
    assert code_fingerprint(["pkg.a"], tmp_path) != after


def test_each_notebook_key_covers_its_own_study_module(tmp_path):
    closures = {nb.stem[:2]: import_closure([*run_keys.notebook_modules(nb), *run_keys.TASK_MODULES])
                for nb in sorted(NOTEBOOKS.glob("*.ipynb"))}
    own = {"02": "coreset_ablation", "03": "knn_scoring", "06": "baselines", "07": "paper_experiments",
           "08": "ablations"}
    for number, module in own.items():
        holders = [n for n, closure in closures.items() if f"patchcore_lib.study.{module}" in closure]
        assert holders == [number], (module, holders)
    assert all("patchcore_lib.detectors.patchcore" in c for c in closures.values())
    runner = import_closure(["patchcore_lib.evaluation.runner"])
    assert "patchcore_lib.evaluation.runner" in runner and not any(m.startswith("patchcore_lib.study") for m in runner)
    # magics and shell lines do not break the parse; a cell that still cannot be parsed covers the whole library
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%matplotlib inline\n!ls\nimport patchcore_lib.cli")])
    nbformat.write(nb, tmp_path / "ok.ipynb")
    assert run_keys.notebook_modules(tmp_path / "ok.ipynb") == ["patchcore_lib.cli"]
    nb.cells.append(nbformat.v4.new_code_cell("def broken(:"))
    nbformat.write(nb, tmp_path / "bad.ipynb")
    assert "patchcore_lib.study.baselines" in run_keys.notebook_modules(tmp_path / "bad.ipynb")


def test_evaluation_result_of_other_code_is_computed_again(synthetic_root, tmp_path, caplog):
    from patchcore_lib.detectors import PatchCore
    from patchcore_lib.evaluation import evaluate

    caplog.set_level(logging.INFO, logger="patchcore_lib")  # "already done" is an INFO record of the package logger
    model = PatchCore(backbone="resnet18", weights="random", resize=64, imagesize=64, coreset_ratio=0.2)
    first = evaluate(model, synthetic_root, ["tiny"], tmp_path, show_progress=False)[0]
    caplog.clear()
    again = evaluate(model, synthetic_root, ["tiny"], tmp_path, show_progress=False)[0]
    assert again["run_id"] == first["run_id"] and "already done" in caplog.text
    caplog.clear()
    record_path = tmp_path / "tiny" / "metrics.json"
    record = json.loads(record_path.read_text())
    record["code_fingerprint"] = "0.1.0+written-by-other-code"  # same version number, other sources
    record_path.write_text(json.dumps(record))
    redone = evaluate(model, synthetic_root, ["tiny"], tmp_path, show_progress=False)[0]
    assert redone["run_id"] != first["run_id"] and "already done" not in caplog.text
    assert json.loads(record_path.read_text())["code_fingerprint"] != record["code_fingerprint"]
