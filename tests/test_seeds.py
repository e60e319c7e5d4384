"""Runs repeated over seeds (notebooks 02-04): only the coreset selection depends on the seed, features are
extracted once, every number is the mean over the seeds with its sample standard deviation (ddof=1)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from patchcore_lib.data import open_split
from patchcore_lib.detectors import PatchCore
from patchcore_lib.evaluation import evaluate_category
from patchcore_lib.evaluation.metrics import pixel_metrics
from patchcore_lib.study import coreset_ablation as ca
from patchcore_lib.study import evaluate as ev
from patchcore_lib.study import knn_scoring as ks
from patchcore_lib.study.cached_features import load_features
from patchcore_lib.study.cached_scoring import (evaluate_over_seeds, mean_sd, seed_pixel_metrics, seed_record,
                                                seed_statistics, split_targets, summarise_seeds)
from patchcore_lib.study.params import config_from_params, parameter_default

SIZE = 64


@pytest.fixture(scope="module")
def cached(synthetic_root, tmp_path_factory):
    params = {"data_root": str(synthetic_root), "category": "tiny", "resize": SIZE, "imagesize": SIZE,
              "device": "cpu", "cache_dir": str(tmp_path_factory.mktemp("cache"))}
    model = PatchCore(config_from_params(params))
    train, grid, _ = load_features(model, params, "train")
    test, _, _ = load_features(model, params, "test")
    targets = split_targets(open_split(synthetic_root, "tiny", "test", SIZE, SIZE))
    return model, train, test, grid, targets


def test_seeds_default_to_three_and_are_one_declaration():
    assert parameter_default("seeds") == (0, 1, 2)


def test_statistics_are_the_mean_and_the_sample_sd():
    mean, sd = seed_statistics([0.9, 0.95, 1.0])
    assert mean == pytest.approx(0.95) and sd == pytest.approx(0.05)  # ddof=1: sqrt((0.05² + 0 + 0.05²) / 2)
    assert seed_statistics([0.7])[0] == 0.7 and math.isnan(seed_statistics([0.7])[1])
    assert mean_sd(0.95, 0.05) == "95.0 ± 5.0" and mean_sd(0.9731, float("nan")) == "97.3"
    assert mean_sd(float("nan"), 0.1) == "n/a" and mean_sd(1.23456, 0.0, percent=False, decimals=3) == "1.235 ± 0.000"


def test_summary_keeps_the_group_order_and_puts_each_sd_after_its_mean():
    per_seed = pd.DataFrame({"sampler": ["b", "b", "a", "a"], "ratio": [0.1] * 4, "seed": [0, 1, 0, 1],
                             "image_auroc": [0.8, 1.0, 0.5, 0.5], "status": ["ok", "ok", "ok (same)", "ok"]})
    table = summarise_seeds(per_seed, ["sampler", "ratio"], ["image_auroc"])
    assert table.columns.tolist() == ["sampler", "ratio", "image_auroc", "image_auroc_sd", "status", "seeds"]
    assert table.sampler.tolist() == ["b", "a"] and table.seeds.tolist() == [2, 2]
    assert table.image_auroc.tolist() == pytest.approx([0.9, 0.5])
    assert table.image_auroc_sd.tolist() == pytest.approx([math.sqrt(0.02), 0.0])
    assert table.status.tolist() == ["ok", "ok (same)"]  # the first seed's


def test_record_over_seeds_holds_means_sds_and_per_seed_values():
    records = [{"category": "c", "image_auroc": a, "memory_bank_size": 10, "per_defect": {"crack": d}}
               for a, d in ((0.9, 0.5), (1.0, 0.7))]
    record = seed_record(records, [3, 5], ["image_auroc", "fit_seconds"], nested=["per_defect"])
    assert record["seeds"] == [3, 5] and record["per_seed"] == {"image_auroc": [0.9, 1.0]}
    assert record["image_auroc"] == pytest.approx(0.95) and record["image_auroc_sd"] == pytest.approx(np.std([0.9, 1.0],
                                                                                                         ddof=1))
    assert record["memory_bank_size"] == 10 and "fit_seconds" not in record
    assert record["per_defect"] == {"crack": pytest.approx(0.6)}
    assert record["per_defect_sd"]["crack"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_coreset_ablation_runs_every_seed_and_a_full_bank_has_no_spread(cached, tmp_path):
    model, train, test, grid, targets = cached
    per_seed = ca.coreset_ablation(model, train, test, grid, targets, ["random", "approx_greedy"], [0.05, 1.0],
                                   log=None, rows=tmp_path, seeds=[0, 1, 2])
    assert len(per_seed) == 2 * 2 * 3 and per_seed.seed.tolist()[:3] == [0, 1, 2]
    random_5 = per_seed[(per_seed.sampler == "random") & (per_seed.ratio == 0.05)]
    assert random_5.coverage_radius.nunique() == 3  # another seed, another subset
    table = ca.seed_summary(per_seed)
    assert len(table) == 4 and (table.seeds == 3).all()
    for _, row in table.iterrows():
        rows = per_seed[(per_seed.sampler == row.sampler) & (per_seed.ratio == row.ratio)]
        assert row.image_auroc == pytest.approx(rows.image_auroc.mean())
        assert row.image_auroc_sd == pytest.approx(rows.image_auroc.std(ddof=1))
    full = table[table.ratio == 1.0]
    assert (full.image_auroc_sd == 0).all() and (full.coverage_radius == 0).all()
    shown = ca.ablation_display_table(table)
    assert shown["image AUROC (%)"].str.contains(" ± ").all()
    # the stored rows are per seed: seed 3 is computed, seeds 0-2 are reused as they were
    again = ca.coreset_ablation(model, train, test, grid, targets, ["random"], [0.05], log=None, rows=tmp_path,
                                seeds=[0, 3])
    assert again.reused.tolist() == [True, False]
    assert again.image_auroc.iloc[0] == random_5.image_auroc.iloc[0]
    # the seed spread takes the seeds the ablation already ran
    spread, summary = ca.seed_spread(model, train, test, grid, targets, [0, 1], "random", 0.05, known=per_seed)
    assert spread.image_auroc.tolist() == random_5.image_auroc.tolist()[:2]
    computed, _ = ca.seed_spread(model, train, test, grid, targets, [0, 1], "random", 0.05)
    assert computed.image_auroc.tolist() == pytest.approx(spread.image_auroc.tolist())


def test_knn_scoring_over_seeds_averages_one_bank_per_seed(cached):
    model, train, test, grid, targets = cached
    scorer = model.with_bank(sampler="approx_greedy", coreset_ratio=0.1)
    variants = ks.scoring_variants([1, 3], [3], ["sqeuclidean"], [4], ks.scoring_defaults(scorer.config))
    table, per_seed, scores, maps, first = ks.knn_scoring_over_seeds(scorer, train, test, grid, targets, variants,
                                                                     [4, 7], keep_maps=["default"], log=None)
    assert first.config.seed == 4 and list(maps) == ["default"] and len(per_seed) == 2 * len(variants)
    assert len(table) == len(variants) and table.value.tolist() == [v["value"] for v in variants]
    alone, seed4_scores, _ = ks.knn_scoring_ablation(first, first.memory_bank, test, grid, targets, variants, log=None)
    assert per_seed[per_seed.seed == 4].image_auroc.tolist() == alone.image_auroc.tolist()
    for label, values in scores.items():
        np.testing.assert_array_equal(values, seed4_scores[label])
    k3 = per_seed[per_seed.value == "k=3"]
    row = table[table.value == "k=3"].iloc[0]
    assert row.pixel_auroc == pytest.approx(k3.pixel_auroc.mean())
    assert row.pixel_auroc_sd == pytest.approx(k3.pixel_auroc.std(ddof=1))
    assert ks.default_metrics(table)["image_auroc_sd"] >= 0
    assert " ± " in ks.variant_display_table(table)["pixel AUROC (%)"].iloc[0]


def test_evaluation_over_seeds_equals_the_runner_per_seed(synthetic_root):
    params = {"data_root": str(synthetic_root), "category": "tiny", "resize": SIZE, "imagesize": SIZE,
              "coreset_ratio": 0.2, "device": "cpu"}
    detector = ev.evaluation_detector(params)
    runs, train_features = evaluate_over_seeds(detector, str(synthetic_root), "tiny", [0, 1], show_progress=False)
    assert [run.seed for run in runs] == [0, 1] and detector.memory_bank is None  # the given detector stays unfitted
    grid = detector.extractor.feature_grid(SIZE)
    assert train_features.shape == (runs[0].row["num_train"] * grid[0] * grid[1],
                                    detector.config.target_embed_dimension)
    assert not torch.equal(runs[0].detector.memory_bank, runs[1].detector.memory_bank)
    for run in runs:  # the runner on the images, with that seed, gives the same numbers
        alone = ev.evaluation_detector({**params, "seed": run.seed})
        row, predictions = evaluate_category(alone, str(synthetic_root), "tiny", show_progress=False)
        for key in ("image_auroc", "pixel_auroc", "pro", "anomaly_pro", "memory_bank_size", "num_test"):
            assert run.row[key] == pytest.approx(row[key], abs=1e-6), (run.seed, key)
        np.testing.assert_allclose(run.predictions.scores, predictions.scores, rtol=1e-5)
        assert run.row["fit_seconds"] >= run.detector.timings["extract_seconds"] > 0
    metrics = ev.metrics_over_seeds(runs, detector.config)
    assert metrics["seeds"] == [0, 1] and metrics["per_seed"]["pro"] == [run.row["pro"] for run in runs]
    assert metrics["pro"] == pytest.approx(np.mean(metrics["per_seed"]["pro"]))
    assert metrics["pro_sd"] == pytest.approx(np.std(metrics["per_seed"]["pro"], ddof=1))
    assert set(ev.REQUIRED_METRICS) <= set(metrics) and "per_defect_image_auroc_sd" in metrics
    table = ev.metrics_row_table(metrics)
    assert table.columns.tolist()[:4] == ["category", "image_auroc", "image_auroc_sd", "pixel_auroc"]
    shown = ev.metrics_column(table).set_index("metric")["value"]
    assert shown["pro"] == mean_sd(metrics["pro"], metrics["pro_sd"]) and shown["seeds"] == "0 1"
    per_defect = ev.per_defect_table([run.predictions for run in runs])
    assert per_defect.image_auroc.tolist() == pytest.approx(list(metrics["per_defect_image_auroc"].values()))
    for run in runs:  # the pixel metrics the runs keep for the figures: those of their predictions, one sort
        again = pixel_metrics(run.predictions.masks, run.predictions.maps, run.predictions.labels)
        assert run.pixel.pro == again.pro == run.row["pro"] and run.pixel.pixel_auroc == run.row["pixel_auroc"]
        assert all(np.array_equal(a, b) for a, b in zip(run.pixel.roc, again.roc))
    reused, computed = seed_pixel_metrics(runs), seed_pixel_metrics([run.predictions for run in runs])
    assert [p.pro_curve(300)[1].tolist() for p in reused] == [p.pro_curve(300)[1].tolist() for p in computed]
    for figure in (ev.plot_roc_curves(runs), ev.plot_pro_curve(runs), ev.plot_roc_curves(runs[0].predictions)):
        plt.close(figure)
