"""Checksums of saved payloads (model files, feature-cache entries): a SHA-256 over every tensor's dtype, shape
and bytes and over every other value's JSON, stored in the payload under ``checksum`` and verified on load.
A flipped bit anywhere in the data a loader uses changes the checksum."""
from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

CHECKSUM_KEY = "checksum"


def _update(digest: "hashlib._Hash", value: Any) -> None:
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported: JSON records need no torch
    if torch is not None and isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, (bytes, bytearray)):  # e.g. an exported ONNX / TorchScript graph
        digest.update(f"bytes {len(value)}\n".encode())
        digest.update(bytes(value))
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)}\n".encode())
        for key in sorted(value, key=str):
            digest.update(json.dumps(str(key)).encode() + b":")
            _update(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__} {len(value)}\n".encode())
        for item in value:
            _update(digest, item)
    else:
        digest.update(json.dumps(value, sort_keys=True, default=repr).encode() + b"\n")


def payload_checksum(payload: dict[str, Any]) -> str:
    """SHA-256 (hex) of a payload dict, its own ``checksum`` entry left out."""
    digest = hashlib.sha256()
    _update(digest, {k: v for k, v in payload.items() if k != CHECKSUM_KEY})
    return digest.hexdigest()


def seal(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with its checksum added (to be saved)."""
    return {**payload, CHECKSUM_KEY: payload_checksum(payload)}


def checksum_problem(payload: Any) -> str | None:
    """None when ``payload`` is a dict whose stored checksum matches its content, else what is wrong."""
    if not isinstance(payload, dict):
        return f"it holds a {type(payload).__name__}, not a dict"
    stored = payload.get(CHECKSUM_KEY)
    if not isinstance(stored, str):
        return "it has no checksum (written by an older version, or altered)"
    if stored != payload_checksum(payload):
        return "its checksum does not match its content (the file is corrupted or was altered)"
    return None
