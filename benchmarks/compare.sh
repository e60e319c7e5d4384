#!/usr/bin/env bash
# Compare one benchmark between two git commits, side by side, in one run (issue 31).
#
#   bash benchmarks/compare.sh OLD [NEW] [-- BENCHMARK COMMAND ...]
#
#   OLD   a commit (hash, branch, tag, HEAD~3, ...): checked out into a temporary `git worktree` (detached; removed
#         at the end; the working tree, the index and the branches are left alone)
#   NEW   a commit, also checked out into a temporary worktree, or `.` (the default): this working tree as it is,
#         uncommitted changes included
#   BENCHMARK COMMAND  default: python -m benchmarks.run --data-root ../shared/data/mvtec_ad --category bottle
#         --backbone efficientnet_lite0. `python` is replaced by $PYTHON; arguments naming an existing file or folder
#         relative to the repository root are made absolute; `--out FILE` is appended (the command must write its
#         JSON result there, as every `benchmarks.run` mode does).
#
# Both commits run with the same interpreter ($PYTHON, default .venv/bin/python of this repository) and
# PYTHONPATH=<that commit's tree>, from that tree (its own benchmark code and library: what the commit would
# measure if checked out). They alternate OLD, NEW, OLD, NEW (ROUNDS=2 pairs by default), so both see the same
# machine state (caches, other load, thermal state); each value below is the median over the rounds.
#
# Output: a table of fit seconds, coreset seconds and extract seconds (stages of the fit), predict seconds per
# image, peak RSS of the fit and of the predict (GiB; a commit whose benchmark predates per-row memory reports its
# whole-process peak, marked *), for OLD and NEW, and NEW/OLD (< 1: NEW is faster / smaller). The JSON results of
# every round stay in OUTDIR (default: a temporary folder, printed).
#
# Environment: PYTHON, ROUNDS (pairs, default 2), OUTDIR, KEEP_WORKTREES=1 (do not remove the worktrees).
# Example: bash benchmarks/compare.sh HEAD                 # the last commit against the uncommitted changes
#          bash benchmarks/compare.sh v0.1.0 main -- python -m benchmarks.run synthetic --n 100000 --dim 1024
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
OLD=$1; shift
NEW=.
if [ $# -ge 1 ] && [ "$1" != "--" ]; then NEW=$1; shift; fi
[ $# -ge 1 ] && [ "$1" = "--" ] && shift
if [ $# -ge 1 ]; then COMMAND=("$@"); else
  COMMAND=(python -m benchmarks.run --data-root ../shared/data/mvtec_ad --category bottle --backbone efficientnet_lite0)
fi
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=$(command -v python3)
ROUNDS=${ROUNDS:-2}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/compare.XXXXXX")
OUTDIR=${OUTDIR:-$WORK/results}
mkdir -p "$OUTDIR"
WORKTREES=()
cleanup() {
  if [ "${KEEP_WORKTREES:-0}" != 1 ]; then
    for tree in "${WORKTREES[@]}"; do git -C "$REPO" worktree remove --force "$tree" >/dev/null 2>&1 || true; done
    git -C "$REPO" worktree prune >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

TREE=
tree_of() {  # tree_of REV LABEL: sets TREE, the folder whose code runs for REV (not in a subshell: WORKTREES)
  local rev=$1 label=$2
  if [ "$rev" = "." ]; then TREE=$REPO; return; fi
  if ! git -C "$REPO" rev-parse --verify --quiet "$rev^{commit}" >/dev/null; then
    echo "compare.sh: unknown commit '$rev'" >&2; exit 2
  fi
  TREE=$WORK/$label
  git -C "$REPO" worktree add --detach --quiet "$TREE" "$rev" >&2
  WORKTREES+=("$TREE")
}
describe() { if [ "$1" = "." ]; then echo "working tree ($(git -C "$REPO" rev-parse --short HEAD)+changes)"; else
  echo "$1 ($(git -C "$REPO" rev-parse --short "$1^{commit}"))"; fi; }
tree_of "$OLD" old; OLD_TREE=$TREE
tree_of "$NEW" new; NEW_TREE=$TREE

# the command with $PYTHON and absolute paths (it runs from each commit's tree)
ARGS=()
for arg in "${COMMAND[@]}"; do
  if [ ${#ARGS[@]} -eq 0 ] && { [ "$arg" = python ] || [ "$arg" = python3 ]; }; then ARGS+=("$PYTHON")
  elif [ "${arg#/}" = "$arg" ] && [ "${arg#-}" = "$arg" ] && [ -e "$REPO/$arg" ]; then
    ARGS+=("$(cd "$REPO" && realpath "$arg")")
  else ARGS+=("$arg"); fi
done

run_one() {  # run_one LABEL TREE ROUND
  local label=$1 tree=$2 round=$3 out=$OUTDIR/$1_$3.json
  echo "== round $round, $label: ${ARGS[*]} (in $tree)" >&2
  local start=$SECONDS
  (cd "$tree" && PYTHONPATH="$tree${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 "${ARGS[@]}" --out "$out") \
    > "$OUTDIR/$1_$3.log" 2>&1 || { echo "compare.sh: $label failed (round $round); log: $OUTDIR/$1_$3.log" >&2
                                     tail -20 "$OUTDIR/$1_$3.log" >&2; exit 1; }
  echo "   done in $((SECONDS - start)) s" >&2
}
for round in $(seq 1 "$ROUNDS"); do
  run_one old "$OLD_TREE" "$round"
  run_one new "$NEW_TREE" "$round"
done

"$PYTHON" - "$OUTDIR" "$ROUNDS" "$(describe "$OLD")" "$(describe "$NEW")" <<'EOF'
import json, statistics, sys
from pathlib import Path

outdir, rounds, old_name, new_name = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]


def values(result):
    """(value, whole-process fallback used) per quantity of one benchmark result (any benchmarks.run mode)."""
    stages = result.get("fit_stages") or result.get("stages") or {}
    rows = result.get("rows") or []
    fit = result.get("fit_seconds")
    if fit is None and rows:
        fit = sum(r.get("fit_seconds", 0.0) for r in rows)
    if fit is None and "total_seconds" in result:
        fit = sum(stages.get(k, 0.0) for k in ("extract_seconds", "coreset_seconds", "index_seconds"))
    predict = result.get("predict_seconds_per_image")
    if predict is None and rows:
        predict = statistics.mean(r["predict_seconds_per_image"] for r in rows if "predict_seconds_per_image" in r)
    if predict is None and result.get("test_images"):
        predict = stages.get("predict_seconds", float("nan")) / result["test_images"]
    out = {"fit seconds": (fit, False), "  coreset seconds": (stages.get("coreset_seconds"), False),
           "  extract seconds": (stages.get("extract_seconds"), False), "predict s / image": (predict, False)}
    fit_peak = result.get("fit_peak_rss_gib")
    if fit_peak is None and rows and "peak_rss_above_start_gib" in rows[0]:  # synthetic rows: each row's own peak
        fit_peak = max(r["peak_rss_gib"] for r in rows)
    process_peak = result.get("peak_rss_gib", max([r.get("peak_rss_gib", 0.0) for r in rows], default=None))
    out["fit peak RSS GiB"] = (fit_peak, False) if fit_peak is not None else (process_peak, True)
    predict_peak = result.get("predict_peak_rss_gib")
    out["predict peak RSS GiB"] = (predict_peak, False) if predict_peak is not None else (None, False)
    if "peak_gpu_gib" in result:
        out["peak GPU GiB"] = (result["peak_gpu_gib"], False)
    return out


def median(label):
    per_round = [values(json.loads((outdir / f"{label}_{r}.json").read_text())) for r in range(1, rounds + 1)]
    table = {}
    for key in per_round[0]:
        found = [row[key][0] for row in per_round if row.get(key, (None,))[0] is not None]
        table[key] = (statistics.median(found) if found else None, any(row[key][1] for row in per_round),
                      found)
    return table


old, new = median("old"), median("new")


def cell(entry):
    value, fallback, _ = entry
    return "-" if value is None else f"{value:.3f}{'*' if fallback else ''}"


print(f"\nOLD = {old_name}\nNEW = {new_name}\n{rounds} rounds each, alternating OLD, NEW; medians\n")
print(f"{'':<22} {'OLD':>10} {'NEW':>10} {'NEW/OLD':>8}   rounds OLD | NEW")
for key in old:
    a, b = old[key], new.get(key, (None, False, []))
    ratio = f"{b[0] / a[0]:.2f}" if a[0] and b[0] is not None else "-"
    spread = " ".join(f"{v:.3g}" for v in a[2]) + " | " + " ".join(f"{v:.3g}" for v in b[2])
    print(f"{key:<22} {cell(a):>10} {cell(b):>10} {ratio:>8}   {spread}")
if any(entry[1] for entry in list(old.values()) + list(new.values())):
    print("\n* the whole benchmark process's peak (that commit's benchmark has no per-row memory)")
print(f"\nresults: {outdir}")
EOF
