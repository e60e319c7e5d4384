"""Tests of patchcore_lib.components.sampling (memory-bank subsamplers)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from patchcore_lib.errors import ConfigError
from patchcore_lib.components.sampling import (
    SAMPLER_NAMES,
    ApproximateGreedyCoresetSampler,
    GreedyCoresetSampler,
    IdentitySampler,
    RandomSampler,
    Sampler,
    make_sampler,
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The loops run many small ops: on a busy shared machine one thread is much faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- plain reference
def reference_approx_greedy(reduced: torch.Tensor, start_points, count: int) -> list:
    """Plain official approximate-greedy loop over the full running-distance vector.

    Distances: sqrt(clamp(-2 a.b + |a|^2 + |b|^2, 0)) with a.b = a @ b (BLAS, like the official mm), |a|^2 = (a * a).sum(1).
    Start distance = mean over the start points; then argmax / running min, ``count`` times.
    """
    sq = (reduced * reduced).sum(1)

    def dist(j: int) -> torch.Tensor:
        s = reduced[j]
        return (-2 * (reduced @ s) + sq + sq[j]).clamp_min(0).sqrt()

    running = torch.stack([dist(int(j)) for j in start_points], dim=-1).mean(-1)
    selected = []
    for _ in range(count):
        idx = int(torch.argmax(running))
        selected.append(idx)
        running = torch.minimum(running, dist(idx))
    return selected


def coverage_radius(points: torch.Tensor, selected: torch.Tensor) -> float:
    """max over points of the distance to the nearest selected point."""
    return float(torch.cdist(points.double(), points[selected].double()).min(1).values.max())


def clustered(n: int, d: int, centres: int, seed: int, spread: float = 0.05) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centres, d, generator=g) * 3
    labels = torch.randint(0, centres, (n,), generator=g)
    return (c[labels] + spread * torch.randn(n, d, generator=g)).float()


def _compare(features: torch.Tensor, ratio: float, pruning, seed: int = 0, num_start: int = 10) -> None:
    sampler = ApproximateGreedyCoresetSampler(
        ratio, seed=seed, num_starting_points=num_start, show_progress=False, pruning=pruning
    )
    reduced = sampler.project(features)
    starts = sampler.start_points(len(features))
    count = max(1, int(len(features) * ratio))
    expected = reference_approx_greedy(reduced, starts.tolist(), count)
    got = sampler.select(features)  # seeded projection / starts == the ones above
    assert got.dtype == torch.long and got.device.type == "cpu"
    assert got.tolist() == expected


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    "kind,n,d,ratio",
    [
        ("uniform", 3000, 64, 0.01),
        ("uniform", 3001, 256, 0.1),  # N % 4 != 0: BLAS computes the last rows with its tail kernel
        ("gauss", 3003, 128, 0.3),
        ("clustered", 3000, 64, 0.3),
        ("clustered", 3000, 256, 0.1),
        ("duplicates", 3000, 64, 0.3),
        ("near_duplicates", 3000, 64, 0.3),
        ("far_from_origin", 3000, 64, 0.3),  # rounding of |x|^2 dominates: needs the screen's margins
    ],
)
def test_approx_greedy_equals_reference(kind, n, d, ratio):
    g = torch.Generator().manual_seed(n + d)
    if kind == "uniform":
        x = torch.rand(n, d, generator=g)
    elif kind == "gauss":
        x = torch.randn(n, d, generator=g) * 5 + 10
    elif kind == "clustered":
        x = clustered(n, d, 20, seed=d)
    elif kind == "far_from_origin":
        x = torch.randn(n, d, generator=g) + 300
    elif kind == "duplicates":  # only 400 distinct rows: many exact ties and zero distances
        base = torch.randn(400, d, generator=g)
        x = base[torch.randint(0, 400, (n,), generator=g)]
    else:  # 400 rows repeated with noise at the level of float32 rounding: distances are rounding noise
        base = torch.randn(400, d, generator=g) * 4
        x = base[torch.randint(0, 400, (n,), generator=g)]
        x = x + x * torch.randn(n, d, generator=g) * 2.0**-22
    _compare(x, ratio, pruning=True)


def test_approx_greedy_plain_path_equals_reference():
    x = clustered(2000, 32, 8, seed=3)
    _compare(x, 0.1, pruning=False)
    _compare(x, 0.1, pruning=None)


def test_approx_greedy_more_selected_than_distinct_points():
    # 50 distinct rows, 300 selections: the running distance reaches 0 everywhere (all ties)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g)[torch.randint(0, 50, (3000,), generator=g)]
    _compare(x, 0.1, pruning=True)


def test_approx_greedy_explicit_projection_and_starts():
    x = clustered(1500, 48, 6, seed=7)
    sampler = ApproximateGreedyCoresetSampler(0.05, show_progress=False, pruning=True)
    proj = torch.randn(48, 128, generator=torch.Generator().manual_seed(5))
    starts = [3, 99, 1400]
    expected = reference_approx_greedy(x @ proj, starts, 75)
    assert sampler.select(x, projection=proj, start_points=starts).tolist() == expected


def test_no_projection_when_dim_matches():
    x = torch.randn(100, 128)
    sampler = ApproximateGreedyCoresetSampler(0.1, show_progress=False)
    assert sampler.projection_matrix(128) is None
    assert torch.equal(sampler.project(x), x)


# ----------------------------------------------------------------------------- exact greedy
def test_exact_greedy_points_on_a_line():
    # a linear map preserves distance ratios of collinear points, so the order is hand-checkable:
    # 10 is farthest from everything (largest row norm); then 0 (10 away); then 3 (3 from 0, 7 from 10)
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    sampler = GreedyCoresetSampler(0.6, show_progress=False)
    assert sampler.select(x).tolist() == [4, 0, 3][: max(1, int(5 * 0.6))]
    assert GreedyCoresetSampler(0.99, show_progress=False).select(x).tolist()[:3] == [4, 0, 3]


def test_exact_greedy_memory_limit():
    x = torch.randn(1000, 4)
    with pytest.raises(ConfigError, match="approx_greedy"):
        GreedyCoresetSampler(0.1, show_progress=False, max_matrix_bytes=1000 * 1000 * 4 - 1).select(x)


# ----------------------------------------------------------------------------- coverage
@pytest.mark.parametrize("d", [16, 128])
def test_greedy_covers_better_than_random(d):
    # coverage is measured in the projected space the greedy samplers work in (identity for d=128)
    g = torch.Generator().manual_seed(11)
    x = torch.rand(1500, 3, generator=g) @ torch.randn(3, d, generator=g)  # a 3-d cube embedded in d dims
    ratio = 0.05
    for sampler in (
        GreedyCoresetSampler(ratio, show_progress=False),
        ApproximateGreedyCoresetSampler(ratio, show_progress=False),
    ):
        space = sampler.project(x)
        rnd = coverage_radius(space, RandomSampler(ratio).select(x))
        assert coverage_radius(space, sampler.select(x)) < 0.9 * rnd


# ----------------------------------------------------------------------------- api / errors
@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, float("nan")])
@pytest.mark.parametrize("name", ["random", "greedy", "approx_greedy"])
def test_bad_ratio(name, ratio):
    with pytest.raises(ConfigError, match="coreset ratio must be in"):
        make_sampler(name, ratio)


def test_bad_ratio_message_names_value():
    with pytest.raises(ConfigError, match=r"\(0, 1\], got 1.5"):
        RandomSampler(1.5)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        make_sampler("kmeans", 0.1)
    for name in SAMPLER_NAMES:
        assert name in str(info.value)


def test_empty_features():
    for name in SAMPLER_NAMES:
        with pytest.raises(ConfigError):
            make_sampler(name, 0.5, show_progress=False).select(torch.empty(0, 8))


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_number_selected_and_run(name):
    x = torch.randn(1001, 12)
    sampler = make_sampler(name, 0.1, show_progress=False)
    assert isinstance(sampler, Sampler)
    idx = sampler.select(x)
    expected = 1001 if name == "identity" else int(1001 * 0.1)
    assert idx.shape == (expected,) and idx.dtype == torch.long
    assert len(set(idx.tolist())) == expected
    assert torch.equal(sampler.run(x), x[idx])


@pytest.mark.parametrize("name", ["random", "greedy", "approx_greedy"])
def test_at_least_one_and_ratio_one(name):
    x = torch.randn(5, 3)
    assert make_sampler(name, 0.01, show_progress=False).select(x).numel() == 1
    assert make_sampler(name, 1.0, show_progress=False).select(x).tolist() == [0, 1, 2, 3, 4]
    assert make_sampler(name, 1.0, show_progress=False).run(x) is x


@pytest.mark.parametrize("name", ["random", "greedy", "approx_greedy"])
def test_seed_determinism(name):
    x = clustered(800, 20, 5, seed=1, spread=1.0)
    a = make_sampler(name, 0.1, seed=3, show_progress=False).select(x)
    b = make_sampler(name, 0.1, seed=3, show_progress=False).select(x)
    c = make_sampler(name, 0.1, seed=4, show_progress=False).select(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_identity_sampler():
    x = torch.randn(7, 3)
    assert IdentitySampler().run(x) is x


# ----------------------------------------------------------------------------- memory / speed
def test_approx_greedy_no_n_by_n_matrix():
    # N*N*4 bytes = 160 GB: only works if no N x N matrix is ever built
    n = 200_000
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    idx = ApproximateGreedyCoresetSampler(0.001, projection_dim=16, show_progress=False).select(x)
    assert idx.shape == (200,) and len(set(idx.tolist())) == 200
    assert time.perf_counter() - t0 < 20


@pytest.mark.parametrize("duplicates", [False, True])
def test_device_stepped_loop_equals_the_plain_loop(duplicates):
    """The graph-capturable loop (state on the device, counter as a tensor), run eagerly here, selects what
    the plain loop selects, ties and more selections than distinct points included."""
    from patchcore_lib.components.coreset_kernels import _greedy_plain, _greedy_stepped, squared_norms_chunked

    x = clustered(3000, 16, 6, seed=5)
    if duplicates:
        x = torch.cat([x[:40]] * 5)  # 40 distinct points, 200 rows, 150 selections
    count = 150 if duplicates else 300
    x_sq = squared_norms_chunked(x)
    start = x_sq.sqrt()
    plain = _greedy_plain(x, x_sq, start.clone(), count, range(count), {})
    stats: dict = {}
    stepped = _greedy_stepped(x, x_sq, start.clone(), count, None, stats, use_graph=False, steps_per_graph=7)
    assert torch.equal(stepped, plain) and stats["cuda_graph"] is False and stats["iterations"] == count
