"""Distance kernels and selection loops of the greedy coreset (used by ``sampling.py``).

``_greedy_plain`` is the official loop; ``_greedy_lazy`` is the exact, pruned block-wise loop whose
selected indices are bit for bit the plain loop's (see ``sampling.py`` and ``docs/DESIGN.md``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

_WORK_ROWS = 32768  # rows processed per distance chunk (bounds temporaries)


_LAZY_CHUNK = 256  # selections applied to a block at once


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


def _greedy_stepped(
    x: torch.Tensor, x_sq: torch.Tensor, running: torch.Tensor, count: int, progress, stats: dict,
    use_graph: bool | None = None, steps_per_graph: int = 32,
) -> torch.Tensor:
    """The official loop with its state on the device: the step (argmax, record, running minimum) reads the
    selection counter from a device tensor, so it needs no host synchronisation and ``steps_per_graph`` steps
    can be captured once into a CUDA graph and replayed (launch overhead, not bandwidth, bounds the eager loop
    on a GPU: about 11 small kernels per selection). The same operations in the same order as
    :func:`_greedy_plain`, hence the same selected indices. ``use_graph=None``: on CUDA devices; a failed
    capture falls back to eager steps. ``progress`` is a tqdm bar over ``count`` selections (or None)."""
    device = running.device
    use_graph = device.type == "cuda" if use_graph is None else use_graph
    selected = torch.zeros(count + steps_per_graph, dtype=torch.long, device=device)  # room for overrun
    position = torch.zeros((), dtype=torch.long, device=device)

    def step() -> None:  # kernels only: index_select, never Python indexing with a tensor (which may sync)
        idx = torch.argmax(running).view(1)  # first maximum on ties, like the official code
        selected.index_put_((position.view(1),), idx)
        point, point_sq = x.index_select(0, idx)[0], x_sq.index_select(0, idx)[0]
        torch.minimum(running, all_point_distances(x, x_sq, point, point_sq), out=running)
        position.add_(1)

    done = 0
    graph = None
    if use_graph and count > 2 * steps_per_graph:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up steps (real selections) on a side stream, as capture requires
            for _ in range(3):
                step()
        torch.cuda.current_stream(device).wait_stream(side)
        done = 3
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(steps_per_graph):
                    step()
        except RuntimeError:
            graph = None  # capture unsupported here: the eager steps below give the same result
    if progress is not None:
        progress.update(done)
    if graph is not None:
        while done < count:
            graph.replay()
            done += steps_per_graph
            if progress is not None:
                progress.update(min(steps_per_graph, count - (done - steps_per_graph)))
    while done < count:
        step()
        done += 1
        if progress is not None:
            progress.update(1)
    n = running.numel()
    stats.update(points=n, iterations=count, rows_processed=n * count, cuda_graph=graph is not None)
    return selected[:count].cpu()


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
