"""Issue 32 (conventions) and 30 (advice at fit time): exit codes by kind of failure, help that shows required
options and each default once, fit's notes on the crop and on the spread of normal scores."""
from __future__ import annotations

import pytest
from PIL import Image

from patchcore_lib.cli import EXIT_CODES, build_parser, main
from patchcore_lib.cli.exit_codes import EXIT_DATA, EXIT_MODEL, EXIT_OUTPUT, EXIT_USAGE
from patchcore_lib.cli.fit import crop_share, spread_advice
from helpers import FAST


@pytest.mark.parametrize("command", ["fit", "predict", "export", "evaluate"])
def test_help_shows_required_options_defaults_once_and_exit_codes(command, capsys):
    _, subparsers = build_parser()
    text = subparsers[command].format_help()
    usage = " ".join(text.split("\n\n")[0].split())  # argparse may wrap between an option and its value
    required = {"fit": ["--train TRAIN", "--out OUT"], "predict": ["--model MODEL", "--out OUT", "INPUT [INPUT ...]"],
                "export": ["--model MODEL", "--out OUT"], "evaluate": ["--category CATEGORY", "--out OUT"]}[command]
    for option in required:
        assert option in usage and f"[{option}]" not in usage, (option, usage)
    flat = " ".join(text.split())
    assert flat.count("[default: patchcore]") <= 1 and "(default: patchcore) [default" not in flat
    for code, meaning in EXIT_CODES.items():
        assert f"{code:>3}  {meaning}" in text


def test_exit_codes_tell_usage_data_model_and_output_apart(synthetic_root, tmp_path, capsys):
    image = next((synthetic_root / "tiny" / "test" / "good").glob("*.png"))
    model = tmp_path / "model.pt"
    model.write_bytes(b"not a model")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = {
        EXIT_USAGE: ["predict", "--model", str(model), str(image), "--out", str(tmp_path / "o"), "--flush-every", "0"],
        EXIT_DATA: ["fit", "--train", str(tmp_path / "nothing"), "--out", str(tmp_path / "m.pt"), *FAST],
        EXIT_MODEL: ["predict", "--model", str(model), str(image), "--out", str(tmp_path / "o")],
        EXIT_OUTPUT: ["evaluate", "--data-root", str(synthetic_root), "--category", "tiny", *FAST,
                      "--out", str(blocker / "out")],
    }
    (tmp_path / "nothing").mkdir()
    for expected, argv in cases.items():
        assert main(argv) == expected, (argv, capsys.readouterr().err)
        assert len([l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]) == 1


def test_crop_share_of_square_and_wide_images(tmp_path):
    Image.new("RGB", (512, 512)).save(tmp_path / "square.png")
    Image.new("RGB", (600, 300)).save(tmp_path / "wide.png")
    assert crop_share([tmp_path / "square.png"], 256, 224, "center") == pytest.approx((224 / 256) ** 2)
    assert crop_share([tmp_path / "wide.png"], 256, 224, "center") == pytest.approx(224 * 224 / (512 * 256))
    assert crop_share([tmp_path / "square.png"], 256, 224, "none") is None


def test_spread_advice_only_when_the_threshold_is_far_above_normal_scores():
    tight = {"threshold": 1.1, "out_of_fold_scores": [1.0, 1.02, 0.98, 1.01, 0.99]}
    wide = {"threshold": 3.0, "out_of_fold_scores": [1.0, 1.5, 0.8, 2.9, 1.1]}
    assert len(spread_advice(tight)) == 1 and "1.10x the median" in spread_advice(tight)[0]
    assert len(spread_advice(wide)) == 2 and spread_advice(wide)[1].startswith("advice:")
    assert spread_advice({"threshold": 1.0, "out_of_fold_scores": [1.0]}) == []


