"""The study runner (skip-if-complete, HTML rendering, presets, the entry point), on tiny notebooks."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("papermill")

from patchcore_lib.detectors import EnsembleConfig, PatchCoreConfig  # noqa: E402
from patchcore_lib.study import engine as runner
from patchcore_lib.study.engine import keys as run_keys  # noqa: E402
from patchcore_lib.study.params import check_parameters, config_from_params  # noqa: E402
from patchcore_lib.errors import ConfigError, DatasetError  # noqa: E402
from helpers import ROOT  # noqa: E402


def _write_notebook(path: Path, parameters: str, body: str) -> Path:
    from nbformat.v4 import new_code_cell, new_notebook

    params = new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(body)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, str(path))
    return path


COUNTER = """from pathlib import Path
log = Path(reports_dir) / "calls.txt"
log.write_text(log.read_text() + f"{NAME}:{category}\\n" if log.exists() else f"{NAME}:{category}\\n")
print("hello from", NAME, category)
"""


@pytest.fixture
def tiny_study(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    _write_notebook(notebooks / "01_first.ipynb", 'data_root = ""\ncategory = ""   # a = b in a comment\n'
                    'reports_dir = None\nfactor = 1', "NAME = 'first'\n" + COUNTER)
    _write_notebook(notebooks / "05_report.ipynb", "reports_dir = None\ncategories = []",
                    "NAME = 'report'\ncategory = ','.join(categories)\n" + COUNTER)
    _write_notebook(notebooks / "06_more.ipynb", 'category = ""\nreports_dir = None', "NAME = 'more'\n" + COUNTER)
    return notebooks, tmp_path / "reports"


def _calls(reports: Path) -> list[str]:
    path = reports / "calls.txt"
    return path.read_text().split() if path.exists() else []


def test_discover_orders_report_notebooks_last(tiny_study):
    notebooks, _ = tiny_study
    assert [p.stem for p in runner.discover_notebooks(notebooks)] == ["01_first", "06_more", "05_report"]
    assert [p.stem for p in runner.discover_notebooks(notebooks, only=["05"])] == ["05_report"]


def test_notebook_parameters_survive_comments_with_equals(tiny_study):
    notebooks, _ = tiny_study
    assert list(runner.notebook_parameters(notebooks / "01_first.ipynb")) == ["data_root", "category",
                                                                              "reports_dir", "factor"]


def _fake_data(tmp_path: Path) -> str:
    """A data root with categories a and b (one training file each; the tiny notebooks read no data)."""
    for category in ("a", "b"):
        (tmp_path / "data" / category / "train" / "good").mkdir(parents=True)
        (tmp_path / "data" / category / "train" / "good" / "0.png").write_bytes(b"x")
    return str(tmp_path / "data")


@pytest.mark.slow
@pytest.mark.notebook
def test_runner_skips_complete_runs_and_renders_html(tiny_study, tmp_path):
    notebooks, reports = tiny_study
    data = _fake_data(tmp_path)
    preset = {"name": "t", "parameters": {"factor": 2, "unknown_to_all": 1}, "notebook_parameters": {}}
    runs = runner.run_study(preset, categories=["a", "b"], data_root=data, reports_dir=reports, notebooks_dir=notebooks,
                           log=lambda s: None)
    assert [r.status for r in runs] == ["done"] * 5
    assert _calls(reports) == ["first:a", "first:b", "more:a", "more:b", "report:a,b"]
    executed = reports / "executed"
    for stem in ("01_first-a", "01_first-b", "06_more-a", "06_more-b", "05_report"):
        assert (executed / f"{stem}.ipynb").is_file()
        html = (executed / f"{stem}.html").read_text()
        assert "<html" in html.lower() and "hello from" in html
        assert data not in html  # the injected data_root is shown as $DATA_ROOT, not as this machine's folder
        done = runner.run_record(reports, stem)
        assert "unknown_to_all" not in done["parameters"]
    assert runner.run_record(reports, "01_first-a")["parameters"]["factor"] == 2
    assert "$DATA_ROOT" in (executed / "01_first-a.html").read_text()

    # same parameters: nothing runs
    runs = runner.run_study(preset, categories=["a", "b"], data_root=data, reports_dir=reports,
                           notebooks_dir=notebooks, log=lambda s: None)
    assert [r.status for r in runs] == ["skipped"] * 5
    assert len(_calls(reports)) == 5

    # changed data (the dataset fingerprint): that category's runs and the report run again
    (Path(data) / "b" / "train" / "good" / "1.png").write_bytes(b"y")
    runs = runner.run_study(preset, categories=["a", "b"], data_root=data, reports_dir=reports,
                           notebooks_dir=notebooks, log=lambda s: None)
    assert [r.status for r in runs] == ["skipped", "done", "skipped", "done", "done"]
    done = runner.run_record(reports, "01_first-b")
    assert done["inputs"]["library"] == run_keys.notebook_code_fingerprint(notebooks / "01_first.ipynb")
    assert len(done["inputs"]["data"]) == 64

    # a changed parameter re-runs only the notebooks that declare it
    preset["parameters"]["factor"] = 3
    runs = runner.run_study(preset, categories=["a"], data_root=data, reports_dir=reports, notebooks_dir=notebooks,
                           log=lambda s: None, only=["01", "06"])
    assert [r.status for r in runs] == ["done", "skipped"]
    assert _calls(reports)[-1] == "first:a"

    # a missing HTML file makes the run incomplete
    (executed / "06_more-a.html").unlink()
    runs = runner.run_study(preset, categories=["a"], data_root=data, reports_dir=reports, notebooks_dir=notebooks,
                           log=lambda s: None, only=["06"])
    assert [r.status for r in runs] == ["done"]


@pytest.mark.notebook
def test_failed_notebook_is_reported_and_not_marked_done(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    _write_notebook(notebooks / "01_bad.ipynb", "reports_dir = None", "raise ValueError('broken on purpose')")
    reports = tmp_path / "reports"
    lines: list[str] = []
    with pytest.raises(runner.StudyError, match="01_bad.ipynb"):
        runner.run_study({"name": "t"}, categories=["a"], data_root=_fake_data(tmp_path), reports_dir=reports,
                        notebooks_dir=notebooks, log=lines.append)
    assert runner.run_record(reports, "01_bad") is None
    assert (reports / "executed" / "01_bad.html").is_file(), "the failed notebook is still rendered for reading"
    assert any("FAILED" in line and "broken on purpose" in line for line in lines)


def test_several_data_roots_and_preset_reports_folders(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    for root, category in ((first, "a"), (second, "a"), (second, "b")):
        (root / category / "train" / "good").mkdir(parents=True)
    assert runner.roots_of([str(first), str(second)], []) == (["a", "b"], {"a": str(first), "b": str(second)})
    with pytest.raises(DatasetError, match="'c'.*not found under any of"):
        runner.roots_of([str(first), str(second)], ["c"])
    # the default study never writes into the committed reports folder
    assert runner.preset_reports_dir(runner.load_preset(ROOT / "params" / "quick.yaml")) == ROOT / "reports" / "quick"
    assert runner.preset_reports_dir(runner.load_preset(ROOT / "params" / "real_reports.yaml")) == ROOT / "reports"
    assert runner.preset_reports_dir({"name": "x"}).name == "x"


def test_run_hash_depends_on_code_and_parameters(tmp_path):
    a = _write_notebook(tmp_path / "a.ipynb", "x = 1", "print(x)")
    b = _write_notebook(tmp_path / "b.ipynb", "x = 1", "print(x + 1)")
    assert run_keys.run_key(a, {"x": 1}) == run_keys.run_key(a, {"x": 1})
    assert run_keys.run_key(a, {"x": 1}) != run_keys.run_key(a, {"x": 2})
    assert run_keys.run_key(a, {"x": 1}) != run_keys.run_key(b, {"x": 1})


def test_bad_preset_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("parameters: {}\ncategoriez: [a]\n")
    with pytest.raises(ConfigError, match="categoriez"):
        runner.load_preset(path)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping"):
        runner.load_preset(path)


def test_category_parameters_apply_to_their_category_only(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("parameters: {factor: 2}\nnotebook_parameters: {'06': {factor: 3}}\n"
                    "category_parameters:\n  b:\n    parameters: {factor: 5}\n"
                    "    notebook_parameters: {'06': {factor: 7}}\n")
    preset = runner.load_preset(path)
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for stem in ("01_first", "06_more"):
        _write_notebook(notebooks / f"{stem}.ipynb", "category = ''\nfactor = 1", "print(factor)")
    runs = runner.plan_runs(preset, runner.discover_notebooks(notebooks), ["a", "b"], "/data", tmp_path / "r")
    factors = {(r.notebook.stem, r.category): r.parameters["factor"] for r in runs}
    assert factors == {("01_first", "a"): 2, ("01_first", "b"): 5, ("06_more", "a"): 3, ("06_more", "b"): 7}
    path.write_text("category_parameters: {b: {factor: 5}}\n")
    with pytest.raises(ConfigError, match="category_parameters.b"):
        runner.load_preset(path)


def test_parse_overrides():
    assert runner.parse_overrides(["imagesize=128", "weights=/m/w.pth", "layers=[layer2, layer3]"]) == \
        {"imagesize": 128, "weights": "/m/w.pth", "layers": ["layer2", "layer3"]}
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        runner.parse_overrides(["imagesize"])


def test_second_study_into_the_same_reports_folder_is_refused(tmp_path):
    from patchcore_lib.errors import OutputError
    from patchcore_lib.utils.files import output_lock

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    _write_notebook(notebooks / "01_x.ipynb", "reports_dir = None", "print(reports_dir)")
    reports = tmp_path / "reports"
    reports.mkdir()
    with output_lock(reports):  # as a running study holds it
        with pytest.raises(OutputError, match="is in use by another run.*choose another --reports-dir"):
            runner.run_study({"name": "t", "parameters": {}}, reports_dir=reports, notebooks_dir=notebooks,
                            log=lambda line: None)
    assert not list(reports.rglob("*.ipynb"))  # nothing was executed


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_papermill_reads_every_declared_parameter(notebook):
    """papermill's own line parser (used for `papermill --help-notebook` and its warnings) sees them all."""
    from papermill.translators import PythonTranslator

    cell = next(c for c in nbformat.read(str(notebook), as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    assert [p.name for p in PythonTranslator.inspect(cell)] == list(runner.notebook_parameters(notebook))


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "params").glob("*.yaml")
                                         if not p.stem.startswith("sweep")))  # sweeps: test_study_cluster.py
