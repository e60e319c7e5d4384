"""A name -> object registry filled by a decorator: one decorated definition adds a backbone, sampler,
detector or dataset layout, and the CLI, the notebooks and the tests pick it up from here."""
from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

from patchcore_lib.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Ordered ``name -> entry`` mapping; ``get`` raises one ConfigError listing the valid names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

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
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)
