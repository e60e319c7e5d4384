"""Tests of patchcore_lib.data.download against a local HTTP server (no internet access needed)."""
from __future__ import annotations

import hashlib
import http.server
import io
import re
import socket
import tarfile
import threading
from pathlib import Path

import pytest

from patchcore_lib.data.download import (
    MVTEC_CATEGORIES,
    MVTEC_SHA256,
    MVTEC_URL,
    download_mvtec,
    missing_dataset_message,
)
from patchcore_lib.errors import ConfigError, DatasetError

ARCHIVE_NAME = "mvtec_anomaly_detection.tar.xz"


def _make_archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


FILES = {
    "license.txt": b"CC BY-NC-SA 4.0\n",
    "bottle/train/good/000.png": b"bottle-train-0" * 50,
    "bottle/test/good/000.png": b"bottle-test-0" * 50,
    "bottle/ground_truth/broken_large/000_mask.png": b"mask" * 10,
    "carpet/train/good/000.png": b"carpet-train-0" * 50,
}


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload`` at /<ARCHIVE_NAME>, honouring single ``bytes=N-`` ranges."""

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def do_GET(self):  # noqa: N802
        server = self.server
        server.requests.append(self.headers.get("Range"))
        if self.path != "/" + ARCHIVE_NAME:
            self.send_error(404)
            return
        data = server.payload
        start = 0
        rng = self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and server.honour_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/x-xz")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.truncate_once:  # simulate a dropped connection half-way
            server.truncate_once = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.payload = _make_archive(FILES)
    httpd.requests = []
    httpd.honour_range = True
    httpd.truncate_once = False
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/{ARCHIVE_NAME}"
    httpd.sha256 = hashlib.sha256(httpd.payload).hexdigest()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/{ARCHIVE_NAME}"


def test_constants():
    assert len(MVTEC_CATEGORIES) == 15 and len(set(MVTEC_CATEGORIES)) == 15
    assert {"bottle", "carpet", "metal_nut", "zipper"} <= set(MVTEC_CATEGORIES)
    assert MVTEC_URL.startswith("https://") and MVTEC_URL.endswith(ARCHIVE_NAME)
    assert re.fullmatch(r"[0-9a-f]{64}", MVTEC_SHA256)


def test_download_and_extract(server, tmp_path):
    out = download_mvtec(tmp_path, categories=["bottle"], url=server.url, checksum=server.sha256,
                         show_progress=False)
    assert out == tmp_path
    assert (tmp_path / "bottle/train/good/000.png").read_bytes() == FILES["bottle/train/good/000.png"]
    assert (tmp_path / "bottle/ground_truth/broken_large/000_mask.png").is_file()
    assert (tmp_path / "license.txt").is_file()
    assert not (tmp_path / "carpet").exists()  # only the requested category
    assert not (tmp_path / ".downloads").exists()  # archive removed after extraction
    assert server.requests == [None]

    # a second category later: bottle is kept, carpet added
    download_mvtec(tmp_path, categories=["carpet", "bottle"], url=server.url, checksum=server.sha256,
                   show_progress=False, keep_archive=True)
    assert (tmp_path / "carpet/train/good/000.png").is_file()
    assert (tmp_path / ".downloads" / ARCHIVE_NAME).is_file()


def test_skip_when_present(tmp_path):
    (tmp_path / "bottle/train/good").mkdir(parents=True)
    # the URL points to a closed port: any network access would fail
    assert download_mvtec(tmp_path, categories=["bottle"], url=_closed_port_url(), show_progress=False) == tmp_path
    assert not (tmp_path / ".downloads").exists()


def test_checksum_mismatch(server, tmp_path):
    bad = "0" * 64
    with pytest.raises(DatasetError) as info:
        download_mvtec(tmp_path, categories=["bottle"], url=server.url, checksum=bad, show_progress=False)
    message = str(info.value)
    assert ARCHIVE_NAME in message and bad in message and server.sha256 in message and "sha256" in message
    assert not (tmp_path / ".downloads" / ARCHIVE_NAME).exists()  # bad file deleted
    assert not (tmp_path / ".downloads" / (ARCHIVE_NAME + ".part")).exists()
    assert not (tmp_path / "bottle").exists()


def test_resume_partial_download(server, tmp_path):
    downloads = tmp_path / ".downloads"
    downloads.mkdir()
    half = len(server.payload) // 2
    (downloads / (ARCHIVE_NAME + ".part")).write_bytes(server.payload[:half])
    download_mvtec(tmp_path, categories=["bottle"], url=server.url, checksum=server.sha256, show_progress=False)
    assert server.requests == [f"bytes={half}-"]
    assert (tmp_path / "bottle/train/good/000.png").read_bytes() == FILES["bottle/train/good/000.png"]


def test_interrupted_download_is_resumed(server, tmp_path):
    server.truncate_once = True
    with pytest.raises(DatasetError, match="resume") as info:
        download_mvtec(tmp_path, categories=["bottle"], url=server.url, checksum=server.sha256,
                       show_progress=False)
    assert server.url in str(info.value)
    part = tmp_path / ".downloads" / (ARCHIVE_NAME + ".part")
    have = part.stat().st_size
    assert 0 < have < len(server.payload)
    download_mvtec(tmp_path, categories=["bottle"], url=server.url, checksum=server.sha256, show_progress=False)
    assert server.requests == [None, f"bytes={have}-"]
    assert (tmp_path / "bottle/train/good/000.png").is_file()


def test_resume_when_server_ignores_range(server, tmp_path):
    server.honour_range = False
    downloads = tmp_path / ".downloads"
    downloads.mkdir()
    (downloads / (ARCHIVE_NAME + ".part")).write_bytes(b"garbage that must be discarded")
    download_mvtec(tmp_path, categories=["bottle"], url=server.url, checksum=server.sha256, show_progress=False)
    assert len(server.requests) == 1 and server.requests[0] is not None
    assert (tmp_path / "bottle/train/good/000.png").is_file()


def test_part_file_already_complete(server, tmp_path):
    downloads = tmp_path / ".downloads"
    downloads.mkdir()
    (downloads / (ARCHIVE_NAME + ".part")).write_bytes(server.payload)
    download_mvtec(tmp_path, categories=["bottle"], url=server.url, checksum=server.sha256, show_progress=False)
    assert (tmp_path / "bottle/train/good/000.png").is_file()


def test_network_failure_message(tmp_path):
    url = _closed_port_url()
    with pytest.raises(DatasetError) as info:
        download_mvtec(tmp_path, categories=["bottle"], url=url, show_progress=False, timeout=5)
    message = str(info.value)
    assert "\n" not in message
    assert url in message
    assert "mvtec.com/company/research/datasets/mvtec-ad" in message
    assert "train" in message and "good" in message


def test_http_error_message(server, tmp_path):
    url = server.url.replace(ARCHIVE_NAME, "nope.tar.xz")
    with pytest.raises(DatasetError, match="HTTP 404"):
        download_mvtec(tmp_path, categories=["bottle"], url=url, show_progress=False)


def test_archive_without_requested_category(server, tmp_path):
    with pytest.raises(DatasetError, match="zipper"):
        download_mvtec(tmp_path, categories=["zipper"], url=server.url, checksum=server.sha256,
                       show_progress=False)
    assert not (tmp_path / "zipper").exists()


def test_unsafe_member_refused(server, tmp_path):
    server.payload = _make_archive({"bottle/train/good/000.png": b"x", "bottle/../../evil.txt": b"evil"})
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match="evil"):
        download_mvtec(root, categories=["bottle"], url=server.url,
                       checksum=hashlib.sha256(server.payload).hexdigest(), show_progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not (root / "bottle").exists()


def test_unknown_category(tmp_path):
    with pytest.raises(ConfigError, match="bottle"):
        download_mvtec(tmp_path, categories=["bottel"], url=_closed_port_url(), show_progress=False)


def test_missing_dataset_message(tmp_path):
    message = missing_dataset_message(tmp_path, "bottle")
    assert str(tmp_path / "bottle" / "train" / "good") in message
    assert "download_mvtec" in message
    assert "https://www.mvtec.com/company/research/datasets/mvtec-ad" in message
