"""Memory-bank subsamplers (PatchCore coreset selection).

Same semantics as the official implementation (amazon-science/patchcore-inspection,
``patchcore/sampler.py``):

* features ``[N, D]`` are projected to ``projection_dim`` dims by a random bias-free linear map
  (skipped when ``D == projection_dim``);
* distances are ``sqrt(clamp(|a|^2 + |b|^2 - 2 a.b, min=0))``;
* exact greedy: full ``N x N`` distance matrix, start distance = norm of each matrix row, then
  repeatedly take the argmax and keep the running minimum with the chosen column;
* approximate greedy: start distance = mean distance to ``num_starting_points`` random points,
  then ``int(N * ratio)`` times: select the argmax (first index on ties), running distance =
  min(running distance, distance to the selected point).

The approximate greedy sampler never builds an ``N x N`` matrix and is accelerated *exactly*:
points are grouped into compact blocks (k-means); the running distances are updated lazily, block
by block, only when a block's (stale, hence upper-bound) maximum could be the global maximum; a
selection is not applied to a block when the triangle inequality proves it cannot lower any of the
block's running distances; and the selections left are screened with one matrix product per block,
so that only those that can lower a running distance (given bounds on rounding) are computed
exactly. Every distance that updates a running distance is bit for bit the value the plain loop
computes (same BLAS matrix-vector kernel, same formula and order), so the selected indices are
identical to the plain loop's.
"""
from __future__ import annotations

import abc
import math
from typing import Optional, Sequence, Union

import numpy as np
import torch
import tqdm

from .errors import ConfigError

SAMPLER_NAMES = ("identity", "random", "greedy", "approx_greedy")

DeviceLike = Optional[Union[str, torch.device]]

_PROJECTION_CHUNK = 65536  # rows projected at a time
_WORK_ROWS = 32768  # rows processed per distance chunk (bounds temporaries)
_DEFAULT_MAX_MATRIX_BYTES = 4 * 1024**3
_BLOCKS_FACTOR = 1.0  # k-means blocks of the lazy loop ~ factor * sqrt(N)
_LAZY_CHUNK = 256  # selections applied to a block at once


# ----------------------------------------------------------------------------- helpers
def _check_ratio(ratio: float) -> float:
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise ConfigError(f"coreset ratio must be a number in (0, 1], got {ratio!r}") from None
    if isinstance(ratio, bool) or not (0.0 < value <= 1.0):  # also rejects NaN
        raise ConfigError(f"coreset ratio must be in (0, 1], got {ratio}")
    return value


def _check_features(features: torch.Tensor) -> None:
    if not isinstance(features, torch.Tensor):
        raise ConfigError(f"features must be a torch.Tensor of shape [N, D], got {type(features).__name__}")
    if features.dim() != 2:
        raise ConfigError(f"features must have shape [N, D], got shape {tuple(features.shape)}")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise ConfigError(f"cannot subsample an empty feature set (shape {tuple(features.shape)})")


def num_selected(n: int, ratio: float) -> int:
    """Number of points kept from ``n``: ``max(1, int(n * ratio))`` (all of them when ratio == 1)."""
    if ratio >= 1.0:
        return n
    return max(1, int(n * ratio))


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """Row-wise squared norms ``[..., P] -> [...]``, computed as ``(x * x).sum(-1)``."""
    return (x * x).sum(-1)


def point_distances(x: torch.Tensor, x_sq: torch.Tensor, s: torch.Tensor, s_sq: torch.Tensor) -> torch.Tensor:
    """Euclidean distances of the rows of ``x`` to one point ``s``.

    Args:
        x: ``[..., P]`` points; x_sq: ``[...]`` their :func:`squared_norms`.
        s: ``[P]`` the point; s_sq: its squared norm (0-d tensor).
    Returns:
        ``[...]`` ``sqrt(clamp(-2 x.s + |x|^2 + |s|^2, min=0))`` (official formula and order).
        The dot product is a BLAS matrix-vector product ``x @ s`` like the official ``mm``.
    """
    dot = torch.matmul(x, s)
    return (-2 * dot + x_sq + s_sq).clamp_min(0).sqrt()