def test_presets_load_and_validate(name):
    from patchcore_lib.study.evaluate import evaluation_config

    preset = runner.load_preset(ROOT / "params" / f"{name}.yaml")
    check_parameters(preset["parameters"])  # every value passes the notebooks' one parameter check
    for overrides in preset["notebook_parameters"].values():
        check_parameters(overrides)
    for entry in preset["category_parameters"].values():
        check_parameters(entry.get("parameters") or {})
        for overrides in (entry.get("notebook_parameters") or {}).values():
            check_parameters(overrides)
    config = config_from_params(preset["parameters"])
    if name == "paper_im224_wr50":
        assert (config.backbone, config.layers, config.resize, config.imagesize, config.coreset_ratio) == \
            ("wide_resnet50_2", ("layer2", "layer3"), 256, 224, 0.1)
    if name == "quick":
        assert preset["data_root"] == "" and config.backbone == "efficientnet_lite0"
    if name == "real_lite0":  # the README's measurements: the CLI's defaults with the offline backbone
        assert config == PatchCoreConfig(backbone="efficientnet_lite0")
    if name == "ensemble_im320":  # notebook 04 builds the paper's three-backbone ensemble from it
        ensemble = evaluation_config(preset["parameters"])
        assert ensemble.fusion == "official"  # as the official code: min-max over the test set
        assert {(m.pretrain_embed_dimension, m.target_embed_dimension) for m in ensemble.members} == {(1024, 384)}
        assert [(m.backbone, m.layers) for m in ensemble.members] == [
            ("wide_resnet101_2", ("layer2", "layer3")), ("resnext101_32x8d", ("layer2", "layer3")),
            ("densenet201", ("features.denseblock2", "features.denseblock3"))]
        assert {(m.resize, m.imagesize, m.coreset_ratio) for m in ensemble.members} == {(366, 320, 0.01)}


