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

The approximate greedy sampler never builds an ``N x N`` matrix and is accelerated by an *exact*
triangle-inequality pruning: points are grouped into compact blocks (k-means); a block whose
points are provably all farther from the new selected point than its current largest running
distance is skipped (it cannot change). The selected indices are identical to the plain loop
(the distance of a point is always computed by :func:`point_distances`, bit for bit the same).
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
_BLOCKS_FACTOR = 4.0  # number of k-means blocks ~ factor * sqrt(N): small blocks prune tightly (bottle: 26 s vs 55 s at 1.0)
_CAP_FACTOR = 1.0  # block size cap ~ factor * N / num_blocks (bigger clusters are split)


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
class _Blocks:
    """Projected points stored block by block, padded: ``x [K, B, P]``, ``sq [K, B]``, ``orig [K, B]``.

    Inside a block the rows are in increasing original index; padding rows have ``orig = N``.
    ``centre [K, P]`` (float64), ``radius [K]`` and ``max_norm [K]`` (float64) bound the block.
    """

    def __init__(self, x, sq, orig, valid, centre, radius, max_norm):
        self.x, self.sq, self.orig, self.valid = x, sq, orig, valid
        self.centre, self.radius, self.max_norm = centre, radius, max_norm
        self.k, self.b = x.shape[0], x.shape[1]


