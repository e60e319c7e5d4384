"""Shared fixtures: small synthetic datasets generated once per session (real PNG files)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small texture dataset in MVTec layout: 12 train, 4 good + 3 per defect type test images at 128 px."""
    from patchcore_lib.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, category="tiny", kind="texture", n_train=12, n_test_good=4, n_test_per_defect=3,
                           image_size=128, seed=0)
    return root


@pytest.fixture(scope="session")
def default_synthetic(tmp_path_factory) -> tuple[Path, str]:
    """The embedded default dataset (as notebooks use it), generated into a temporary cache."""
    from patchcore_lib.data.synthetic import ensure_default_dataset

    root = tmp_path_factory.mktemp("default_synthetic")
    return ensure_default_dataset(root)
