"""Provenance of a result: package versions, the git commit of the code, and the configuration hash."""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from patchcore_lib.version import __version__


def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on."""
    versions = {"python": platform.python_version()}
    for name in ("patchcore_lib", "torch", "torchvision", "timm", "faiss-cpu", "faiss-gpu", "numpy", "scipy",
                 "scikit-learn", "pillow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "patchcore_lib" not in versions:
        versions["patchcore_lib"] = __version__
    return versions


def faiss_info() -> dict[str, Any]:
    """The installed faiss module's ``__version__`` and the GPUs it sees (None / 0 without faiss)."""
    try:
        import faiss
    except ImportError:
        return {"faiss_version": None, "faiss_gpus": 0}
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return {"faiss_version": getattr(faiss, "__version__", None), "faiss_gpus": int(gpus)}


def git_commit() -> str | None:
    """The project's git commit (with ``-dirty`` when tracked files other than ``reports/`` have changes: the
    reports a study writes never make the code that writes them "dirty"), or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                ":(top,exclude)reports"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def config_hash(config: Any) -> str:
    """12 hex digits of the sha256 of a configuration's ``to_dict()``."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
