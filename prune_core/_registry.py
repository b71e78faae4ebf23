"""Plain-dict registries filled by a ``register`` decorator that refuses duplicates."""

from __future__ import annotations

from typing import Callable, Dict, TypeVar

T = TypeVar("T")


def register(registry: Dict[str, T], name: str) -> Callable[[T], T]:
    """Return a decorator that stores its target in ``registry`` under ``name``.

    >>> REG = {}
    >>> @register(REG, "double")
    ... def double(x):
    ...     return 2 * x
    >>> REG["double"](3)
    6
    """

    def deco(obj: T) -> T:
        if name in registry:
            raise KeyError(f"{name!r} is already registered")
        registry[name] = obj
        return obj

    return deco
