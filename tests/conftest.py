"""Shared fixtures: small synthetic datasets generated once per session (real PNG files), read only by the
tests (they write into their own folders). Shared constants (ROOT, FAST, ...) are in helpers.py."""
from __future__ import annotations

import os
from pathlib import Path

# OpenMP threads that wait by sleeping, not spinning: on a 2-core machine shared with other work, spinning threads
# made the fast loop ~1.4x slower (read by libgomp when torch loads, so before the import; also in child processes)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

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


@pytest.fixture(scope="session")
def notebook_root(tmp_path_factory) -> Path:
    """The smaller texture dataset the notebook and study tests run on: category 'tiny', 8 train, 3 good + 2 per
    defect type test images at 96 px."""
    from patchcore_lib.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("notebook_data")
    make_synthetic_dataset(root, category="tiny", kind="texture", n_train=8, n_test_good=3, n_test_per_defect=2,
                           image_size=96, seed=0)
    return root


@pytest.fixture(scope="session")
def three_categories_root(tmp_path_factory) -> Path:
    """Categories cat_a, cat_b, cat_c (6 train, 2 good + 1 per defect type test images at 64 px, seeds 0, 1, 2): for
    runs that are stopped between categories."""
    from patchcore_lib.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("three_categories")
    for index, name in enumerate(("cat_a", "cat_b", "cat_c")):
        make_synthetic_dataset(root, category=name, n_train=6, n_test_good=2, n_test_per_defect=1, image_size=64,
                               seed=index)
    return root
