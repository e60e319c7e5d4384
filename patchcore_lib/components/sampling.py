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
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from tqdm import auto as tqdm  # notebook widgets in JupyterLab (a text bar leaves a stderr output there)

from patchcore_lib.components.coreset_kernels import (  # noqa: F401 (point_distances, squared_norms re-exported)
    _batch_distances, _greedy_lazy, _greedy_plain, _greedy_stepped, all_point_distances, point_distances,
    squared_norms, squared_norms_chunked)
from patchcore_lib.errors import ConfigError
from patchcore_lib.utils.registry import Registry

#: Samplers by name: ``@SAMPLERS.register(name)`` on a :class:`Sampler` subclass adds one everywhere.
SAMPLERS: Registry[type["Sampler"]] = Registry("sampler")

DeviceLike = Optional[Union[str, torch.device]]

_PROJECTION_CHUNK = 65536  # rows projected at a time
_DEFAULT_MAX_MATRIX_BYTES = 4 * 1024**3
_BLOCKS_FACTOR = 1.0  # k-means blocks of the lazy loop ~ factor * sqrt(N)
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


# ----------------------------------------------------------------------------- base classes
class Sampler(abc.ABC):
    """Subsamples a memory bank ``[N, D]``."""

    ratio: float = 1.0

    @abc.abstractmethod
    def select(self, features: torch.Tensor) -> torch.Tensor:
        """``features [N, D]`` -> LongTensor ``[M]`` of selected row indices (selection order, cpu)."""

    @classmethod
    def build(cls, ratio: float, seed: int = 0, device: DeviceLike = None, show_progress: bool = True) -> "Sampler":
        """The sampler from the options every sampler accepts (subclasses drop what they do not use)."""
        factory: Any = cls  # a concrete subclass; the abstract base declares no constructor
        return factory(ratio, seed=seed, device=device, show_progress=show_progress)

    def run(self, features: torch.Tensor) -> torch.Tensor:
        """``features [N, D]`` -> ``features[select(features)]`` ``[M, D]`` on the features' device."""
        indices = self.select(features)
        if indices.numel() == features.shape[0] and self.ratio >= 1.0:
            return features
        return features[indices.to(features.device)]


@SAMPLERS.register("identity")
class IdentitySampler(Sampler):
    """Keeps every feature."""

    @classmethod
    def build(cls, ratio: float, seed: int = 0, device: DeviceLike = None, show_progress: bool = True) -> "Sampler":
        return cls()

    def select(self, features: torch.Tensor) -> torch.Tensor:
        _check_features(features)
        return torch.arange(features.shape[0], dtype=torch.long)


@SAMPLERS.register("random")
class RandomSampler(Sampler):
    """Uniformly random subset of ``max(1, int(N * ratio))`` rows (deterministic in ``seed``)."""

    @classmethod
    def build(cls, ratio: float, seed: int = 0, device: DeviceLike = None, show_progress: bool = True) -> "Sampler":
        return cls(ratio, seed=seed)

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
@SAMPLERS.register("greedy")
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
@SAMPLERS.register("approx_greedy")
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
            if not pruning and reduced.device.type == "cuda":  # device-side steps, replayed as a CUDA graph
                with tqdm.tqdm(total=count, desc="Coreset", disable=not self.show_progress, leave=False) as bar:
                    return _greedy_stepped(reduced, x_sq, running, count, bar, self.last_stats)
            progress = self._progress(count, "Coreset")
            if not pruning:
                return _greedy_plain(reduced, x_sq, running, count, progress, self.last_stats)
            num_blocks = max(1, int(round(_BLOCKS_FACTOR * math.sqrt(n))))
            return _greedy_lazy(reduced, x_sq, running, count, num_blocks, self.seed, progress, self.last_stats)


# ----------------------------------------------------------------------------- factory
def make_sampler(
    name: str, ratio: float, seed: int = 0, device: DeviceLike = None, show_progress: bool = True
) -> Sampler:
    """Builds the sampler registered as ``name`` (see :data:`SAMPLERS`)."""
    key = name.strip().lower() if isinstance(name, str) else name
    return SAMPLERS.get(key).build(ratio, seed=seed, device=device, show_progress=show_progress)


#: Names of the registered samplers (kept for callers of the former constant).
SAMPLER_NAMES = SAMPLERS.names()
