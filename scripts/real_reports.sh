#!/usr/bin/env bash
# Regenerate every committed real-data report from the committed code, then the README's result tables:
#   bash scripts/real_reports.sh [MVTEC_AD_ROOT [MAGNETIC_TILE_ROOT]]
# (defaults: ../shared/data/mvtec_ad and ../shared/data, the data folders beside this checkout).
#  1. the notebook study (params/real_reports.yaml: bottle from MVTEC_AD_ROOT, magnetic_tile from
#     MAGNETIC_TILE_ROOT) into reports/: executed notebooks + HTML, run folders, reports/summary.*;
#  2. the magnetic-tile geometry variants (patchcore evaluate) into reports/magnetic_tile_variants/<name>/;
#  3. README.md's results block from those reports (python -m patchcore_lib.study.readme).
# Runs already complete with the same code, parameters and data are skipped (--force re-runs: pass it as
# a third argument). Several hours on 2 CPU cores; minutes on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
MVTEC=${1:-../shared/data/mvtec_ad}
TILES=${2:-../shared/data}
FORCE=${3:-}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || bash scripts/setup_env.sh
$PY -m patchcore_lib.study -f params/real_reports.yaml --data-root "$MVTEC" "$TILES" $FORCE
variant() {  # name, then patchcore evaluate options
  name=$1; shift
  $PY -m patchcore_lib evaluate --data-root "$TILES" --category magnetic_tile --quiet \
      --out "reports/magnetic_tile_variants/$name" $( [ "$FORCE" = --force ] && echo --no-resume ) "$@"
}
# 1% coreset for all variants (keeps each run short); efficientnet_lite0 (offline weights)
variant A_center224 --coreset-ratio 0.01 --resize 256 --imagesize 224 --crop center
variant B_none224 --coreset-ratio 0.01 --resize 224 --imagesize 224 --crop none
variant C_none320 --coreset-ratio 0.01 --resize 320 --imagesize 320 --crop none
$PY -m patchcore_lib.study.readme