def _batch_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Official batched distance matrix ``[Na, P] x [Nb, P] -> [Na, Nb]``."""
    a_sq = squared_norms(a).reshape(-1, 1)
    b_sq = squared_norms(b).reshape(1, -1)
    return (-2 * a.mm(b.T) + a_sq + b_sq).clamp(0, None).sqrt()


# ----------------------------------------------------------------------------- base classes
class Sampler(abc.ABC):
    """Subsamples a memory bank ``[N, D]``."""

    ratio: float = 1.0

    @abc.abstractmethod
    def select(self, features: torch.Tensor) -> torch.Tensor:
        """``features [N, D]`` -> LongTensor ``[M]`` of selected row indices (selection order, cpu)."""

    def run(self, features: torch.Tensor) -> torch.Tensor:
        """``features [N, D]`` -> ``features[select(features)]`` ``[M, D]`` on the features' device."""
        indices = self.select(features)
        if indices.numel() == features.shape[0] and self.ratio >= 1.0:
            return features
        return features[indices.to(features.device)]


class IdentitySampler(Sampler):
    """Keeps every feature."""

    def select(self, features: torch.Tensor) -> torch.Tensor:
        _check_features(features)
        return torch.arange(features.shape[0], dtype=torch.long)


class RandomSampler(Sampler):
    """Uniformly random subset of ``max(1, int(N * ratio))`` rows (deterministic in ``seed``)."""

    def __init__(self, ratio: float, seed: int = 0) -> None:
        self.ratio = _check_ratio(ratio)
        self.seed = int(seed)

    def select(self, features: torch.Tensor) -> torch.Tensor:
        _check_features(features)
        n = features.shape[0]
        if self.ratio >= 1.0:
            return torch.arange(n, dtype=torch.long)
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randperm(n, generator=generator)[: num_selected(n, self.ratio)]


