"""``--check`` and regeneration from a clone: run keys and completeness hold content, never machine paths or
git-ignored files; a stale run names the input that changed."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("papermill")

from patchcore_lib.study.engine import check_study, run_study  # noqa: E402
from patchcore_lib.study.engine.cli import main as study_main  # noqa: E402


def _notebook(path: Path, parameters: str, body: str) -> Path:
    from nbformat.v4 import new_code_cell, new_notebook

    cell = new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    # saved in JupyterLab with a kernel this machine does not have: the study still runs it (in python3)
    saved = {"kernelspec": {"name": "patchcore-elsewhere", "display_name": "Python (elsewhere)", "language": "python"}}
    nbformat.write(new_notebook(cells=[cell, new_code_cell(body)], metadata=saved), str(path))
    return path


def _study(root: Path) -> tuple[Path, Path, Path]:
    """A checkout-like folder: notebooks/ (one per category, one report), data/ (categories a, b), reports/."""
    notebooks = root / "notebooks"
    notebooks.mkdir(parents=True)
    _notebook(notebooks / "01_one.ipynb", 'data_root = ""\ncategory = ""\nreports_dir = None\nfactor = 1',
              "from pathlib import Path\nPath(reports_dir, category + '.txt').write_text(str(factor))")
    _notebook(notebooks / "05_report.ipynb", "reports_dir = None\ncategories = []", "print(categories)")
    for category in ("a", "b"):
        folder = root / "data" / category / "train" / "good"
        folder.mkdir(parents=True)
        (folder / "0.png").write_bytes(category.encode())
    return notebooks, root / "data", root / "reports"


PRESET = {"name": "t", "parameters": {"factor": 2}, "notebook_parameters": {}}


def _states(checks) -> dict[str, bool]:
    return {c.name: c.current for c in checks}


@pytest.mark.notebook
def test_a_copy_in_another_folder_is_current_and_skipped(tmp_path):
    notebooks, data, reports = _study(tmp_path / "here")
    where = dict(categories=["a", "b"], data_root=str(data), reports_dir=reports, notebooks_dir=notebooks)
    runs = run_study(dict(PRESET), **where, log=lambda s: None)
    assert [r.status for r in runs] == ["done"] * 3
    assert all(_states(check_study(dict(PRESET), **where)).values())
    # the report alone (--only 05): its key still covers every run of the preset
    assert _states(check_study(dict(PRESET), **where, only=["05"])) == {"05_report": True}

    # another folder (data, notebooks and reports copied; the git-ignored executed .ipynb files not)
    shutil.copytree(tmp_path / "here", tmp_path / "there", ignore=shutil.ignore_patterns("*.ipynb", ".lock"))
    shutil.copytree(notebooks, tmp_path / "there" / "notebooks", dirs_exist_ok=True)
    there = dict(categories=["a", "b"], data_root=str(tmp_path / "there" / "data"),
                 reports_dir=tmp_path / "there" / "reports", notebooks_dir=tmp_path / "there" / "notebooks")
    checks = check_study(dict(PRESET), **there)
    assert _states(checks) == {"01_one-a": True, "01_one-b": True, "05_report": True}
    assert [r.status for r in run_study(dict(PRESET), **there, log=lambda s: None)] == ["skipped"] * 3
    # without reading the data: the records' fingerprints, code and parameters still checked
    assert all(_states(check_study(dict(PRESET), recorded_data=True, categories=["a", "b"],
                                   reports_dir=there["reports_dir"], notebooks_dir=there["notebooks_dir"])).values())


@pytest.mark.notebook
def test_a_stale_run_names_what_changed(tmp_path, capsys):
    notebooks, data, reports = _study(tmp_path)
    where = dict(categories=["a", "b"], data_root=str(data), reports_dir=reports, notebooks_dir=notebooks)
    run_study(dict(PRESET), **where, log=lambda s: None)
    (reports / "executed" / "05_report.html").write_text("emptied")
    emptied = {c.name: c for c in check_study(dict(PRESET), **where)}
    assert emptied["05_report"].reasons == ["outputs missing or modified: executed/05_report.html"]
    assert emptied["01_one-a"].current and emptied["01_one-b"].current

    (data / "b" / "train" / "good" / "0.png").write_bytes(b"changed")
    (data / "b" / "train" / "good" / "1.png").write_bytes(b"new")
    changed = {c.name: c for c in check_study({**PRESET, "parameters": {"factor": 3}}, **where)}
    assert changed["01_one-a"].reasons == ["parameter factor: 2 -> 3"]
    assert changed["01_one-b"].reasons == ["parameter factor: 2 -> 3",
                                           "data files changed b/train/good/0.png; new b/train/good/1.png"]
    assert "the runs it summarises changed" in changed["05_report"].reasons

    source = nbformat.read(str(notebooks / "01_one.ipynb"), as_version=4)
    source.cells[1].source += "\nprint('edited')"
    nbformat.write(source, str(notebooks / "01_one.ipynb"))
    status = study_main(["-f", str(_preset_file(tmp_path)), "--check", "--data-root", str(data),
                         "--reports-dir", str(reports), "--notebooks-dir", str(notebooks), "--categories", "a", "b"])
    out = capsys.readouterr().out
    assert status == 1
    assert "STALE    01_one-a: notebook 01_one.ipynb changed\n" in out
    assert "3 runs: 0 current, 3 stale" in out


def _preset_file(folder: Path) -> Path:
    path = folder / "preset.yaml"
    path.write_text("name: t\nparameters:\n  factor: 2\n")
    return path


def test_model_settings_of_a_category_feed_patchcore_fit(tmp_path, capsys):
    from helpers import ROOT
    from patchcore_lib.cli import parse

    assert study_main(["model-settings", "-f", str(ROOT / "params" / "real_reports.yaml"), "magnetic_tile"]) == 0
    settings = tmp_path / "settings.yaml"
    settings.write_text(capsys.readouterr().out)
    args = parse(["fit", "--train", str(tmp_path), "--out", str(tmp_path / "m.pt"), "--config", str(settings)])
    # the preset's values, the category's own applied last; notebook-only parameters (seeds) left out
    assert (args.crop, args.resize, args.coreset_ratio, args.target_embed_dimension) == ("none", 224, 0.01, 1024)
    assert "seeds" not in settings.read_text()


def test_a_run_key_covers_the_module_that_executes_it_not_the_planner():
    from patchcore_lib.study.engine.keys import TASK_MODULES
    from patchcore_lib.utils.source_fingerprint import import_closure

    closure = import_closure(TASK_MODULES)
    assert "patchcore_lib.study.engine.tasks" in closure
    planner = {f"patchcore_lib.study.engine.{m}" for m in ("runner", "check", "cli", "plan", "presets", "cluster")}
    assert not planner & set(closure)  # an edit to them leaves every committed report current
