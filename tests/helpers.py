"""Constants shared by the test modules (`from helpers import ROOT, FAST`); the shared fixtures are in
conftest.py."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository root
NOTEBOOKS = ROOT / "notebooks"

# A quick model: random resnet18 weights at 64 px, a 20% coreset. FAST_KWARGS for PatchCore(...), FAST for the CLI.
FAST_KWARGS = dict(backbone="resnet18", weights="random", resize=64, imagesize=64, coreset_ratio=0.2)
FAST = ["--backbone", "resnet18", "--weights", "random", "--resize", "64", "--imagesize", "64",
        "--coreset-ratio", "0.2", "--quiet"]