class _ProjectingSampler(Sampler):
    """Shared random projection of the greedy samplers."""

    def __init__(self, ratio: float, seed: int, projection_dim: int, device: DeviceLike, show_progress: bool) -> None:
        self.ratio = _check_ratio(ratio)
        self.seed = int(seed)
        if int(projection_dim) < 1:
            raise ConfigError(f"projection_dim must be >= 1, got {projection_dim}")
        self.projection_dim = int(projection_dim)
        self.device = torch.device(device) if device is not None else None
        self.show_progress = bool(show_progress)

    def _device_for(self, features: torch.Tensor) -> torch.device:
        return self.device if self.device is not None else features.device

    def projection_matrix(self, dim: int) -> Optional[torch.Tensor]:
        """Random map ``[dim, projection_dim]`` ~ U(-1/sqrt(dim), 1/sqrt(dim)) from ``seed`` (cpu),
        like ``nn.Linear``'s default init; ``None`` when ``dim == projection_dim`` (no projection)."""
        if dim == self.projection_dim:
            return None
        generator = torch.Generator().manual_seed(self.seed)
        bound = 1.0 / math.sqrt(dim)
        return torch.empty(dim, self.projection_dim).uniform_(-bound, bound, generator=generator)

    def project(self, features: torch.Tensor, projection: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``features [N, D]`` -> projected ``[N, projection_dim]`` float32 on the working device.

        Computed ``65536`` rows at a time, so the input is never copied as a whole. ``projection``
        (``[D, P]``) overrides the seeded matrix.
        """
        _check_features(features)
        device = self._device_for(features)
        if projection is None:
            projection = self.projection_matrix(features.shape[1])
        if projection is None:
            out = features.to(device=device, dtype=torch.float32)
            return out.contiguous()
        if projection.shape[0] != features.shape[1]:
            raise ConfigError(
                f"projection has shape {tuple(projection.shape)}, expected [{features.shape[1]}, P]"
            )
        projection = projection.to(device=device, dtype=torch.float32)
        n = features.shape[0]
        out = torch.empty(n, projection.shape[1], dtype=torch.float32, device=device)
        with torch.no_grad():
            for start in range(0, n, _PROJECTION_CHUNK):
                chunk = features[start : start + _PROJECTION_CHUNK].to(device=device, dtype=torch.float32)
                torch.mm(chunk, projection, out=out[start : start + _PROJECTION_CHUNK])
        return out

    def _progress(self, total: int, desc: str):
        return tqdm.tqdm(range(total), desc=desc, disable=not self.show_progress, leave=False)


# ----------------------------------------------------------------------------- exact greedy
class GreedyCoresetSampler(_ProjectingSampler):
    """Exact greedy coreset (official ``GreedyCoresetSampler``): needs the full ``N x N`` matrix."""

    def __init__(
        self,
        ratio: float,
        seed: int = 0,
        projection_dim: int = 128,
        device: DeviceLike = None,
        show_progress: bool = True,
        max_matrix_bytes: int = _DEFAULT_MAX_MATRIX_BYTES,
    ) -> None:
        super().__init__(ratio, seed, projection_dim, device, show_progress)
        self.max_matrix_bytes = int(max_matrix_bytes)

    def select(self, features: torch.Tensor, projection: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``features [N, D]`` -> LongTensor ``[M]`` (cpu), ``M = max(1, int(N * ratio))``."""
        _check_features(features)
        n = features.shape[0]
        if self.ratio >= 1.0:
            return torch.arange(n, dtype=torch.long)
        if n * n * 4 > self.max_matrix_bytes:
            raise ConfigError(
                f"exact greedy coreset needs an {n} x {n} distance matrix ({n * n * 4 / 1024**3:.1f} GB, "
                f"limit {self.max_matrix_bytes / 1024**3:.1f} GB); use the 'approx_greedy' sampler instead"
            )
        with torch.no_grad():
            reduced = self.project(features, projection)
            distance_matrix = _batch_distances(reduced, reduced)
            del reduced
            running = torch.norm(distance_matrix, dim=1)
            count = num_selected(n, self.ratio)
            selected = torch.empty(count, dtype=torch.long, device=distance_matrix.device)
            for i in self._progress(count, "Greedy coreset"):
                idx = torch.argmax(running)
                selected[i] = idx
                running = torch.minimum(running, distance_matrix[:, idx])
        return selected.cpu()


# ----------------------------------------------------------------------------- approximate greedy
_MV_ROWS = 4  # MKL's sgemv computes rows in groups of 4; the last (rows % 4) rows use another kernel


def _kmeans_centres(x: torch.Tensor, k: int, seed: int, iters: int = 5, sample: int = 20_000) -> torch.Tensor:
    """Deterministic Lloyd k-means of a subsample of ``x [N, P]`` -> centres ``[k', P]`` float64 (k' <= k)."""
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed + 12345)
    m = min(n, max(sample, 16 * k))
    sub = x[torch.randperm(n, generator=gen)[:m].to(x.device)].double()
    centres = sub[torch.randperm(m, generator=gen)[:k].to(x.device)].clone()
    for _ in range(iters):
        labels = _nearest(sub, centres)
        sums = torch.zeros_like(centres).index_add_(0, labels, sub)
        counts = torch.bincount(labels, minlength=centres.shape[0]).to(sub.dtype)
        nonempty = counts > 0
        centres = sums[nonempty] / counts[nonempty, None]
    return centres