@pytest.mark.slow
def test_fit_prints_the_crop_note_and_the_score_spread(synthetic_root, tmp_path, capsys):
    assert main(["fit", "--train", str(synthetic_root / "tiny" / "train"), "--out", str(tmp_path / "m.pt"), *FAST,
                 "--calibration-folds", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "out-of-fold scores of the normal images: median" in out
    resize, imagesize = int(FAST[FAST.index("--resize") + 1]), int(FAST[FAST.index("--imagesize") + 1])
    assert ("note: the centre crop keeps" in out) == (imagesize < resize)


def test_the_exit_code_tables_of_the_docs_are_the_declared_ones():
    from helpers import ROOT

    rows = {}
    for line in (ROOT / "docs" / "inspection_line.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 2 and cells[0].isdigit():
            rows[int(cells[0])] = cells[1].replace("`", "")
    assert rows == {code: meaning for code, meaning in EXIT_CODES.items() if code < 128}
    readme = " ".join((ROOT / "README.md").read_text().split())
    for code in (2, 3, 4, 5, 6):
        assert f"{code} " in readme.split("Exit codes:")[1][:300]


# --- issue 30, 5: overlays at the input image's own size -----------------------------------------------------------
@pytest.mark.parametrize("size,crop", [((300, 200), "center"), ((200, 300), "center"), ((300, 200), "none")])
def test_the_map_lands_where_the_model_looked(size, crop):
    """A map equal to the model's own input (a gradient image through the library's preprocessing) mapped back
    onto the original matches the original inside the crop; outside it nothing is marked as seen."""
    import numpy as np
    from patchcore_lib.data.preprocessing import Preprocess
    from patchcore_lib.detectors.overlays import crop_box, map_to_image

    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    pattern = ((np.sin(xx / 9.0) + np.cos(yy / 13.0)) * 60 + 128).astype(np.uint8)
    original = Image.fromarray(np.stack([pattern] * 3, axis=-1))
    seen_by_model = Preprocess(128, 112, crop=crop).denormalise(Preprocess(128, 112, crop=crop).image(original))[..., 0]
    values, seen = map_to_image(seen_by_model.astype(np.float32), width, height, 128, 112, crop)
    left, top, right, bottom = crop_box(width, height, 128, 112, crop)
    assert seen.sum() == pytest.approx((right - left) * (bottom - top), rel=0.03)
    inside = values[seen]
    correlation = np.corrcoef(inside, pattern[seen].astype(np.float32))[0, 1]
    assert correlation > 0.97 and np.abs(inside - pattern[seen]).mean() < 8
    assert (crop == "none") == bool(seen.all())


def test_overlay_has_the_image_size_and_a_colour_bar_with_the_threshold():
    import numpy as np
    from patchcore_lib.detectors.overlays import render_overlay

    image = Image.new("RGB", (300, 200), (100, 100, 100))
    amap = np.zeros((112, 112), dtype=np.float32)
    amap[40:60, 40:60] = 2.0
    picture = render_overlay(image, amap, 128, 112, "center", 0.0, 2.0, 1.0)
    assert picture.shape[0] == 200 and picture.shape[1] > 300 and picture.dtype == np.uint8
    assert (picture[100, :20] < 60).all()  # left of the crop: dimmed, never coloured
    bar = picture[:, 300:318]
    assert bar[2, 9, 0] > 100 and bar[-3, 9, 2] > 100  # red (high) at the top, blue (low) at the bottom
    assert (bar[96:104, 9] > 240).all(axis=-1).sum() >= 2  # the threshold line at half height (1.0 of 0..2)


# --- issue 31, 3: start-up without torch (the times themselves: benchmarks/startup.py) -----------------------------
@pytest.mark.subprocess
def test_import_version_and_help_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, io, contextlib\n"
            "import patchcore_lib\n"
            "assert 'torch' not in sys.modules, 'import patchcore_lib imported torch'\n"
            "from patchcore_lib.cli import main\n"
            "for argv in (['--version'], ['--help']):\n"
            "    try:\n"
            "        with contextlib.redirect_stdout(io.StringIO()):\n"
            "            main(argv)\n"
            "    except SystemExit:\n"
            "        pass\n"
            "    assert 'torch' not in sys.modules, f'patchcore {argv[0]} imported torch'\n"
            "assert patchcore_lib.PatchCore.__name__ == 'PatchCore' and 'torch' in sys.modules\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
