"""Two faiss builds in one environment (a conda faiss-gpu and a pip faiss-cpu, or two pip wheels) install the
same module ``faiss`` over each other and fail in ways that do not name the cause; this finds that case."""
from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable

#: distribution name prefixes of faiss builds (pip: faiss-cpu, faiss-gpu, faiss-gpu-cu11/cu12; conda: faiss-cpu,
#: faiss-gpu, and faiss / libfaiss with a cuda build string)
_FAISS = ("faiss-cpu", "faiss-gpu", "faiss")


def installed_faiss(prefix: str | Path | None = None) -> list[str]:
    """The faiss builds installed in this environment, as ``'<installer>:<name>'`` (pip via the Python package
    metadata, conda via ``<prefix>/conda-meta``; a conda build's parts count once), e.g.
    ``['conda:faiss-gpu', 'pip:faiss-cpu']``."""
    found = set()
    for distribution in metadata.distributions():
        name = str((distribution.metadata.get_all("Name") or [""])[0]).lower().replace("_", "-")
        if name.startswith(_FAISS):
            installer = (distribution.read_text("INSTALLER") or "pip").strip().lower()
            found.add(f"{'conda' if installer == 'conda' else 'pip'}:{name}")
    conda_meta = Path(prefix or sys.prefix) / "conda-meta"
    if conda_meta.is_dir():
        for record in conda_meta.glob("*faiss*.json"):
            try:
                data = json.loads(record.read_text())
            except (OSError, ValueError):
                continue
            name, build = str(data.get("name", "")).lower(), str(data.get("build", "")).lower()
            if name in ("faiss", "libfaiss", "faiss-cpu", "faiss-gpu"):
                found.add(f"conda:{'faiss-gpu' if 'cuda' in build or name == 'faiss-gpu' else 'faiss-cpu'}")
    return sorted(found)


def faiss_conflict(installed: Iterable[str]) -> str | None:
    """A one-paragraph warning when ``installed`` (:func:`installed_faiss`) holds more than one faiss build
    (their names differ), else None."""
    builds = sorted(set(installed))
    if len(builds) < 2:
        return None
    pip_ones = [b.split(":", 1)[1] for b in builds if b.startswith("pip:")]
    fix = f"pip uninstall {' '.join(pip_ones)}" if 0 < len(pip_ones) < len(builds) else "uninstall all but one"
    return (f"more than one faiss build is installed ({', '.join(builds)}): they install the same module 'faiss' "
            f"over each other, so kNN may fail or run on the wrong device. Keep one: {fix} (conda: "
            "environment.yml has faiss-gpu, environment-cpu.yml faiss-cpu; pip: the [faiss] or the [gpu] extra)")
