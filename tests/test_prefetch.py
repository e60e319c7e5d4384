"""make_loader reads the library's datasets one batch ahead in a background thread (data/prefetch.py): the same
batches as a DataLoader, bit-identical features, errors raised where their batch is consumed, early stops."""
from __future__ import annotations

import threading

import pytest
import torch

from patchcore_lib import PatchCore, open_split
from patchcore_lib.data import ImageList, collate, make_loader
from patchcore_lib.data.prefetch import PrefetchingLoader
from patchcore_lib.errors import DatasetError


def _plain(dataset, batch_size):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)


def test_the_same_batches_as_a_dataloader(synthetic_root):
    test = open_split(synthetic_root, "tiny", "test", 64, 64)
    loader = make_loader(test, 4)
    assert isinstance(loader, PrefetchingLoader) and loader.dataset is test
    assert len(loader) == len(_plain(test, 4)) == -(-len(test) // 4)
    batches = list(loader)
    assert len(batches) == len(loader)
    for got, want in zip(batches, _plain(test, 4)):
        assert got.keys() == want.keys()
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["mask"], want["mask"])
        assert torch.equal(got["label"], want["label"])
        assert got["path"] == want["path"] and got["defect_type"] == want["defect_type"]
    assert not isinstance(make_loader(torch.utils.data.TensorDataset(torch.zeros(3)), 2), PrefetchingLoader)


def test_extracted_features_are_bit_identical(synthetic_root):
    model = PatchCore(backbone="resnet18", weights="random", resize=64, imagesize=64)
    train = open_split(synthetic_root, "tiny", "train", 64, 64)
    threaded = model.extract_features(train, show_progress=False)
    assert torch.equal(threaded, model.extract_features(_plain(train, model.config.batch_size), show_progress=False))


class _Failing(torch.utils.data.Dataset):
    threaded_loading = True

    def __init__(self, bad: int) -> None:
        self.bad, self.read = bad, []

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> dict:
        self.read.append(index)
        if index == self.bad:
            raise DatasetError(f"cannot read image {index}")
        return {"image": torch.full((1,), float(index)), "mask": torch.zeros(1), "label": 0, "defect_type": "good",
                "path": str(index)}


def test_an_item_error_is_raised_with_its_batch_and_early_stops_end_the_thread():
    dataset = _Failing(bad=5)
    seen = []
    with pytest.raises(DatasetError, match="image 5"):
        for batch in make_loader(dataset, 2):
            seen.append(batch["path"])
    assert seen == [["0", "1"], ["2", "3"]]  # the batches before the failing one
    dataset = _Failing(bad=-1)
    first = next(iter(make_loader(dataset, 3)))
    assert first["path"] == ["0", "1", "2"]
    assert not [t for t in threading.enumerate() if t.name.startswith("patchcore-loader")]
    assert len(dataset.read) < 10  # batches not started when the caller stopped are dropped


def test_image_lists_are_read_ahead_too():
    images = [torch.rand(40, 50, 3).numpy() for _ in range(5)]
    data = ImageList(images, 32, 32)
    got = list(make_loader(data, 2))
    assert [b["path"] for b in got] == [["<image 0>", "<image 1>"], ["<image 2>", "<image 3>"], ["<image 4>"]]
    assert torch.equal(torch.cat([b["image"] for b in got]), torch.stack([data[i]["image"] for i in range(5)]))
