"""A tiny name -> object registry, so that a new dataset, backbone or method is one file."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import UnknownName

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries; `register` is a decorator, `get` fails with the allowed names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {name!r}; expected one of: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_submodules(package_name: str, package_path: list[str], skip: tuple[str, ...] = ()) -> None:
    """Import every module of a package so that each registers itself: adding a file is enough."""
    for module in pkgutil.iter_modules(package_path):
        if not module.name.startswith("_") and module.name not in skip:
            importlib.import_module(f"{package_name}.{module.name}")
