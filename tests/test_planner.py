"""Issue 31, 4: ``patchcore plan`` and its model (detectors/planner.py): the patch-count formula against the real
feature extractor, the plan's structure, monotone estimates, counting without decoding, one-line errors."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from PIL import Image

from patchcore_lib.cli import build_parser, main
from patchcore_lib.cli.exit_codes import EXIT_DATA, EXIT_USAGE
from patchcore_lib.components.features import PatchFeatureExtractor
from patchcore_lib.components.sampling import num_selected
from patchcore_lib.detectors.patchcore import PatchCoreConfig
from patchcore_lib.detectors.plan_measure import MachineSpeeds, measure_row_seconds
from patchcore_lib.detectors.planner import CONSTANTS, GIB, PlanConstants, estimate_fit, patch_grid

#: the quick model of the CLI tests (random resnet18 weights at 64 px) as plan options, no threshold calibration
QUICK = ["--backbone", "resnet18", "--weights", "random", "--resize", "64", "--imagesize", "64", "--coreset-ratio",
         "0.2", "--device", "cpu", "--calibration-folds", "0", "--quiet"]


def _speeds(**changes) -> MachineSpeeds:
    """Fixed machine numbers (about the 2-core development machine's), so an estimate involves no measuring."""
    values = dict(device="cpu", threads=2, feature_seconds_per_image=0.014, forward_batch=8, grid=(28, 28),
                  activation_bytes=80e6, gpu_model_bytes=0.0, gpu_activation_bytes=0.0, decode_seconds_per_image=0.007,
                  row_seconds=7.5e-8, copy_gbps=30.0, matmul_gflops=180.0, base_rss_bytes=0.75 * GIB)
    values.update(changes)
    return MachineSpeeds(**values)


@pytest.mark.parametrize("backbone,imagesize,patch_stride", [("resnet18", 64, 1), ("resnet18", 72, 1),
                                                             ("resnet18", 96, 2), ("efficientnet_lite0", 80, 1)])
def test_the_patch_count_formula_is_the_real_extractors_grid(backbone, imagesize, patch_stride):
    config = PatchCoreConfig(backbone=backbone, weights="random", resize=imagesize, imagesize=imagesize,
                             patch_stride=patch_stride, device="cpu")
    extractor = PatchFeatureExtractor(backbone, config.layers, config.patch_size, config.pretrain_embed_dimension,
                                      config.target_embed_dimension, weights="random", patch_stride=patch_stride)
    features, grid = extractor(torch.randn(2, 3, imagesize, imagesize))
    assert patch_grid(config) == tuple(grid) == extractor.feature_grid(imagesize)
    assert features.shape == (2, grid[0] * grid[1], config.target_embed_dimension)
    plan = estimate_fit(config, 5, _speeds(grid=patch_grid(config)), 0)
    assert plan.patches == 5 * grid[0] * grid[1] and plan.dim == config.target_embed_dimension
    assert plan.selections == num_selected(plan.patches, config.coreset_ratio)


def test_the_paper_setting_has_784_patches_per_image():
    for backbone in ("wide_resnet50_2", "efficientnet_lite0"):
        assert patch_grid(PatchCoreConfig(backbone=backbone, weights="random", device="cpu")) == (28, 28)
    tiles = PatchCoreConfig(resize=224, imagesize=224, crop="none", device="cpu")
    assert 761 * patch_grid(tiles)[0] * patch_grid(tiles)[1] == 596_624  # the magnetic tiles' patches


def test_memory_and_time_grow_with_the_image_count():
    config = PatchCoreConfig(device="cpu")
    plans = [estimate_fit(config, n, _speeds(), folds) for folds in (0, 10) for n in (10, 100, 1000, 10_000)]
    for folds in (0, 1):
        row = plans[4 * folds:4 * folds + 4]
        assert all(a.peak_ram_bytes < b.peak_ram_bytes for a, b in zip(row, row[1:]))
        assert all(a.seconds["total"] < b.seconds["total"] for a, b in zip(row, row[1:]))
        assert all(a.seconds["coreset"] < b.seconds["coreset"] for a, b in zip(row, row[1:]))
    big = plans[3]
    assert big.ram["features"] == pytest.approx(10_000 * 784 * 384 * 4)  # features [N, D] float32
    assert big.peak_ram_bytes > big.ram["features"] + 0.75 * GIB
    # the coreset's per-selection cost grows with N: 10x the images, ~100x the selection work
    assert plans[3].seconds["coreset"] > 30 * plans[2].seconds["coreset"]
    assert plans[7].seconds["calibration"] > 0 and plans[3].seconds["calibration"] == 0


def test_an_estimate_is_a_pure_function_of_its_inputs_and_constants():
    config = PatchCoreConfig(device="cpu")
    one, two = estimate_fit(config, 209, _speeds(), 0), estimate_fit(config, 209, _speeds(), 0)
    assert one.to_dict() == two.to_dict()
    slower = PlanConstants(**{**CONSTANTS.to_dict(), "extract_factor": 2 * CONSTANTS.extract_factor})
    doubled = estimate_fit(config, 209, _speeds(), 0, slower).seconds["extract"]
    assert doubled == pytest.approx(2 * one.seconds["extract"])
    assert set(one.seconds) == {"extract", "coreset", "index", "calibration", "total"}
    assert one.seconds["total"] == pytest.approx(sum(v for k, v in one.seconds.items() if k != "total"))
    assert estimate_fit(config, 209, _speeds(decode_seconds_per_image=None), 0).decode_assumed


def test_on_cuda_the_features_are_planned_in_gpu_memory():
    config = PatchCoreConfig(device="cpu")
    cuda = estimate_fit(config, 1000, _speeds(device="cuda:0", activation_bytes=0.0, gpu_model_bytes=2e8,
                                              gpu_activation_bytes=1e9, row_seconds=1e-11), 0)
    assert cuda.vram is not None and "features" not in cuda.ram and cuda.coreset_method == "cuda"
    assert cuda.peak_vram_bytes > 1000 * 784 * 384 * 4 + 1.2e9
    assert cuda.seconds["coreset"] >= cuda.selections * CONSTANTS.cuda_seconds_per_selection


def test_the_row_cost_measurement_is_a_plausible_rate():
    seconds = measure_row_seconds(torch.device("cpu"), rows=8192, iterations=4)
    assert 1e-10 < seconds < 1e-5  # 128 floats per row: between 50 GB/s and ~0.05 GB/s


@pytest.mark.slow
def test_plan_prints_json_with_every_stage_and_a_readable_table(capsys):
    assert main(["plan", "--images", "12", *QUICK, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    h, w = plan["grid"]
    assert (h, w) == (8, 8) and plan["patches"] == 12 * 64 and plan["selections"] == int(12 * 64 * 0.2)
    assert set(plan["seconds"]) == {"extract", "coreset", "index", "calibration", "total"}
    assert plan["fit_seconds"] == plan["seconds"]["total"] > 0 and plan["peak_ram_gib"] > 0.1
    assert plan["peak_vram_gib"] is None and plan["calibration_folds"] == 0
    speeds = plan["speeds"]
    assert speeds["feature_seconds_per_image"] > 0 and speeds["copy_gbps"] > 0 and speeds["matmul_gflops"] > 0
    assert speeds["measure_seconds"] < 20
    assert main(["plan", "--images", "12", *QUICK]) == 0
    table = capsys.readouterr().out
    for text in ("feature extraction", "coreset selection", "total", "peak RAM (resident)", "12 x 8 x 8 = 768"):
        assert text in table


@pytest.mark.slow
def test_images_are_counted_without_decoding_them(tmp_path, capsys):
    """Nine files of which only the three timed for decoding (first, middle, last) are real images."""
    folder = tmp_path / "normal"
    folder.mkdir()
    for index in range(9):
        path = folder / f"{index:02d}.png"
        if index in (0, 4, 8):
            Image.new("RGB", (80, 80), (index * 20, 90, 120)).save(path)
        else:
            path.write_bytes(b"not an image")
    assert main(["plan", "--train", str(folder), *QUICK, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["num_images"] == 9 and plan["speeds"]["decode_seconds_per_image"] > 0 and not plan["decode_assumed"]
    assert main(["plan", "--train", str(folder), "--images", "900", *QUICK, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_images"] == 900


@pytest.mark.slow
def test_a_dataset_category_is_counted_from_its_train_split(synthetic_root, capsys):
    assert main(["plan", "--data-root", str(synthetic_root), "--category", "tiny", *QUICK, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_images"] == 12


@pytest.mark.parametrize("argv,culprit", [
    ([], "--images N, --train FOLDER or --data-root"),
    (["--images", "10", "--coreset-ratio", "1.5"], "coreset_ratio"),
    (["--images", "10", "--method", "padim"], "--method patchcore"),
    (["--images", "10", "--padim-d", "100"], "--padim-d applies to --method padim"),
    (["--images", "10", "--data-root", "somewhere"], "--data-root and --category go together"),
    (["--images", "10", "--imagesize", "300"], "imagesize (300) must not exceed resize"),
    (["--images", "10", "--calibration-folds", "1"], "calibration_folds"),
])
def test_bad_options_are_one_line_errors(argv, culprit, capsys):
    assert main(["plan", *argv]) == EXIT_USAGE
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and culprit in lines[0], lines


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_bad_image_count_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "--images", value])
    assert exit_info.value.code == EXIT_USAGE and "--images" in capsys.readouterr().err


def test_a_missing_data_root_is_a_data_error(tmp_path, capsys):
    assert main(["plan", "--data-root", str(tmp_path / "nowhere"), "--category", "bottle", *QUICK]) == EXIT_DATA
    assert len([line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]) == 1


def test_plan_takes_the_fit_commands_model_options():
    _, subparsers = build_parser("plan")
    plan = {a.dest for a in subparsers["plan"]._actions}
    _, subparsers = build_parser("fit")
    fit = {a.dest for a in subparsers["fit"]._actions}
    model = {f.name for f in dataclasses.fields(PatchCoreConfig)}
    assert model <= plan and model <= fit  # one schema: every config field is an option of both
    assert {"images", "train", "data_root", "category", "json", "calibration_folds"} <= plan
