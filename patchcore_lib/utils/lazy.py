"""Packages whose names load on first use (PEP 562), declared once as ordinary imports.

A package ``__init__`` lists its public names as ``from patchcore_lib.x.y import a, b`` lines under
``if TYPE_CHECKING:`` (read by type checkers, by the static import closure of
:mod:`~patchcore_lib.utils.source_fingerprint` and by the layer check of tests/test_architecture.py) and ends with
``__getattr__, __dir__ = lazy_exports(__name__, __file__)``: ``from package import a`` then imports ``a``'s module
only, and importing one module of the package does not import its siblings (e.g. ``patchcore predict`` with an
ONNX model never imports torch through them).
"""
from __future__ import annotations

import ast
import functools
import importlib
import sys
from pathlib import Path
from typing import Any, Callable


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def declared_exports(init_file: str | Path) -> dict[str, tuple[str, str]]:
    """``{name: (module, attribute)}`` of the ``from module import attribute [as name]`` lines under the
    top-level ``if TYPE_CHECKING:`` blocks of ``init_file``."""
    found: dict[str, tuple[str, str]] = {}
    for node in ast.parse(Path(init_file).read_text()).body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for line in node.body:
                if isinstance(line, ast.ImportFrom) and line.module and not line.level:
                    found.update({alias.asname or alias.name: (line.module, alias.name) for alias in line.names})
    return found


def lazy_exports(package: str, init_file: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` of ``package`` (its ``__name__`` and ``__file__``) for the names its
    ``if TYPE_CHECKING:`` imports declare (:func:`declared_exports`, read on first use)."""
    exports = functools.cache(lambda: declared_exports(init_file))

    def __getattr__(name: str) -> Any:
        if name not in exports():
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = exports()[name]
        value = getattr(importlib.import_module(module), attribute)
        setattr(sys.modules[package], name, value)  # found once
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports()))

    return __getattr__, __dir__
