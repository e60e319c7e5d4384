"""Execute notebooks 01-03 through papermill on a tiny synthetic configuration.

Fails on any cell error or missing output file; also checks that the stored notebooks carry no outputs,
have the expected kernelspec and parameters cell, and that a bad parameter stops with a clear message.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import NOTEBOOKS

papermill = pytest.importorskip("papermill")
nbformat = pytest.importorskip("nbformat")

NAMES = ("01_feature_extraction", "02_coreset_ablation", "03_knn_scoring")
EXPECTED = {
    "01_feature_extraction": ["sample_inputs.png", "layer_shapes.csv", "receptive_field.png", "receptive_field.csv",
                              "feature_cache.csv", "pca_patches.png", "memory_bank.csv", "memory_bank.png"],
    "02_coreset_ablation": ["coreset_ablation.csv", "coreset_ablation_display.csv", "coreset_metrics.png",
                            "coreset_coverage.png", "paper_comparison.csv", "seed_spread.csv", "seed_spread.png"],
    "03_knn_scoring": ["knn_scoring.csv", "variant_metrics.png", "score_histograms.png", "anomaly_gallery.png",
                       "reweighting_effect.csv", "reweighting_weights.png"],
}
EXTRA = {
    "01_feature_extraction": {"ratios": [0.1, 1.0], "bank_imagesizes": [64, 128], "num_samples": 2,
                              "pca_points": 200},
    "02_coreset_ablation": {"samplers": ["random", "approx_greedy", "greedy"], "ratios": [0.05, 1.0],
                            "max_exact_greedy": 20000, "spread_seeds": [0, 1, 2], "spread_ratio": 0.1},
    "03_knn_scoring": {"coreset_ratio": 0.2, "k_values": [1, 3], "b_values": [3], "sigmas": [0, 4],
                       "gallery_size": 4},
}


@pytest.fixture(scope="module")
def tiny(notebook_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("notebooks")
    params = {"data_root": str(notebook_root), "category": "tiny", "resize": 64, "imagesize": 64, "device": "cpu",
              "reports_dir": str(base / "reports"), "cache_dir": str(base / "cache"), "run_id": "test"}
    return base, params


def execute(name: str, base: Path, params: dict) -> Path:
    output = base / "executed" / f"{name}.ipynb"
    output.parent.mkdir(exist_ok=True)
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(output), parameters=params,
                               kernel_name="python3", progress_bar=False, cwd=str(base))
    return Path(params["reports_dir"]) / name / params["run_id"]


def check_outputs(folder: Path, name: str) -> dict:
    from patchcore_lib.data import dataset_fingerprint

    missing = [f for f in EXPECTED[name] + ["metrics.json"] if not (folder / f).is_file()]
    assert not missing, f"{folder}: missing outputs {missing}"
    for png in folder.glob("*.png"):
        assert png.stat().st_size > 2000, f"{png} looks empty"
    record = json.loads((folder / "metrics.json").read_text())
    params = record["parameters"]
    assert record["dataset_fingerprint"] == dataset_fingerprint(params["data_root"], params["category"])
    assert record["versions"]["torch"] and "git_commit" in record
    return record


@pytest.fixture(scope="module")
def run_01(tiny):
    base, params = tiny
    return execute("01_feature_extraction", base, {**params, **EXTRA["01_feature_extraction"]})


@pytest.fixture(scope="module")
def run_02(tiny, run_01):  # after 01: reuses its feature cache
    base, params = tiny
    return execute("02_coreset_ablation", base, {**params, **EXTRA["02_coreset_ablation"]})


@pytest.fixture(scope="module")
def run_03(tiny, run_01):
    base, params = tiny
    return execute("03_knn_scoring", base, {**params, **EXTRA["03_knn_scoring"]})


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebooks_are_clean(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("language", "python") == "python"  # any name: the runner picks
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "notebook saved with outputs"
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    params_cell = nb.cells[tagged[0]].source
    for parameter in ("data_root", "category", "backbone", "layers", "resize", "imagesize", "seed", "device",
                      "reports_dir", "run_id", "cache_dir", *EXTRA[name]):
        assert f"\n{parameter} = " in "\n" + params_cell, f"parameter {parameter} missing"
    assert nb.cells[tagged[0] + 1].source.startswith("params = validate_parameters(declared_parameters(globals()))")


@pytest.mark.slow
@pytest.mark.notebook
def test_01_feature_extraction(run_01):
    metrics = check_outputs(run_01, "01_feature_extraction")["metrics"]
    assert metrics["train_images"] == 8 and metrics["test_images"] == 3 + 2 * 4
    assert [row["was_cached"] for row in metrics["feature_cache"]] == [False, False]
    assert metrics["grid"] == [8, 8] and metrics["feature_dim"] == 384


@pytest.mark.slow
@pytest.mark.notebook
def test_02_coreset_ablation(run_02):
    import pandas as pd

    metrics = check_outputs(run_02, "02_coreset_ablation")["metrics"]
    assert metrics["feature_cache_hits"] == {"train": True, "test": True}
    table = pd.read_csv(run_02 / "coreset_ablation.csv")
    assert len(table) == 6 and table.status.str.startswith("ok").all()
    assert table.image_auroc.between(0, 1).all() and (table.coverage_radius >= 0).all()
    # the seed spread: three runs that differ only in the seed, and their summary
    spread = pd.read_csv(run_02 / "seed_spread.csv")
    assert spread.seed.tolist() == [0, 1, 2] and spread.image_auroc.between(0, 1).all()
    summary = metrics["seed_spread"]
    for metric in ("image_auroc", "pixel_auroc", "pro"):
        assert summary[metric]["range"] == pytest.approx(spread[metric].max() - spread[metric].min())


@pytest.mark.slow
@pytest.mark.notebook
def test_03_knn_scoring(run_03):
    import pandas as pd

    metrics = check_outputs(run_03, "03_knn_scoring")["metrics"]
    assert metrics["feature_cache_hits"] == {"train": True, "test": True}
    table = pd.read_csv(run_03 / "knn_scoring.csv")
    assert set(table.factor) == {"k (neighbours)", "image score", "distance", "Gaussian sigma"}
    assert len(table) == 2 + 2 + 2 + 2
    assert 0 <= metrics["default"]["image_auroc"] <= 1


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize("name, bad, message", [
    ("01_feature_extraction", {"imagesize": "64"}, "notebook parameter 'imagesize' must be an integer, got str"),
    ("02_coreset_ablation", {"samplers": ["fastest"]}, "unknown sampler 'fastest'"),
])
def test_bad_parameter_fails_with_clear_message(tiny, name, bad, message):
    base, params = tiny
    with pytest.raises(papermill.PapermillExecutionError) as info:
        execute(name, base, {**params, "run_id": "bad", **bad})
    assert info.value.ename == "ConfigError"
    assert message in info.value.evalue
