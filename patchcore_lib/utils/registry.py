"""A name -> object registry filled by a decorator: one decorated definition adds a backbone, sampler,
detector or dataset layout, and the CLI, the notebooks and the tests pick it up from here."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from patchcore_lib.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Ordered ``name -> entry`` mapping; ``get`` raises one ConfigError listing the valid names.

    ``providers``: the modules whose decorated definitions fill the registry, imported on the first lookup (the
    packages load their modules on first use, so importing the registry's own module need not have imported
    them)."""

    def __init__(self, kind: str, providers: Iterable[str] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._providers = tuple(providers)

    def _filled(self) -> dict[str, T]:
        """The entries, after importing the providers once (a lookup while they are imported sees those so far);
        the providers' entries come first, in the providers' order, whichever was imported first."""
        if self._providers:
            providers, self._providers = self._providers, ()
            try:
                for module in providers:
                    importlib.import_module(module)
            except BaseException:
                self._providers = providers
                raise
            rank = {module: i for i, module in enumerate(providers)}
            self._entries = dict(sorted(self._entries.items(),
                                        key=lambda item: rank.get(getattr(item[1], "__module__", ""), len(rank))))
        return self._entries

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` above a class or function."""
        def add(entry: T) -> T:
            self.add(name, entry)
            return entry
        return add

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: Any) -> T:
        if not isinstance(name, str) or name not in self._filled():
            raise ConfigError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._filled())

    def items(self) -> list[tuple[str, T]]:
        return list(self._filled().items())

    def __contains__(self, name: object) -> bool:
        return name in self._filled()

    def __iter__(self) -> Iterator[str]:
        return iter(self._filled())

    def __len__(self) -> int:
        return len(self._filled())

    def __getitem__(self, name: str) -> T:
        return self.get(name)
