#!/usr/bin/env bash
# The inspection-line figures of issues 13 and 15 for one category, on CPU:
#   fit with a threshold calibrated on normal images only, predict the test split (images/s),
#   the calibrated threshold's false-alarm and miss rates on the test split, the ONNX export's
#   largest score difference, and Eq. 7's image AUROC under both search distances.
# Usage: bash scripts/measure_inspection_line.sh DATA_ROOT CATEGORY OUT_DIR [fit options...]
# Writes OUT_DIR/summary.json (what the table of docs/inspection_line.md shows; scripts/real_reports.sh copies it
# to reports/inspection_line/CATEGORY.json).
set -euo pipefail
root=${1:?DATA_ROOT}; category=${2:?CATEGORY}; out=${3:?OUT_DIR}; shift 3
mkdir -p "$out"
export PYTHONUNBUFFERED=1
seconds() { python -c 'import sys,time; print(f"{time.time()-float(sys.argv[1]):.1f}")' "$1"; }

start=$(date +%s.%N)
patchcore fit --train "$root/$category/train" --out "$out/model.pt" --quiet "$@"
echo "fit_seconds $(seconds "$start")" | tee "$out/times.txt"

start=$(date +%s.%N)
patchcore predict --model "$out/model.pt" "$root/$category/test" --out "$out/predict" --no-resume --quiet
predict_seconds=$(seconds "$start")
echo "predict_seconds $predict_seconds" | tee -a "$out/times.txt"

python - "$out" "$predict_seconds" <<'PY' | tee "$out/threshold_rates.json"
import csv, json, sys
from pathlib import Path
out, seconds = Path(sys.argv[1]), float(sys.argv[2])
rows = list(csv.DictReader(open(out / "predict" / "predictions.csv")))
normal = [r for r in rows if Path(r["path"]).parent.name == "good"]
defect = [r for r in rows if Path(r["path"]).parent.name != "good"]
flag = lambda r: r["is_anomalous"].strip().lower() in ("true", "1")
print(json.dumps({"threshold": float(rows[0]["threshold"]), "images": len(rows),
                  "images_per_second_with_overlays": len(rows) / seconds,
                  "false_alarms": sum(map(flag, normal)), "normal_images": len(normal),
                  "false_alarm_rate": sum(map(flag, normal)) / len(normal),
                  "misses": sum(not flag(r) for r in defect), "defect_images": len(defect),
                  "miss_rate": sum(not flag(r) for r in defect) / len(defect)}, indent=2))
PY

start=$(date +%s.%N)
patchcore export --model "$out/model.pt" --format onnx --out "$out/model.onnx" \
    --data-root "$root" --category "$category" --quiet 2>&1 | tee "$out/export.txt"
echo "export_seconds $(seconds "$start")" | tee -a "$out/times.txt"

# the exported ONNX model through `patchcore predict` (onnxruntime, no torch on that path): its scores against the
# .pt model's predictions above, image by image, and its images/s with overlays
start=$(date +%s.%N)
patchcore predict --model "$out/model.onnx" "$root/$category/test" --out "$out/predict_onnx" --no-resume --quiet
onnx_seconds=$(seconds "$start")
python - "$out" "$onnx_seconds" <<'PY' | tee "$out/onnx_predict.json"
import csv, json, sys
from pathlib import Path
out, seconds = Path(sys.argv[1]), float(sys.argv[2])
torch_rows = {r["sha256"]: float(r["score"]) for r in csv.DictReader(open(out / "predict" / "predictions.csv"))}
onnx_rows = {r["sha256"]: float(r["score"]) for r in csv.DictReader(open(out / "predict_onnx" / "predictions.csv"))}
assert torch_rows.keys() == onnx_rows.keys(), "the two predict runs scored different images"
worst = max(abs(onnx_rows[k] - v) / max(abs(v), 1e-12) for k, v in torch_rows.items())
print(json.dumps({"onnx_predict_images": len(onnx_rows), "onnx_predict_max_relative_difference": worst,
                  "onnx_predict_images_per_second_with_overlays": len(onnx_rows) / seconds}, indent=2))
PY

python -m benchmarks.reweighted_distances --model "$out/model.pt" --data-root "$root" \
    --category "$category" | tee "$out/reweighted_distances.json"

python - "$out" "$category" <<'PY'
import json, re, sys
from pathlib import Path
out, category = Path(sys.argv[1]), sys.argv[2]
times = dict(line.split() for line in (out / "times.txt").read_text().splitlines())
rates = json.loads((out / "threshold_rates.json").read_text())
export = re.search(r"checked (\d+) images: largest score difference ([0-9.e+-]+) relative",
                   (out / "export.txt").read_text())
summary = {"category": category, **{k: float(v) for k, v in times.items()}, **rates,
           "export_format": "onnx", "export_images": int(export.group(1)),
           "export_max_relative_difference": float(export.group(2)),
           **json.loads((out / "onnx_predict.json").read_text()),
           **json.loads((out / "reweighted_distances.json").read_text())}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
PY
