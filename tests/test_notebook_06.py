"""Notebook 06 (baselines) runs end to end through papermill on a tiny synthetic dataset."""
import json

import pytest

from helpers import NOTEBOOKS

pytest.importorskip("papermill")


@pytest.mark.slow
@pytest.mark.notebook
def test_notebook_06_runs_and_writes_outputs(notebook_root, tmp_path):
    import pandas as pd
    import papermill

    notebook = NOTEBOOKS / "06_baselines.ipynb"
    out = tmp_path / "reports"
    # orthoad_k 300 > D = 176 channels of efficientnet_lite0 blocks.1/2/4: the notebook must skip it clearly
    papermill.execute_notebook(
        str(notebook), str(tmp_path / "out.ipynb"), cwd=str(tmp_path), progress_bar=False, kernel_name="python3",
        parameters=dict(data_root=str(notebook_root), category="tiny", resize=96, imagesize=64,
                        methods=["patchcore", "padim", "orthoad"], orthoad_k=[16, 300], padim_d=20,
                        seeds=[0, 1], reports_dir=str(out), run_id="test"))  # raises PapermillExecutionError on a cell error
    folder = out / "06_baselines" / "test"
    for name in ("baselines.csv", "baselines_per_seed.csv", "baselines.png", "metrics.json"):
        assert (folder / name).is_file(), name
    table = pd.read_csv(folder / "baselines.csv")
    ours = table[table["source"] == "this run"]
    assert ours["run"].tolist() == ["PatchCore", "PaDiM d=20", "OrthoAD k=16"]
    record = json.loads((folder / "metrics.json").read_text())
    runs = pd.DataFrame(record["metrics"]["runs"])
    for column in ("image_auroc", "pixel_auroc", "pixel_auroc_legacy", "pro"):  # percent in the table
        assert ours[column].tolist() == pytest.approx((100 * runs[column]).tolist()), column
        assert runs[column].between(0, 1).all() and ours[column].max() > 1, column
        assert (ours[f"{column}_sd"] >= 0).all(), column  # sample sd over the two seeds
    per_seed = pd.read_csv(folder / "baselines_per_seed.csv")  # every run once per seed; the table is their mean
    assert sorted(per_seed["seed"].unique()) == [0, 1] and len(per_seed) == 2 * len(ours)
    means = per_seed.groupby("run", sort=False)["image_auroc"].mean()
    assert (100 * means[ours["run"]]).tolist() == pytest.approx(ours["image_auroc"].tolist())
    padim = per_seed[per_seed["method"] == "padim"]["pixel_auroc"]
    assert padim.iloc[0] != padim.iloc[1]  # the seed changes PaDiM's channel subset
    assert record["metrics"]["seeds"] == [0, 1] and (ours["seeds"] == 2).all()
    assert (ours["fit_seconds"] > 0).all() and (ours["model_bytes"] > 0).all()
    assert (table["source"] != "this run").sum() == 0  # a synthetic category: no published MVTec AD rows
    assert any("k=300" in note for note in record["metrics"]["skipped"])


def test_published_baseline_rows_only_for_mvtec_categories():
    from patchcore_lib.paper.reference import baseline_reference_table
    from patchcore_lib.study import baselines

    mvtec = baseline_reference_table("bottle")
    assert len(mvtec) == 7 and (mvtec["scope"] == "MVTec AD mean (15 categories)").all()
    tiles = baseline_reference_table("magnetic_tile")
    assert len(tiles) == 0 and list(tiles.columns) == list(mvtec.columns)
    ours = mvtec.iloc[:1].assign(source="this run", scope="this category")
    assert len(baselines.baselines_table(ours, tiles)) == 1
    table = baselines.baselines_table(ours, mvtec)
    assert len(table) == 8 and table["pro"].iloc[0] == pytest.approx(100 * mvtec["pro"].iloc[0])