def _nearest(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of ``centres [K, P]`` for each of ``points [M, P]`` -> ``[M]`` (chunked)."""
    c_sq = squared_norms(centres)
    out = torch.empty(points.shape[0], dtype=torch.long, device=points.device)
    step = max(1024, (1 << 22) // max(1, centres.shape[0]))
    for s in range(0, points.shape[0], step):
        chunk = points[s : s + step].to(centres.dtype)
        out[s : s + step] = chunk.mm(centres.T).mul_(-2).add_(c_sq).argmin(1)
    return out


def all_point_distances(x: torch.Tensor, x_sq: torch.Tensor, s: torch.Tensor, s_sq: torch.Tensor) -> torch.Tensor:
    """:func:`point_distances` of every row of ``x [N, P]`` -> ``[N]``. On CPU in chunks of
    ``_WORK_ROWS`` rows (a multiple of 4: every row gets the same BLAS kernel, hence the same bits, as
    one full pass); on other devices in one pass (few kernel launches, and cuBLAS may choose its
    kernel by the number of rows)."""
    if x.device.type != "cpu":
        return point_distances(x, x_sq, s, s_sq)
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], _WORK_ROWS):
        end = start + _WORK_ROWS
        out[start:end] = point_distances(x[start:end], x_sq[start:end], s, s_sq)
    return out


class ApproximateGreedyCoresetSampler(_ProjectingSampler):
    """Approximate greedy coreset (official ``ApproximateGreedyCoresetSampler``), exact-pruned.

    Memory: the projected bank ``[N, projection_dim]`` float32 (and once more in block order) plus
    ``O(N)`` vectors; never an ``N x N`` matrix.
    """

    def __init__(
        self,
        ratio: float,
        seed: int = 0,
        projection_dim: int = 128,
        num_starting_points: int = 10,
        device: DeviceLike = None,
        show_progress: bool = True,
        pruning: Optional[bool] = None,
    ) -> None:
        """``pruning``: ``None`` = automatic (on CPU for N >= 32768 and >= 256 selections; never on a
        GPU), ``True`` = k-means blocks, triangle-inequality pruning and screening, ``False`` = plain
        loop over all points (same result; for testing, tiny problems and GPUs)."""
        super().__init__(ratio, seed, projection_dim, device, show_progress)
        if int(num_starting_points) < 1:
            raise ConfigError(f"num_starting_points must be >= 1, got {num_starting_points}")
        self.num_starting_points = int(num_starting_points)
        self.pruning = pruning
        self.last_stats: dict = {}  # counters of the last run (blocks, rows processed, ...)

    def start_points(self, n: int) -> torch.Tensor:
        """``min(num_starting_points, n)`` distinct random indices in ``[0, n)`` from ``seed`` -> LongTensor."""
        k = min(self.num_starting_points, n)
        rng = np.random.default_rng(self.seed)
        return torch.from_numpy(rng.choice(n, k, replace=False).astype(np.int64))

    def select(
        self,
        features: torch.Tensor,
        projection: Optional[torch.Tensor] = None,
        start_points: Optional[Union[torch.Tensor, Sequence[int]]] = None,
    ) -> torch.Tensor:
        """``features [N, D]`` -> LongTensor ``[M]`` (cpu), ``M = max(1, int(N * ratio))``.

        ``projection [D, P]`` and ``start_points [k]`` override the seeded ones.
        """
        _check_features(features)
        n = features.shape[0]
        if self.ratio >= 1.0:
            return torch.arange(n, dtype=torch.long)
        with torch.no_grad():
            # no local reference: select_projected frees the projected bank once it is re-blocked
            return self.select_projected(self.project(features, projection), start_points)

    def select_projected(
        self, reduced: torch.Tensor, start_points: Optional[Union[torch.Tensor, Sequence[int]]] = None
    ) -> torch.Tensor:
        """Greedy selection on already projected points ``reduced [N, P]`` -> LongTensor ``[M]`` (cpu)."""
        _check_features(reduced)
        n, p = reduced.shape
        count = num_selected(n, self.ratio)
        if start_points is None:
            start_points = self.start_points(n)
        start_points = torch.as_tensor(start_points, dtype=torch.long).reshape(-1)
        if start_points.numel() == 0 or int(start_points.min()) < 0 or int(start_points.max()) >= n:
            raise ConfigError(f"start points must be non-empty indices in [0, {n})")
        reduced = reduced.to(torch.float32).contiguous()
        pruning = self.pruning
        if pruning is None:
            # On CPU pruning pays off once a plain pass over the points costs more than the lazy
            # loop's per-refresh overhead and the loop is long compared with the k-means set-up
            # (measured: even at N = 40,000 with 400 selections, faster from there). On a GPU the
            # plain loop is a few kernel launches per selection with no host synchronisation, while
            # the lazy loop synchronises several times per block refresh: plain is the default.
            pruning = n >= 32768 and count >= 256 and reduced.device.type == "cpu"
        with torch.no_grad():
            x_sq = squared_norms_chunked(reduced)
            running = torch.stack(
                [all_point_distances(reduced, x_sq, reduced[j], x_sq[j]) for j in start_points.to(reduced.device)],
                dim=-1,
            ).mean(-1)
            self.last_stats = {}
            progress = self._progress(count, "Coreset")
            if not pruning:
                return _greedy_plain(reduced, x_sq, running, count, progress, self.last_stats)
            num_blocks = max(1, int(round(_BLOCKS_FACTOR * math.sqrt(n))))
            return _greedy_lazy(reduced, x_sq, running, count, num_blocks, self.seed, progress, self.last_stats)


def squared_norms_chunked(x: torch.Tensor) -> torch.Tensor:
    """:func:`squared_norms` of ``x [N, P]`` computed in chunks (bounded temporaries) -> ``[N]``."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], _WORK_ROWS):
        out[s : s + _WORK_ROWS] = squared_norms(x[s : s + _WORK_ROWS])
    return out


def _greedy_plain(
    x: torch.Tensor, x_sq: torch.Tensor, running: torch.Tensor, count: int, progress, stats: dict
) -> torch.Tensor:
    """The official loop: argmax, then running minimum with the distances of all N points."""
    selected = torch.empty(count, dtype=torch.long, device=running.device)
    for i in progress:
        idx = torch.argmax(running)  # first maximum on ties, like the official code
        selected[i] = idx
        torch.minimum(running, all_point_distances(x, x_sq, x[idx], x_sq[idx]), out=running)
    n = running.numel()
    stats.update(points=n, iterations=count, rows_processed=n * count)
    return selected.cpu()


class _Blocks:
    """The projected points regrouped into compact blocks (k-means clusters), stored contiguously.

    Block ``b`` owns rows ``offset[b] : offset[b] + length[b]`` of ``x [T, P]``, in increasing original
    index, padded with zero rows (``orig = N``) to a multiple of 4 so that BLAS computes every row with
    its main kernel. The last ``N % 4`` original rows, which a full ``x @ s`` computes with BLAS's tail
    kernel, form a block of their own, unpadded: their distances come out bit for bit as in a full pass.
    ``centre [K, P]``, ``radius [K]`` and ``max_norm [K]`` (float64) bound each block.
    """

    def __init__(self, x: torch.Tensor, x_sq: torch.Tensor, num_blocks: int, seed: int) -> None:
        n, p = x.shape
        device = x.device
        tail_start = n - n % _MV_ROWS
        centres = _kmeans_centres(x, num_blocks, seed)
        labels = _nearest(x[:tail_start], centres)
        order = torch.sort(labels, stable=True).indices  # increasing original index inside a cluster
        counts = torch.bincount(labels, minlength=centres.shape[0]).tolist()
        cap = max(16, 2 * math.ceil(n / max(1, centres.shape[0])))
        pieces: list[torch.Tensor] = []
        start = 0
        for c in counts:
            members = order[start : start + c]
            start += c
            for s in range(0, c, cap):  # oversized clusters are cut into pieces (bounds stay valid)
                pieces.append(members[s : s + cap])
        pieces = [piece for piece in pieces if piece.numel()]
        padded = [-(-piece.numel() // _MV_ROWS) * _MV_ROWS for piece in pieces]
        if tail_start < n:
            pieces.append(torch.arange(tail_start, n, device=device))
            padded.append(n - tail_start)
        self.num_blocks = len(pieces)
        self.offset = [0] * self.num_blocks
        for i in range(1, self.num_blocks):
            self.offset[i] = self.offset[i - 1] + padded[i - 1]
        self.length = padded
        self.real = [piece.numel() for piece in pieces]  # rows before the zero padding
        total = self.offset[-1] + padded[-1]
        self.x = torch.zeros(total, p, dtype=x.dtype, device=device)
        self.sq = torch.zeros(total, dtype=x.dtype, device=device)
        self.orig = torch.full((total,), n, dtype=torch.long, device=device)
        positions = torch.cat([torch.arange(o, o + piece.numel(), device=device)
                               for o, piece in zip(self.offset, pieces)])
        flat = torch.cat(pieces)
        for s in range(0, n, _WORK_ROWS):  # chunked scatter: bounded temporaries
            dst, src_rows = positions[s : s + _WORK_ROWS], flat[s : s + _WORK_ROWS]
            self.x[dst] = x[src_rows]
            self.sq[dst] = x_sq[src_rows]
            self.orig[dst] = src_rows
        self.position = torch.empty(n, dtype=torch.long, device=device)  # original index -> row
        self.position[flat] = positions
        self.centre = torch.empty(self.num_blocks, p, dtype=torch.float64, device=device)
        self.radius = torch.empty(self.num_blocks, dtype=torch.float64, device=device)
        self.max_norm = torch.empty(self.num_blocks, dtype=torch.float64, device=device)
        for b, piece in enumerate(pieces):
            pts = x[piece].double()
            centre = pts.mean(0)
            self.centre[b] = centre
            self.radius[b] = (pts - centre).norm(dim=1).max()
            self.max_norm[b] = pts.norm(dim=1).max()


def _greedy_lazy(
    x: torch.Tensor, x_sq: torch.Tensor, running: torch.Tensor, count: int, num_blocks: int, seed: int,
    progress, stats: dict,
) -> torch.Tensor:
    """The official loop, evaluated lazily per block; the selected indices are the plain loop's.

    Running distances only decrease, so a block's maximum computed before the latest selections is
    an upper bound of its current maximum. Each step refreshes only blocks whose stale maximum is the
    largest (applying the selections they have not seen yet), until the largest belongs to an
    up-to-date block: that is the global maximum. While refreshing, a selection is skipped when the
    triangle inequality proves (with margins for float rounding, including the error of the
    ``|x|^2 + |s|^2 - 2 x.s`` formula) that it cannot lower any running distance of the block.
    The remaining selections are screened with one matrix product per block (its rounding differs
    from the matrix-vector product's, so it only decides, with the same margins, which selections
    could lower a running distance: a few percent of them). Those are computed by
    :func:`point_distances`' kernel and formula on the block's rows, bit for bit the value of a full
    pass, so the running distances are the plain loop's and ties resolve as there (first index).
    """
    blocks = _Blocks(x, x_sq, num_blocks, seed)
    n, p = x.shape
    device = x.device
    rows_run = torch.full((blocks.x.shape[0],), float("-inf"), dtype=torch.float32, device=device)
    valid = blocks.orig < n
    rows_run[valid] = running[blocks.orig[valid]]
    del running
    k = blocks.num_blocks
    offset, length = blocks.offset, blocks.length
    bound = np.empty(k, dtype=np.float32)  # stale block maxima (upper bounds)
    best_row = np.empty(k, dtype=np.int64)  # row of the block maximum (first on ties)
    seen = np.zeros(k, dtype=np.int64)  # number of selections applied to the block
    orig_np = blocks.orig.cpu().numpy()
    for b in range(k):
        val, arg = rows_run[offset[b] : offset[b] + length[b]].max(0)
        bound[b], best_row[b] = float(val), offset[b] + int(arg)

    # error bound of the float32 distance formula: |fl(d^2) - d^2| <= gamma * (|x| + |s|)^2
    gamma = (2 * p + 8) * 2.0**-24 * 1.01
    largest_norm = float(blocks.max_norm.max())  # bounds |s| for every selection
    centre_neg2 = -2 * blocks.centre  # [K, P] float64
    # per block: squared centre norm (with the float64 margin), radius, and the formula error bound
    centre_sq = ((blocks.centre * blocks.centre).sum(1) * (1 - 1e-12)).tolist()
    radius = blocks.radius.tolist()
    slack = [gamma * (m + largest_norm) ** 2 for m in blocks.max_norm.tolist()]
    sel_x = torch.empty(count, p, dtype=torch.float32, device=device)
    sel_sq = torch.empty(count, dtype=torch.float32, device=device)
    sel_x64 = torch.empty(count, p, dtype=torch.float64, device=device)
    sel_norm2 = torch.empty(count, dtype=torch.float64, device=device)  # (1 - 1e-12) |s|^2
    selected = np.empty(count, dtype=np.int64)
    dots_buffer = torch.empty(_LAZY_CHUNK, max(length), dtype=torch.float32, device=device)
    screen_buffer = torch.empty(_LAZY_CHUNK * max(length), dtype=torch.float32, device=device)
    counters = {"refreshes": 0, "rows_processed": 0, "selections_applied": 0, "exact_selections": 0}

    def refresh(b: int, upto: int) -> None:
        """Applies selections ``seen[b]:upto`` to block ``b``; updates its bound and best row."""
        first = int(seen[b])
        seen[b] = upto
        counters["refreshes"] += 1
        o, ln, real = offset[b], length[b], blocks.real[b]
        limit = float(bound[b]) ** 2 * (1 + 1e-9) + 1e-30  # >= every running distance^2 of the block
        # 1. Triangle inequality: |x - s| >= |centre - s| - radius. A selection can lower a running
        # distance only if (|centre - s| - radius)^2 - slack <= limit, i.e. if
        # |s|^2 - 2 s.centre <= reach^2 - |centre|^2 (float64, with margins for its rounding).
        reach = (math.sqrt(limit + slack[b]) + radius[b] * (1 + 1e-7)) / (1 - 1e-7)
        near = torch.addmv(sel_norm2[first:upto], sel_x64[first:upto], centre_neg2[b])
        useful = (near <= reach * reach - centre_sq[b]).nonzero().squeeze(1)
        if not useful.numel():
            return
        useful += first
        counters["rows_processed"] += ln * useful.numel()
        counters["selections_applied"] += useful.numel()
        xs, sqs, rr = blocks.x[o : o + ln], blocks.sq[o : o + ln], rows_run[o : o + ln]
        # 2. Screen: one matrix product gives, up to rounding, screen[j, r] = |x_r - s_j|^2 - rr_r^2
        # - |s_j|^2 for the block's real rows. A selection can lower a running distance only if
        # min_r screen[j, r] + |s_j|^2 is below the error bound of the two computations; the few
        # that can are computed exactly in step 3 (a matrix product's bits may differ from mv's).
        shift = torch.addcmul(sqs[:real], rr[:real], rr[:real], value=-(1 + 2.0**-20))
        tolerance = 4 * slack[b] + 2.0**-20 * limit
        exact_parts = []
        for start in range(0, useful.numel(), _LAZY_CHUNK):
            part = useful[start : start + _LAZY_CHUNK]
            screen = screen_buffer[: part.numel() * real].view(part.numel(), real)
            torch.addmm(shift, sel_x.index_select(0, part), xs[:real].T, alpha=-2, out=screen)
            closest = screen.amin(1).add_(sel_sq.index_select(0, part))
            if not float(closest.min()) >= tolerance:  # NaN-safe: odd values are computed exactly
                exact_parts.append(part[~(closest >= tolerance)])
        if not exact_parts:
            return
        exact = exact_parts[0] if len(exact_parts) == 1 else torch.cat(exact_parts)
        counters["exact_selections"] += exact.numel()
        # 3. Exact: one BLAS matrix-vector product per selection (the official mm's values, bit for
        # bit), then the rest of point_distances' formula, in the same order, on all of them at once.
        for start in range(0, exact.numel(), _LAZY_CHUNK):
            chunk = exact[start : start + _LAZY_CHUNK]
            dots = dots_buffer[: chunk.numel(), :ln]
            for row, j in enumerate(chunk.tolist()):
                torch.mv(xs, sel_x[j], out=dots[row])
            dist = dots.mul_(-2).add_(sqs).add_(sel_sq.index_select(0, chunk).unsqueeze(1)).clamp_min_(0).sqrt_()
            torch.minimum(rr, dist.amin(0), out=rr)
        val, arg = rr.max(0)
        bound[b], best_row[b] = float(val), o + int(arg)

    for i in progress:
        while True:
            b = int(np.argmax(bound))
            if seen[b] < i:
                refresh(b, i)
                continue
            ties = np.flatnonzero(bound == bound[b])
            if ties.size > 1:  # exact ties: every tied block up to date, then the smallest index
                stale = ties[seen[ties] < i]
                if stale.size:
                    for t in stale.tolist():
                        refresh(t, i)
                    continue
                b = int(ties[np.argmin(orig_np[best_row[ties]])])
            break
        row = int(best_row[b])
        selected[i] = orig_np[row]
        sel_x[i] = blocks.x[row]
        sel_sq[i] = blocks.sq[row]
        sel_x64[i] = sel_x[i].double()
        sel_norm2[i] = (sel_x64[i] * sel_x64[i]).sum() * (1 - 1e-12)
    stats.update(points=n, iterations=count, blocks=k, **counters)
    return torch.from_numpy(selected)


# ----------------------------------------------------------------------------- factory
def make_sampler(
    name: str, ratio: float, seed: int = 0, device: DeviceLike = None, show_progress: bool = True
) -> Sampler:
    """Builds the sampler called ``name`` (one of :data:`SAMPLER_NAMES`)."""
    key = str(name).strip().lower() if isinstance(name, str) else name
    if key == "identity":
        return IdentitySampler()
    if key == "random":
        return RandomSampler(ratio, seed=seed)
    if key == "greedy":
        return GreedyCoresetSampler(ratio, seed=seed, device=device, show_progress=show_progress)
    if key == "approx_greedy":
        return ApproximateGreedyCoresetSampler(ratio, seed=seed, device=device, show_progress=show_progress)
    raise ConfigError(f"unknown sampler {name!r}; valid names: {', '.join(SAMPLER_NAMES)}")
