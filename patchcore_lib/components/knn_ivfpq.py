"""Approximate nearest-neighbour search with a FAISS IVF-PQ index (the paper's Table 5, the official
``ApproximateFaissNN``: ``IndexIVFPQ(IndexFlatL2(d), d, 512, 64, 8)``, FAISS's default nprobe = 1).

The bank's vectors are assigned to ``nlist`` k-means lists and stored as ``m`` product-quantised codes of
``nbits`` bits each; a query searches the ``nprobe`` nearest lists and ranks their entries by the
quantised (approximate) squared L2 distance. Needs faiss (``faiss-cpu`` is enough: the index lives on the
CPU unless faiss has GPU support and the bank is on CUDA, where it is copied to the GPU with float16
lookup tables, as the official code does).

Small banks: the PQ codebooks need at least 2**nbits training vectors (ConfigError below that); a bank
with fewer than ``nlist`` vectors gets ``max(1, len(bank) // 39)`` lists (FAISS's 39 points per centroid)
with a warning. Query rows for which the probed lists hold fewer than k entries are answered exactly.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from patchcore_lib.components.knn import DISTANCES, faiss_available, fitted_bank
from patchcore_lib.errors import ConfigError

#: the official ApproximateFaissNN parameters
OFFICIAL_IVFPQ = {"nlist": 512, "m": 64, "nbits": 8, "nprobe": 1}


class IVFPQSearch:
    """Approximate k-NN in L2 over a memory bank: ``fit(bank [M, D])`` then ``query(q [N, D]) ->
    (distances [N, k] ascending, indices [N, k])``; same interface as :class:`NearestNeighbourSearch`."""

    def __init__(self, num_nn: int = 1, distance: str = "sqeuclidean", nlist: int = OFFICIAL_IVFPQ["nlist"],
                 m: int = OFFICIAL_IVFPQ["m"], nbits: int = OFFICIAL_IVFPQ["nbits"],
                 nprobe: int = OFFICIAL_IVFPQ["nprobe"]) -> None:
        if not isinstance(num_nn, int) or num_nn < 1:
            raise ConfigError(f"num_nn must be a positive integer, got {num_nn!r}")
        if distance not in DISTANCES:
            raise ConfigError(f"unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")
        for name, value in (("ivf_nlist", nlist), ("pq_m", m), ("pq_nbits", nbits), ("ivf_nprobe", nprobe)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not faiss_available():
            raise ConfigError("knn_search 'ivfpq' needs faiss (pip install faiss-cpu)")
        self.num_nn, self.distance = num_nn, distance
        self.nlist, self.m, self.nbits, self.nprobe = nlist, m, nbits, nprobe
        self.bank: torch.Tensor | None = None
        self.lists_used = 0
        self._index: Any = None  # the trained faiss index (CPU or GPU)

    @property
    def backend(self) -> str:
        return "faiss-ivfpq"

    def fit(self, bank: torch.Tensor) -> "IVFPQSearch":
        """Train the coarse quantiser and the PQ codebooks on the bank [M, D], then add it."""
        import faiss

        if bank.ndim != 2 or len(bank) == 0:
            raise ConfigError(f"memory bank must be a non-empty [M, D] matrix, got shape {tuple(bank.shape)}")
        count, dim = bank.shape
        if dim % self.m:
            raise ConfigError(f"pq_m ({self.m}) must divide the feature dimension ({dim})")
        if count < 2 ** self.nbits:
            raise ConfigError(f"the memory bank ({count} features) is too small to train IVF-PQ codebooks of "
                              f"pq_nbits={self.nbits} (needs at least {2 ** self.nbits}); use knn_search 'exact' "
                              "or fewer pq_nbits")
        if self.num_nn > count:
            raise ConfigError(f"num_nn ({self.num_nn}) is larger than the memory bank ({count} features)")
        lists = self.nlist
        if count < lists:
            lists = max(1, count // 39)
            warnings.warn(f"IVF-PQ: {count} memory-bank features are fewer than ivf_nlist={self.nlist}; "
                          f"using {lists} lists", stacklevel=2)
        self.bank = bank.float().contiguous()
        data = np.ascontiguousarray(self.bank.detach().cpu().numpy())
        index: Any = faiss.IndexIVFPQ(faiss.IndexFlatL2(dim), dim, lists, self.m, self.nbits)
        # FAISS prints one stderr line per k-means run (m of them for the PQ codebooks) when it has fewer than
        # 39 training points per centroid; say it once, as a Python warning, and keep stderr readable
        wanted = max(lists, 2 ** self.nbits) * index.cp.min_points_per_centroid
        if count < wanted:
            warnings.warn(f"IVF-PQ: trained on {count} memory-bank features; FAISS asks for at least {wanted} "
                          f"({index.cp.min_points_per_centroid} per centroid of {lists} lists / "
                          f"{2 ** self.nbits} PQ codes)", stacklevel=2)
        index.cp.min_points_per_centroid = index.pq.cp.min_points_per_centroid = 1
        if self.bank.is_cuda and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            options = faiss.GpuClonerOptions()
            options.useFloat16 = True
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), self.bank.device.index or 0, index, options)
        index.train(data)
        index.add(data)
        index.nprobe = min(self.nprobe, lists)
        self._index, self.lists_used = index, lists
        return self

    def query(self, queries: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Approximate distances [N, k] (ascending) and memory-bank indices [N, k] of the k nearest neighbours."""
        bank = fitted_bank(self)
        k = self.num_nn if k is None else k
        if k > len(bank):
            raise ConfigError(f"k ({k}) is larger than the memory bank ({len(bank)} features)")
        q = np.ascontiguousarray(queries.detach().float().cpu().numpy())
        dist, idx = self._index.search(q, k)
        missing = (idx < 0).any(axis=1)
        if missing.any():  # the probed lists held fewer than k entries: answer those rows exactly
            exact = torch.cdist(torch.from_numpy(q[missing]), bank.cpu()).topk(k, largest=False)
            dist[missing] = (exact.values ** 2).numpy()
            idx[missing] = exact.indices.numpy()
        distances = torch.from_numpy(dist).clamp_(min=0).to(queries.device)
        if self.distance == "euclidean":
            distances = distances.sqrt()
        return distances, torch.from_numpy(idx).to(queries.device)
