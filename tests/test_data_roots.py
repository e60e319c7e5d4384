"""Where data comes from when no data_root is given (patchcore_lib.data.roots), through the library, the
notebook-parameter check, ``patchcore evaluate`` and the study runner: $PATCHCORE_DATA_ROOT, the per-user
folder, the MVTec AD download (from a file URL serving a small archive), the synthetic set only for synthetic
names, and one clear error otherwise."""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import tarfile
from pathlib import Path

import pytest

from patchcore_lib.cli import main as cli_main
from patchcore_lib.data import resolve_data_root, search_roots, user_data_dir
from patchcore_lib.errors import DatasetError
from patchcore_lib.study.params import validate_parameters
from patchcore_lib.study.engine import load_preset, resolve_roots, run_study
from helpers import ROOT as REPO


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One temporary synthetic cache for the module (the default set is generated once)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture()
def isolated(tmp_path, monkeypatch, cache):
    """No $PATCHCORE_DATA_ROOT, an empty per-user data folder, a temporary synthetic cache, no mirror."""
    for name in ("PATCHCORE_DATA_ROOT", "PATCHCORE_MVTEC_URL", "PATCHCORE_MVTEC_SHA256"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("PATCHCORE_CACHE", str(cache))
    return tmp_path


def _archive(tmp_path: Path, categories=("bottle", "carpet")) -> tuple[str, str]:
    """A small MVTec-like .tar.xz as a file:// URL and its SHA-256."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for category in categories:
            for name in ("train/good/000.png", "test/good/000.png"):
                data = f"{category}/{name}".encode() * 20
                info = tarfile.TarInfo(f"{category}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "mirror" / "mvtec_anomaly_detection.tar.xz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path.as_uri(), hashlib.sha256(buffer.getvalue()).hexdigest()


def _closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/mvtec_anomaly_detection.tar.xz"


def _copy_tiny(synthetic_root: Path, target: Path) -> Path:
    shutil.copytree(synthetic_root / "tiny", target / "tiny")
    return target


def test_search_order(isolated, monkeypatch):
    assert search_roots() == [isolated / "xdg" / "patchcore_lib"] == [user_data_dir()]
    monkeypatch.setenv("PATCHCORE_DATA_ROOT", str(isolated / "env"))
    assert search_roots() == [isolated / "env", isolated / "xdg" / "patchcore_lib"]


def test_given_root(isolated, synthetic_root):
    assert resolve_data_root(str(synthetic_root), "tiny") == (synthetic_root, "tiny")
    with pytest.raises(DatasetError, match="category 'carpet' not found"):
        resolve_data_root(str(synthetic_root), "carpet")  # a given root is never left for another folder


def test_environment_variable_first(isolated, synthetic_root, monkeypatch):
    env = _copy_tiny(synthetic_root, isolated / "env")
    _copy_tiny(synthetic_root, user_data_dir())
    monkeypatch.setenv("PATCHCORE_DATA_ROOT", str(env))
    assert resolve_data_root("", "tiny") == (env, "tiny")
    # the notebooks' check resolves the same way
    params = validate_parameters({"data_root": "", "category": "tiny"})
    assert params["data_root"] == str(env) and params["category"] == "tiny"


def test_user_data_folder(isolated, synthetic_root, monkeypatch):
    monkeypatch.setenv("PATCHCORE_DATA_ROOT", str(isolated / "empty"))
    user = _copy_tiny(synthetic_root, user_data_dir())
    assert resolve_data_root("", "tiny") == (user, "tiny")


def test_synthetic_only_for_empty_or_synthetic_names(isolated):
    root, category = resolve_data_root("", "")
    assert category == "synthetic_texture" and (root / category / "train" / "good").is_dir()
    assert root == Path(os.environ["PATCHCORE_CACHE"]) / "synthetic"
    assert resolve_data_root("", "synthetic_texture") == (root, "synthetic_texture")


def test_missing_category_one_clear_error(isolated, monkeypatch):
    monkeypatch.setenv("PATCHCORE_DATA_ROOT", str(isolated / "env"))
    with pytest.raises(DatasetError) as info:
        resolve_data_root("", "my_parts")  # not an MVTec AD category: nothing to download
    message = str(info.value)
    assert "'my_parts' not found" in message and "PATCHCORE_DATA_ROOT" in message
    assert str(isolated / "env" / "my_parts" / "train" / "good") in message
    assert str(user_data_dir() / "my_parts" / "train" / "good") in message
    assert not (isolated / "env").exists() and not user_data_dir().exists()  # nothing made, nothing substituted


def test_mvtec_category_downloaded_from_a_file_url(isolated, monkeypatch):
    url, sha = _archive(isolated)
    root, category = resolve_data_root("", "carpet", url=url, checksum=sha, show_progress=False)
    assert (root, category) == (user_data_dir(), "carpet")
    assert (root / "carpet" / "train" / "good" / "000.png").read_bytes() == b"carpet/train/good/000.png" * 20
    assert not (root / "bottle").exists()  # only the requested category is extracted
    # the mirror variables drive the same download for the notebooks' check (into $PATCHCORE_DATA_ROOT)
    monkeypatch.setenv("PATCHCORE_DATA_ROOT", str(isolated / "env"))
    monkeypatch.setenv("PATCHCORE_MVTEC_URL", url)
    monkeypatch.setenv("PATCHCORE_MVTEC_SHA256", sha)
    params = validate_parameters({"data_root": "", "category": "bottle"})
    assert params["data_root"] == str(isolated / "env") and (isolated / "env" / "bottle" / "train" / "good").is_dir()


def test_download_refused_or_failing_names_category_and_folders(isolated):
    with pytest.raises(DatasetError) as info:
        resolve_data_root("", "carpet", url=_closed_port_url(), show_progress=False)
    message = str(info.value)
    assert "'carpet' not found" in message and str(user_data_dir() / "carpet" / "train" / "good") in message
    assert "download failed" in message and "mvtec.com" in message
    with pytest.raises(DatasetError, match="'carpet' not found"):
        resolve_data_root("", "carpet", download=False)
    with pytest.raises(DatasetError, match="checksum mismatch"):
        resolve_data_root("", "carpet", url=_archive(isolated)[0], checksum="0" * 64, show_progress=False)


def test_notebook_parameters_never_substitute(isolated, monkeypatch):
    """The issue's case: ``category=carpet`` with an empty data_root used to run the synthetic set."""
    monkeypatch.setenv("PATCHCORE_MVTEC_URL", _closed_port_url())
    with pytest.raises(DatasetError, match="'carpet' not found"):
        validate_parameters({"data_root": "", "category": "carpet"})
    assert validate_parameters({"data_root": "", "category": ""})["category"] == "synthetic_texture"


def test_cli_without_data_root(isolated, synthetic_root, monkeypatch, capsys):
    monkeypatch.setenv("PATCHCORE_DATA_ROOT", str(_copy_tiny(synthetic_root, isolated / "env")))
    out = isolated / "out"
    code = cli_main(["evaluate", "--category", "tiny", "--out", str(out), "--weights", "random", "--resize", "64",
                     "--imagesize", "64", "--coreset-ratio", "0.1", "--quiet"])
    assert code == 0 and (out / "tiny" / "metrics.json").is_file()
    assert (isolated / "env").as_posix() in (out / "run.json").read_text()
    code = cli_main(["evaluate", "--category", "carpet", "--out", str(isolated / "out2"), "--no-download"])
    err = capsys.readouterr().err
    assert code == 3 and "'carpet' not found" in err and str(isolated / "env" / "carpet") in err
    assert not (isolated / "out2").exists()


def test_runner_resolves_before_running(isolated, synthetic_root, monkeypatch):
    env = _copy_tiny(synthetic_root, isolated / "env")
    monkeypatch.setenv("PATCHCORE_DATA_ROOT", str(env))
    assert resolve_roots("", ["tiny", "synthetic_texture"]) == {"tiny": str(env)}
    assert resolve_roots(str(synthetic_root), ["tiny"]) == {}
    preset = load_preset(REPO / "params" / "quick.yaml")
    with pytest.raises(DatasetError, match="'carpet' not found"):
        run_study(preset, categories=["carpet"], data_root="", reports_dir=isolated / "reports", download=False,
                  log=lambda _: None)
    assert not (isolated / "reports" / "executed").exists()  # failed before any notebook ran
