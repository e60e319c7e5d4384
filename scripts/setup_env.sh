#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv and install the project into it.
# Re-running is cheap: a stamp file records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first, pinned: the CPU/CUDA wheel of this exact version (never a newer one)
  "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  # faiss-cpu ([faiss]) here; on a CUDA machine use [gpu] (faiss-gpu) INSTEAD of [faiss], never both
  "$VENV/bin/python" -m pip install -q -e ".[study,lite,test,lab,faiss,export,cluster]"
  "$VENV/bin/python" -m ipykernel install --user --name patchcore --display-name "Python (patchcore)" >/dev/null
  touch "$STAMP"
fi