@pytest.mark.slow
@pytest.mark.subprocess
def test_module_entry_point_shows_help():
    result = subprocess.run([sys.executable, "-m", "patchcore_lib.study", "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0 and "--preset" in result.stdout


def test_run_keys_hold_content_not_machine_paths(tmp_path):
    notebook = tmp_path / "01_x.ipynb"
    _write_notebook(notebook, 'category = ""\nweights = None\ndata_root = ""\nreports_dir = None', "NAME = 'x'")
    here = {"category": "a", "data_root": "/data/here", "reports_dir": "/home/me/reports", "cache_dir": "/c1"}
    there = {"category": "a", "data_root": "/mnt/there", "reports_dir": "/tmp/clone/reports", "cache_dir": None}
    assert run_keys.run_key(notebook, here, "fp") == run_keys.run_key(notebook, there, "fp")
    assert run_keys.run_key(notebook, here, "fp") != run_keys.run_key(notebook, here, "other data")
    one, two = tmp_path / "one" / "w.pth", tmp_path / "two" / "w.pth"
    for path, content in ((one, b"a"), (two, b"a")):
        path.parent.mkdir()
        path.write_bytes(content)
    key = run_keys.run_key(notebook, {**here, "weights": str(one)}, "fp")
    assert key == run_keys.run_key(notebook, {**here, "weights": str(two)}, "fp")  # same content elsewhere
    two.write_bytes(b"b")  # other weights at the same path: another key
    assert run_keys.run_key(notebook, {**here, "weights": str(two)}, "fp") != key
