#!/usr/bin/env bash
# One command from a fresh clone: set up .venv (scripts/setup_env.sh), then run the whole notebook study
# offline on the embedded synthetic dataset (params/quick.yaml). Executed notebooks + HTML go to
# reports/executed/, figures/tables to reports/<notebook>/<run-id>/, the table to reports/summary.md.
# Extra arguments go to the runner, e.g.:  bash scripts/study.sh --force
#                                          PRESET=params/paper_im224_wr50.yaml bash scripts/study.sh --data-root DIR
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
start=$(date +%s)
.venv/bin/python -m patchcore_lib.study -f "${PRESET:-params/quick.yaml}" "$@"
echo "study finished in $(( $(date +%s) - start )) s (set-up excluded)"
