"""A batch loader that reads the next batches in a background thread while the caller runs the current one.

Reading an image (PNG/JPEG decoding, resizing: PIL releases the GIL for both) and the forward pass of the backbone
(torch releases it in every operator) then overlap: with cores to spare (a GPU forward pass, or more cores than
the forward pass keeps busy) extraction takes about the longer of the two instead of their sum; on a CPU whose
cores the forward pass already fills, the reading's CPU time remains. The batches are exactly those of an unshuffled ``DataLoader`` with the same
``collate``: the same items, in the same order, stacked the same way (only the thread that reads them differs).
One reading thread keeps ``ahead`` batches ready; it reads one item at a time, so the dataset is never read by
two threads at once. An error of an item (an unreadable file) is raised where that batch is consumed, as before.
"""
from __future__ import annotations

import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sized, cast

import torch


class PrefetchingLoader:
    """Unshuffled batches of ``batch_size`` items of ``dataset`` (``collate``d), read ``ahead`` batches in advance
    by one background thread. ``dataset`` and ``len()`` as a ``DataLoader``'s."""

    def __init__(self, dataset: torch.utils.data.Dataset, batch_size: int,
                 collate: Callable[[list[Any]], Any], ahead: int = 2) -> None:
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.collate = collate
        self.ahead = max(1, int(ahead))

    def __len__(self) -> int:
        return math.ceil(len(cast(Sized, self.dataset)) / self.batch_size)

    def _batch(self, start: int) -> Any:
        stop = min(start + self.batch_size, len(cast(Sized, self.dataset)))
        return self.collate([self.dataset[i] for i in range(start, stop)])

    def __iter__(self) -> Iterator[Any]:
        starts = iter(range(0, len(cast(Sized, self.dataset)), self.batch_size))
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patchcore-loader")
        pending: deque[Future[Any]] = deque()
        try:
            for start in starts:
                pending.append(pool.submit(self._batch, start))
                if len(pending) > self.ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # also when the caller stops early or an item fails: drop what was not started, wait for the rest
            pool.shutdown(wait=True, cancel_futures=True)
