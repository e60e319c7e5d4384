"""Exact nearest-neighbour search of patch features against the memory bank (FAISS or pure torch).

Distances: ``"sqeuclidean"`` (default) or ``"euclidean"``. The default is the squared distance because
the official implementation scores with FAISS ``IndexFlatL2``, which returns squared L2 distances, and
its published numbers are the ones we compare against; with k = 1 and the max image score the image
AUROC is identical under both (the square root is monotone), only the blurred pixel maps differ a little.
"""
from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np
import torch

from patchcore_lib.errors import ConfigError

log = logging.getLogger(__name__)

DISTANCES = ("sqeuclidean", "euclidean")
BACKENDS = ("auto", "faiss", "torch")


class KnnSearch(Protocol):
    """What scoring needs of a search (exact :class:`NearestNeighbourSearch` or approximate ``IVFPQSearch``):
    the fitted bank (None before ``fit``), its distance, k and ``query``."""

    bank: torch.Tensor | None
    distance: str
    num_nn: int

    def query(self, queries: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...


def fitted_bank(search: KnnSearch) -> torch.Tensor:
    """The memory bank [M, D] of a fitted search; ConfigError before ``fit``."""
    if search.bank is None:
        raise ConfigError("the nearest-neighbour index is empty: call fit() first")
    return search.bank


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss_gpu_available() -> bool:
    try:
        import faiss

        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except ImportError:
        return False


class NearestNeighbourSearch:
    """Exact k-NN in L2. ``fit(bank [M, D])`` then ``query(q [N, D]) -> (distances [N, k], indices [N, k])``.

    Backends: ``faiss`` (CPU ``IndexFlatL2``, or a GPU index when the bank is on CUDA and faiss has GPU
    support) and ``torch`` (chunked matrix products, on the bank's device). ``auto`` picks FAISS for CPU
    banks when it is installed, torch for CUDA banks without faiss-gpu.
    """

    def __init__(self, num_nn: int = 1, distance: str = "sqeuclidean", backend: str = "auto",
                 chunk_elements: int = 1 << 25) -> None:
        if not isinstance(num_nn, int) or num_nn < 1:
            raise ConfigError(f"num_nn must be a positive integer, got {num_nn!r}")
        if distance not in DISTANCES:
            raise ConfigError(f"unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")
        if backend not in BACKENDS:
            raise ConfigError(f"unknown kNN backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if backend == "faiss" and not faiss_available():
            raise ConfigError("kNN backend 'faiss' requested but faiss is not installed (pip install faiss-cpu)")
        self.num_nn = num_nn
        self.distance = distance
        self.requested_backend = backend
        self.chunk_elements = chunk_elements
        self.bank: torch.Tensor | None = None
        self._index: Any = None  # a faiss index (CPU or GPU), or None for the torch backend

    @property
    def backend(self) -> str:
        if self.requested_backend != "auto":
            return self.requested_backend
        if self.bank is not None and self.bank.is_cuda:
            return "faiss" if _faiss_gpu_available() else "torch"
        return "faiss" if faiss_available() else "torch"

    def fit(self, bank: torch.Tensor) -> "NearestNeighbourSearch":
        """Index the memory bank [M, D]."""
        if bank.ndim != 2 or len(bank) == 0:
            raise ConfigError(f"memory bank must be a non-empty [M, D] matrix, got shape {tuple(bank.shape)}")
        if self.num_nn > len(bank):
            raise ConfigError(f"num_nn ({self.num_nn}) is larger than the memory bank ({len(bank)} features)")
        self.bank = bank.float().contiguous()
        self._index = None
        if self.backend == "faiss":
            import faiss

            index: Any = faiss.IndexFlatL2(bank.shape[1])
            if self.bank.is_cuda and _faiss_gpu_available():
                index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), self.bank.device.index or 0, index)
            index.add(self.bank.detach().cpu().numpy())
            self._index = index
        else:
            self._bank_sq = (self.bank * self.bank).sum(1)
        log.debug("exact kNN index (%s backend) over a %d x %d memory bank on %s", self.backend, *self.bank.shape,
                  self.bank.device)
        return self

    def query(self, queries: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances [N, k] (ascending) and memory-bank indices [N, k] of the k nearest neighbours."""
        bank = fitted_bank(self)
        k = self.num_nn if k is None else k
        if k > len(bank):
            raise ConfigError(f"k ({k}) is larger than the memory bank ({len(bank)} features)")
        if self._index is not None:
            q = np.ascontiguousarray(queries.detach().float().cpu().numpy())
            dist, idx = self._index.search(q, k)
            dist = torch.from_numpy(dist).clamp_(min=0).to(queries.device)
            idx = torch.from_numpy(idx).to(queries.device)
        else:
            dist, idx = self._torch_query(bank, queries.float().to(bank.device), k)
        if self.distance == "euclidean":
            dist = dist.sqrt()
        return dist, idx

    def _torch_query(self, bank: torch.Tensor, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = max(1, self.chunk_elements // len(bank))
        out_d, out_i = [], []
        for start in range(0, len(queries), rows):
            q = queries[start:start + rows]
            d = torch.addmm(self._bank_sq.unsqueeze(0), q, bank.T, alpha=-2.0)
            d.add_((q * q).sum(1, keepdim=True)).clamp_(min=0)
            values, indices = torch.topk(d, k, dim=1, largest=False, sorted=True)
            out_d.append(values)
            out_i.append(indices)
        return torch.cat(out_d), torch.cat(out_i)
