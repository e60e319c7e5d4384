"""Fingerprints of the code a computation runs: the static import closure of some modules of this library.

A skip key built from it changes with any edit to a module the computation can import (at any depth, imports
inside functions included) or to a data file (``.csv``/``.json``) of a package it imports, and with nothing else:
editing the baselines module does not invalidate the coreset ablation. Only modules under the same source root
as ``patchcore_lib`` (the checkout or site-packages) whose top-level package is one of those asked for (and
``patchcore_lib``) are followed; third-party imports are not part of the key.

``python -m patchcore_lib.utils.source_fingerprint [MODULE ...]`` prints the fingerprint (default: the whole
library), for shell scripts that keep a record only while the code that made it is unchanged.
"""
from __future__ import annotations

import ast
import hashlib
import sys
from pathlib import Path
from typing import Iterable

from patchcore_lib.version import __version__

ROOT = Path(__file__).resolve().parents[2]  # the folder holding patchcore_lib/ (checkout or site-packages)
DATA_SUFFIXES = (".csv", ".json")


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of module ``name`` under ``root`` (a package's ``__init__.py``), None when not there."""
    base = root.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def imported_names(source: str, module: str = "", is_package: bool = False) -> set[str]:
    """Every module name ``source`` may import (absolute, relative resolved against ``module``), at any depth
    of the code: ``from a.b import c`` gives ``a.b`` and ``a.b.c`` (``c`` may be a submodule)."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return {n for n in names if n}


def import_closure(modules: Iterable[str], root: Path = ROOT) -> dict[str, Path]:
    """``{module name: file}`` of ``modules`` and everything they import under ``root`` (parent packages
    included: importing ``a.b`` runs ``a/__init__.py``), restricted to their top-level packages and
    ``patchcore_lib``."""
    todo = list(modules)
    tops = {m.split(".")[0] for m in todo} | {"patchcore_lib"}
    found: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        parts = name.split(".")
        if name in found or parts[0] not in tops:
            continue
        path = module_file(name, root)
        if path is None:
            continue
        found[name] = path
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(imported_names(path.read_text(), name, path.name == "__init__.py"))
    return found


def _data_files(folder: Path) -> list[Path]:
    """Data files of a package folder and of its sub-folders that are not packages themselves."""
    out = [p for p in folder.iterdir() if p.is_file() and p.suffix in DATA_SUFFIXES]
    for sub in folder.iterdir():
        if sub.is_dir() and not (sub / "__init__.py").exists() and sub.name != "__pycache__":
            out.extend(p for p in sub.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES)
    return out


def code_files(modules: Iterable[str] = ("patchcore_lib",), root: Path = ROOT) -> list[Path]:
    """The source files of the import closure of ``modules`` and the data files of their packages, sorted."""
    files = set(import_closure(modules, root).values())
    files.update(p for folder in {f.parent for f in files} for p in _data_files(folder))
    return sorted(files)


def code_fingerprint(modules: Iterable[str] = ("patchcore_lib",), root: Path = ROOT) -> str:
    """``<version>+<sha256>`` of the sources in the import closure of ``modules`` and of the data files of
    their packages (names relative to ``root``, contents)."""
    digest = hashlib.sha256()
    for path in code_files(modules, root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:16]}"


def code_manifest(modules: Iterable[str] = ("patchcore_lib",), root: Path = ROOT) -> dict[str, str]:
    """``{file relative to root: 16 hex digits of its SHA-256}`` of :func:`code_files`: what a changed
    :func:`code_fingerprint` is explained by (which module changed)."""
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            for path in code_files(modules, root)}


def library_modules() -> list[str]:
    """Every module of ``patchcore_lib`` (the whole library's closure: :func:`code_fingerprint`'s default
    follows imports only, this lists all files)."""
    package = ROOT / "patchcore_lib"
    return [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for p in sorted(package.rglob("*.py")) if "__pycache__" not in p.parts]


if __name__ == "__main__":
    print(code_fingerprint(sys.argv[1:] or library_modules()))
