"""The one content-addressed store: keys from code + parameters + data content, records checked on every use."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from patchcore_lib.utils.store import Store, content_key, path_fingerprint


def test_key_changes_with_code_parameters_and_data_and_not_with_dict_order():
    base = content_key("k", code="c1", params={"a": 1, "b": [1, 2]}, data="d1")
    assert base == content_key("k", code="c1", params={"b": [1, 2], "a": 1}, data="d1")
    others = {content_key("k", code="c2", params={"a": 1, "b": [1, 2]}, data="d1"),
              content_key("k", code="c1", params={"a": 2, "b": [1, 2]}, data="d1"),
              content_key("k", code="c1", params={"a": 1, "b": [1, 2]}, data="d2"),
              content_key("other", code="c1", params={"a": 1, "b": [1, 2]}, data="d1")}
    assert base not in others and len(others) == 4


def test_path_fingerprint_is_content_not_location(tmp_path):
    one, two = tmp_path / "a" / "w.pth", tmp_path / "b" / "w.pth"
    for path in (one, two):
        path.parent.mkdir()
        path.write_bytes(b"weights")
    assert path_fingerprint(one) == path_fingerprint(two) and str(tmp_path) not in path_fingerprint(one)
    assert path_fingerprint(tmp_path / "a") == path_fingerprint(tmp_path / "b")
    two.write_bytes(b"other weights")
    assert path_fingerprint(one) != path_fingerprint(two)
    assert path_fingerprint(tmp_path / "b") != path_fingerprint(tmp_path / "a")
    assert path_fingerprint("") == "" and path_fingerprint(tmp_path / "nothing") == "missing"


def test_symlinked_folders_are_followed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "x.png").write_bytes(b"1")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "linked").symlink_to(real, target_is_directory=True)
    before = path_fingerprint(tree)
    (real / "x.png").write_bytes(b"2")
    assert path_fingerprint(tree) != before


def test_record_is_used_only_while_outputs_and_checksum_hold(tmp_path):
    store = Store.beside(tmp_path)
    output = tmp_path / "result.csv"
    output.write_text("a,b\n1,2\n")
    store.save("run", "k1", {"auroc": 0.9}, outputs=[output], slot="bottle")
    assert store.lookup("run", "k1") == {"auroc": 0.9}
    assert store.lookup("run", "k2") is None
    assert store.lookup("run", "k1", require=[tmp_path / "model.pt"]) is None  # asked for an output it lacks
    record = tmp_path / ".store" / "run" / "k1.json"
    assert str(tmp_path) not in record.read_text()  # outputs recorded relative to the folder, no machine path
    output.write_text("a,b\n1,3\n")  # a replaced output: not this result any more
    assert store.lookup("run", "k1") is None
    output.write_text("a,b\n1,2\n")
    assert store.lookup("run", "k1") == {"auroc": 0.9}
    data = json.loads(record.read_text())
    data["value"]["auroc"] = 1.0  # an edited record
    record.write_text(json.dumps(data))
    assert store.lookup("run", "k1") is None
    record.write_text("{truncated")
    assert store.lookup("run", "k1") is None


def test_a_slot_keeps_only_its_newest_record_and_the_folder_can_move(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "x.txt").write_text("1")
    store = Store.beside(folder)
    store.save("run", "old", 1, outputs=[folder / "x.txt"], slot="s", seconds=3.0)
    store.save("run", "other", 2, slot="t")
    store.save("run", "new", 3, outputs=[folder / "x.txt"], slot="s", seconds=4.0)
    assert store.lookup("run", "old") is None and store.lookup("run", "other") == 2
    assert store.latest("run", "s")["seconds"] == 4.0
    moved = tmp_path / "clone"
    folder.rename(moved)
    assert Store.beside(moved).lookup("run", "new") == 3


def test_tensors_round_trip_and_a_flipped_bit_is_never_used(tmp_path):
    store = Store(tmp_path)
    features = torch.arange(4096, dtype=torch.float32).reshape(64, 64)
    store.save_tensors("features", "k", {"features": features})
    assert torch.equal(store.load_tensors("features", "k")["features"], features)
    path = tmp_path / "features" / "k.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert store.load_tensors("features", "k") is None


def test_a_disabled_store_finds_nothing_and_writes_nothing(tmp_path):
    store = Store(None)
    store.save("run", "k", 1)
    assert store.lookup("run", "k") is None and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [None, 0, "x", [1, 2], {"a": [1.5]}])
def test_json_values_round_trip(tmp_path, value):
    store = Store(tmp_path)
    store.save("v", "k", value)
    record = store.record("v", "k")
    assert record is not None and record["value"] == value


def test_file_parameter_is_content_for_files_and_the_value_otherwise(tmp_path):
    from patchcore_lib.utils.store import file_parameter

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"1")
    assert file_parameter(str(weights)) == path_fingerprint(weights) and str(tmp_path) not in file_parameter(str(weights))
    assert file_parameter("random") == "random" and file_parameter(None) is None


@pytest.mark.slow
def test_evaluation_is_redone_when_the_weights_file_changes_at_the_same_path(synthetic_root, tmp_path, caplog):
    import torchvision

    from patchcore_lib.detectors import PatchCore
    from patchcore_lib.evaluation import evaluate

    weights = tmp_path / "resnet18.pth"
    caplog.set_level(logging.INFO, logger="patchcore_lib")  # "already done" is an INFO record of the package logger
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        torch.save(torchvision.models.resnet18().state_dict(), weights)
        model = PatchCore(backbone="resnet18", weights=str(weights), resize=64, imagesize=64, coreset_ratio=0.2)
        evaluate(model, synthetic_root, ["tiny"], tmp_path / "out", show_progress=False)
        runs.append("already done" in caplog.text)
        caplog.clear()
    assert runs == [False, True, False]  # same weights reused; other weights at the same path recomputed
