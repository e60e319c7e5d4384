"""Image AUROC of ``score="reweighted"`` (paper Eq. 7) with one memory bank under both search distances.

Issue 13: Eq. 7 uses Euclidean distances whatever distance the patch maps use, so the image scores (and
the AUROC) must be identical under ``distance="sqeuclidean"`` and ``"euclidean"``. This loads one fitted
model file (``patchcore fit``), scores the category's test split under each distance and prints both
AUROCs and the largest relative difference of the image scores.

    python -m benchmarks.reweighted_distances --model mt.pt --data-root ../shared/data --category magnetic_tile

Each distance's row carries the peak memory of loading the model and scoring the split (GiB,
:class:`benchmarks.memory.PeakMemory`): ``memory_<distance>`` with ``peak_rss_gib`` and ``peak_rss_above_start_gib``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.memory import PeakMemory
from patchcore_lib.data.layouts import open_split
from patchcore_lib.detectors.patchcore import MODEL_FORMAT, PatchCore, read_model_file
from patchcore_lib.evaluation.metrics import image_auroc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--neighbourhood", type=int, default=None, help="b of Eq. 7 (default: the model's)")
    args = parser.parse_args()
    state = read_model_file(Path(args.model), MODEL_FORMAT)
    results: dict[str, object] = {}
    scores: dict[str, np.ndarray] = {}
    for distance in ("sqeuclidean", "euclidean"):
        config = dict(state["config"], distance=distance, score="reweighted")
        if args.neighbourhood is not None:
            config["reweight_neighbourhood"] = args.neighbourhood
        with PeakMemory() as memory:
            model = PatchCore.from_state(dict(state, config=config), args.model)
            test = open_split(args.data_root, args.category, "test", model.config.resize, model.config.imagesize)
            predictions = model.predict_dataset(test, show_progress=True)
        results[f"memory_{distance}"] = memory.as_dict()
        scores[distance] = predictions.scores
        results[f"image_auroc_reweighted_{distance}"] = image_auroc(predictions.labels, predictions.scores)
        results["reweight_neighbourhood"] = model.config.reweight_neighbourhood
        del model, predictions  # the next distance's row starts without this one's model
    difference = np.abs(scores["sqeuclidean"] - scores["euclidean"]) / np.abs(scores["euclidean"]).clip(1e-12)
    results["largest_relative_score_difference"] = float(difference.max())
    results["images"] = int(len(scores["euclidean"]))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
