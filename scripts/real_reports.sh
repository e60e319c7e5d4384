#!/usr/bin/env bash
# Regenerate every committed real-data report from the committed code, then the result tables of README.md and docs/:
#   bash scripts/real_reports.sh [MVTEC_AD_ROOT [MAGNETIC_TILE_ROOT]]
# (defaults: ../shared/data/mvtec_ad and ../shared/data, the data folders beside this checkout).
#  1. variants (patchcore evaluate) into reports/variants/<name>/: the magnetic-tile geometries, bottle with
#     the official anchor's embedding dimensions under both mask conventions; Eq. 7 under both distances;
#  2. the inspection-line measurements (scripts/measure_inspection_line.sh) into reports/inspection_line/;
#  3. the notebook study (params/real_reports.yaml: bottle from MVTEC_AD_ROOT, magnetic_tile from
#     MAGNETIC_TILE_ROOT) into reports/: executed notebooks + HTML, run folders, reports/summary.*;
#  4. the results blocks of README.md and docs/ from those reports (python -m patchcore_lib.study.readme).
# Runs already complete with the same code, parameters and data are skipped (--force re-runs: pass it as
# a third argument). Several hours on 2 CPU cores; minutes on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
MVTEC=${1:-../shared/data/mvtec_ad}
TILES=${2:-../shared/data}
FORCE=${3:-}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || bash scripts/setup_env.sh
variant() {  # name, data root, category, then patchcore evaluate options
  name=$1; root=$2; category=$3; shift 3
  $PY -m patchcore_lib evaluate --data-root "$root" --category "$category" --quiet \
      --out "reports/variants/$name" $( [ "$FORCE" = --force ] && echo --no-resume ) "$@"
}
# the magnetic-tile geometry (docs/study.md "The magnetic-tile gap"): 1% coreset and 1024 -> 1024 embeddings for all,
# as the official code's run on these tiles (patchcore_lib/paper/data/anchors_measured.csv), so only the geometry changes
D1024="--pretrain-embed-dimension 1024 --target-embed-dimension 1024"
if [ -z "${SKIP_VARIANTS:-}" ]; then   # SKIP_VARIANTS=1: leave reports/variants as they are
variant mt_A_center224 "$TILES" magnetic_tile --coreset-ratio 0.01 $D1024 --resize 256 --imagesize 224 --crop center
variant mt_B_none224 "$TILES" magnetic_tile --coreset-ratio 0.01 $D1024 --resize 224 --imagesize 224 --crop none
variant mt_C_none320 "$TILES" magnetic_tile --coreset-ratio 0.01 $D1024 --resize 320 --imagesize 320 --crop none
# bottle as the official code's anchor runs (1024 -> 1024 embeddings) under both mask conventions
variant bottle_D1024_masks-nearest "$MVTEC" bottle $D1024
variant bottle_D1024_masks-official "$MVTEC" bottle $D1024 --mask-convention official
fi
# The records below (Eq. 7 check, inspection line) carry the fingerprint of the library code they ran ("code");
# one made by other code is measured again (the variants above resume on the evaluation's own code fingerprint).
CODE=$($PY -m patchcore_lib.utils.source_fingerprint patchcore_lib.cli benchmarks.reweighted_distances)
current() { [ -f "$1" ] && [ "$FORCE" != --force ] && $PY -c \
    'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("code") != sys.argv[2])' "$1" "${2:-$CODE}"; }
stamp() { $PY -c 'import json, sys; d = json.load(open(sys.argv[1])); d["code"] = sys.argv[2]
open(sys.argv[1], "w").write(json.dumps(d, indent=2) + "\n")' "$1" "${2:-$CODE}"; }
# Eq. 7 under both search distances on one memory bank of the magnetic tiles (defaults: 10% coreset)
check=reports/variants/reweighted_distances-magnetic_tile.json
if ! current "$check"; then
  work=$(mktemp -d)
  $PY -m patchcore_lib fit --train "$TILES/magnetic_tile/train" --out "$work/model.pt" --calibration-folds 0 --quiet
  $PY -m benchmarks.reweighted_distances --model "$work/model.pt" --data-root "$TILES" --category magnetic_tile \
      > "$check.tmp"
  stamp "$check.tmp" && mv "$check.tmp" "$check"
  rm -rf "$work"
fi
# the inspection line (fit with a calibrated threshold, predict, ONNX export; Eq. 7 check) on both datasets, each
# with the study's headline model settings of its category (declared once, in params/real_reports.yaml)
mkdir -p reports/inspection_line
for pair in "$MVTEC bottle" "$TILES magnetic_tile"; do
  set -- $pair
  record=reports/inspection_line/$2.json
  work=$(mktemp -d)
  $PY -m patchcore_lib.study model-settings -f params/real_reports.yaml "$2" > "$work/settings.yaml"
  SETTINGS=$($PY -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:16])' \
             "$work/settings.yaml")
  if ! current "$record" "$CODE+$SETTINGS"; then
    PATH="$(dirname "$PY"):$PATH" bash scripts/measure_inspection_line.sh "$1" "$2" "$work" \
        --config "$work/settings.yaml" > "$work.log" 2>&1
    $PY -c 'import json, sys, yaml; d = json.load(open(sys.argv[1])); d["settings"] = yaml.safe_load(open(sys.argv[2]))
open(sys.argv[1], "w").write(json.dumps(d, indent=2) + "\n")' "$work/summary.json" "$work/settings.yaml"
    cp "$work/summary.json" "$record.tmp" && stamp "$record.tmp" "$CODE+$SETTINGS" && mv "$record.tmp" "$record"
  fi
  rm -rf "$work" "$work.log"
done
[ -n "${RECORDS_ONLY:-}" ] && exit 0   # RECORDS_ONLY=1: stop after the records above (no notebook study)
# STUDY_ARGS: more options of the study runner, e.g. STUDY_ARGS="--workers 1 --threads 2" when one long notebook
# is all that is left to run
$PY -m patchcore_lib.study -f params/real_reports.yaml --data-root "$MVTEC" "$TILES" $FORCE ${STUDY_ARGS:-}
$PY -m patchcore_lib.study.readme