def _kmeans_labels(x: torch.Tensor, k: int, seed: int, iters: int = 5, sample: int = 20_000) -> torch.Tensor:
    """Deterministic Lloyd k-means on a subsample, then assignment of all ``x [N, P]`` -> ``[N]``."""
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed + 12345)
    m = min(n, max(sample, 16 * k))
    sub_idx = torch.randperm(n, generator=gen)[:m].to(x.device)
    sub = x[sub_idx]
    centres = sub[torch.randperm(m, generator=gen)[:k].to(x.device)].clone()

    def assign(points: torch.Tensor, cents: torch.Tensor) -> torch.Tensor:
        c_sq = squared_norms(cents)
        out = torch.empty(points.shape[0], dtype=torch.long, device=points.device)
        step = max(1024, (1 << 24) // max(1, cents.shape[0]))  # ~64 MB of scores at a time
        for s in range(0, points.shape[0], step):
            scores = points[s : s + step].mm(cents.T).mul_(-2).add_(c_sq)
            out[s : s + step] = scores.argmin(1)
        return out

    for _ in range(iters):
        labels = assign(sub, centres)
        sums = torch.zeros_like(centres).index_add_(0, labels, sub)
        counts = torch.bincount(labels, minlength=k).to(sub.dtype)
        nonempty = counts > 0
        centres[nonempty] = sums[nonempty] / counts[nonempty, None]
    return assign(x, centres)


def _build_blocks(x: torch.Tensor, x_sq: torch.Tensor, num_blocks: int, seed: int, cluster: bool) -> _Blocks:
    """Group ``x [N, P]`` into at most ~``2 * num_blocks`` compact blocks of at most ``cap`` rows."""
    n, p = x.shape
    device = x.device
    avg = math.ceil(n / num_blocks)
    cap = max(16, int(_CAP_FACTOR * avg))
    pieces = []  # list of LongTensor (original indices, increasing), each of length <= cap
    if not cluster or num_blocks <= 1:
        pieces = [torch.arange(s, min(n, s + avg), device=device) for s in range(0, n, avg)]
    else:
        labels = _kmeans_labels(x, num_blocks, seed)
        order = torch.sort(labels, stable=True).indices
        counts = torch.bincount(labels, minlength=num_blocks).cpu().tolist()
        offset = 0
        for c in counts:
            if c == 0:
                continue
            members = order[offset : offset + c]
            offset += c
            if c <= cap:
                pieces.append(members)
                continue
            # split a big cluster spatially: order its points along its widest direction
            pts = x[members].double()
            centred = pts - pts.mean(0)
            far = centred[centred.pow(2).sum(1).argmax()]
            key = centred @ far
            members = members[torch.argsort(key)]
            parts = math.ceil(c / cap)
            size = math.ceil(c / parts)
            for s in range(0, c, size):
                pieces.append(torch.sort(members[s : s + size]).values)
    k = len(pieces)
    b = max(int(piece.numel()) for piece in pieces)
    lengths = torch.tensor([piece.numel() for piece in pieces], device=device)
    flat = torch.cat(pieces)
    block_id = torch.repeat_interleave(torch.arange(k, device=device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    slot = torch.arange(n, device=device) - starts[block_id]
    pos = block_id * b + slot  # padded position of each row of `flat`

    xb = torch.zeros(k * b, p, dtype=x.dtype, device=device)
    sqb = torch.zeros(k * b, dtype=x.dtype, device=device)
    orig = torch.full((k * b,), n, dtype=torch.long, device=device)
    for s in range(0, n, _WORK_ROWS):  # chunked scatter: bounded temporaries
        src_rows, dst = flat[s : s + _WORK_ROWS], pos[s : s + _WORK_ROWS]
        xb[dst] = x[src_rows]
        sqb[dst] = x_sq[src_rows]
        orig[dst] = src_rows
    xb, sqb, orig = xb.view(k, b, p), sqb.view(k, b), orig.view(k, b)
    valid = orig < n
    del flat, pos, block_id, slot, starts

    # float64 bounds: centre = mean, radius = max |x - centre|, max_norm = max |x|
    centre = torch.empty(k, p, dtype=torch.float64, device=device)
    radius = torch.empty(k, dtype=torch.float64, device=device)
    max_norm = torch.empty(k, dtype=torch.float64, device=device)
    group = max(1, _WORK_ROWS // b)
    for g in range(0, k, group):
        xg = xb[g : g + group].double()  # padding rows are zeros
        vg = valid[g : g + group]
        cg = xg.sum(1) / lengths[g : g + group, None].double()
        centre[g : g + group] = cg
        zero = torch.zeros((), dtype=torch.float64, device=device)
        radius[g : g + group] = torch.where(vg, (xg - cg[:, None]).norm(dim=2), zero).amax(1)
        max_norm[g : g + group] = xg.norm(dim=2).amax(1)
    return _Blocks(xb, sqb, orig, valid, centre, radius, max_norm)


class ApproximateGreedyCoresetSampler(_ProjectingSampler):
    """Approximate greedy coreset (official ``ApproximateGreedyCoresetSampler``), exact-pruned.

    Memory: the projected bank ``[N, projection_dim]`` float32 (stored once more in padded block
    order) plus ``O(N)`` vectors; never an ``N x N`` matrix.
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
        """``pruning``: ``None`` = automatic, ``True`` = k-means blocks + triangle-inequality pruning,
        ``False`` = plain loop over all points (same result, for testing / tiny problems)."""
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
        with torch.no_grad():
            x_sq = squared_norms_chunked(reduced)
            pruning = self.pruning
            if pruning is None:
                # Pruning pays off once the loop is long compared with the k-means set-up.
                pruning = n >= 4096 and count >= 64
            if pruning:
                num_blocks = max(1, int(round(_BLOCKS_FACTOR * math.sqrt(n))))
            else:  # plain loop: the points in original order, in chunks of _WORK_ROWS rows
                num_blocks = max(1, math.ceil(n / _WORK_ROWS))
            blocks = _build_blocks(reduced, x_sq, num_blocks, self.seed, cluster=pruning)
            start_vecs = reduced[start_points.to(reduced.device)]
            start_sq = x_sq[start_points.to(reduced.device)]
            del reduced, x_sq
            self.last_stats = {}
            return _greedy_blocks(
                blocks, start_vecs, start_sq, count, pruning, self._progress(count, "Coreset"), self.last_stats
            )


def squared_norms_chunked(x: torch.Tensor) -> torch.Tensor:
    """:func:`squared_norms` of ``x [N, P]`` computed in chunks (bounded temporaries) -> ``[N]``."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], _WORK_ROWS):
        out[s : s + _WORK_ROWS] = squared_norms(x[s : s + _WORK_ROWS])
    return out


def _greedy_blocks(
    blocks: _Blocks,
    start_vecs: torch.Tensor,
    start_sq: torch.Tensor,
    count: int,
    pruning: bool,
    progress,
    stats: dict,
) -> torch.Tensor:
    """Runs the approximate greedy loop on ``blocks``; returns LongTensor ``[count]`` (cpu).

    ``stats`` receives counters (blocks, rows processed, ...)."""
    k, b, p = blocks.k, blocks.b, blocks.x.shape[2]
    device = blocks.x.device
    group = max(1, _WORK_ROWS // b)  # blocks per work chunk
    n = int(blocks.valid.sum())
    neg_inf = torch.tensor(float("-inf"), dtype=torch.float32, device=device)

    # initial running distance: mean distance to the start points (padding -> -inf, never selected)
    running = torch.empty(k, b, dtype=torch.float32, device=device)
    for g in range(0, k, group):
        xs, sqs = blocks.x[g : g + group], blocks.sq[g : g + group]
        dists = torch.stack([point_distances(xs, sqs, sv, ss) for sv, ss in zip(start_vecs, start_sq)], dim=-1)
        running[g : g + group] = torch.where(blocks.valid[g : g + group], dists.mean(-1), neg_inf)

    orig_flat = blocks.orig.reshape(-1)

    def refresh(rows: torch.Tensor, first: int, ids: Optional[torch.Tensor]) -> None:
        """Block max / argmax of ``rows [A, B]`` (blocks ``ids``, or ``first..first+A`` if None)."""
        # first maximum = smallest original index (rows are sorted by original index, padding -inf)
        vals, arg = rows.max(1)
        if ids is None:
            ids_ = torch.arange(first, first + rows.shape[0], device=device)
            bmax[first : first + rows.shape[0]] = vals
            bslot[first : first + rows.shape[0]] = arg
            borig[first : first + rows.shape[0]] = orig_flat.index_select(0, ids_ * b + arg)
        else:
            bmax.index_copy_(0, ids, vals)
            bslot.index_copy_(0, ids, arg)
            borig.index_copy_(0, ids, orig_flat.index_select(0, ids * b + arg))

    bmax = torch.empty(k, dtype=torch.float32, device=device)
    bslot = torch.empty(k, dtype=torch.long, device=device)
    borig = torch.empty(k, dtype=torch.long, device=device)
    for g in range(0, k, group):
        refresh(running[g : g + group], g, None)

    # error bound of the float32 distance formula: |fl(d^2) - d^2| <= gamma * (|x| + |s|)^2
    gamma = (2 * p + 8) * 2.0**-24 * 1.01
    big = torch.tensor(n + 1, dtype=torch.long, device=device)
    selected = torch.empty(count, dtype=torch.long, device=device)
    blocks_processed = 0
    centre_sq = (blocks.centre * blocks.centre).sum(1)

    for i in progress:
        # global argmax: largest block max, ties -> smallest original index
        best = int(torch.where(bmax == bmax.max(), borig, big).argmin())
        slot = int(bslot[best])
        selected[i] = borig[best]
        s = blocks.x[best, slot]
        s_sq = blocks.sq[best, slot]
        if pruning:
            # lower bound of |x - s| over block points: |centre - s| - radius (float64, with margins)
            sd = s.double()
            s_norm2 = (sd * sd).sum()
            dc2 = centre_sq - 2 * (blocks.centre @ sd) + s_norm2
            dc2 = dc2 - 1e-12 * (centre_sq + s_norm2)  # float64 rounding of the expansion
            dc = dc2.clamp_min(0).sqrt()
            lower = (dc * (1 - 1e-7) - blocks.radius * (1 + 1e-7)).clamp_min(0)
            slack = gamma * (blocks.max_norm + s_norm2.sqrt()) ** 2
            bm = bmax.double()
            # a block can only change if some computed distance may fall below its max running distance
            ids = (lower * lower - slack <= bm * bm * (1 + 1e-9) + 1e-30).nonzero().squeeze(1)
            num_active = ids.numel()
        else:
            num_active = k
        blocks_processed += num_active
        if num_active == k:  # every block: contiguous slices, no gather
            for g in range(0, k, group):
                rows = running[g : g + group]
                d = point_distances(blocks.x[g : g + group], blocks.sq[g : g + group], s, s_sq)
                torch.minimum(rows, d, out=rows)
                refresh(rows, g, None)
        else:
            for g in range(0, num_active, group):
                sub = ids[g : g + group]
                d = point_distances(blocks.x.index_select(0, sub), blocks.sq.index_select(0, sub), s, s_sq)
                rows = torch.minimum(running.index_select(0, sub), d)
                running.index_copy_(0, sub, rows)
                refresh(rows, 0, sub)
    stats.update(blocks=k, block_rows=b, points=n, rows_processed=blocks_processed * b, iterations=count)
    return selected.cpu()


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
