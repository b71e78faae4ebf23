"""Plain-dict registries filled by a ``register`` decorator that refuses duplicates."""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, TypeVar

from .errors import ConfigError

T = TypeVar("T")
NAME = re.compile(r"[a-z][a-z0-9_]*")  # config values spell a hyphen as an underscore (sections.canonical)
_REGISTRIES: List[Dict[str, Any]] = []  # every registry ``register`` has filled: what ``forget`` clears


def owner(obj: Any) -> str:
    """The module that registered ``obj`` (a function, a class, or a record holding one)."""
    target = getattr(obj, "prune", obj)  # a method's record names its function's module
    return getattr(target, "__module__", None) or type(obj).__module__


def register(registry: Dict[str, T], name: str, kind: str = "entry") -> Callable[[T], T]:
    """Return a decorator that stores its target in ``registry`` under ``name``. A name already
    taken, or one a config could not spell, is refused in one line (``ConfigError``).

    >>> REG = {}
    >>> @register(REG, "double")
    ... def double(x):
    ...     return 2 * x
    >>> REG["double"](3)
    6
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{kind} name {name!r}: expected lowercase letters, digits and '_', starting with a letter")

    if not any(r is registry for r in _REGISTRIES):
        _REGISTRIES.append(registry)

    def deco(obj: T) -> T:
        if name in registry:
            raise ConfigError(f"{kind} {name!r} is already registered (by {owner(registry[name])}); "
                              "choose another name")
        registry[name] = obj
        return obj

    return deco


def forget(module: str) -> List[str]:
    """Remove every entry the module ``module`` registered, from every registry (a plug-in about
    to be imported again after its file changed); returns the names removed."""
    gone = []
    for registry in _REGISTRIES:
        for name in [n for n, obj in registry.items() if owner(obj) == module]:
            del registry[name]
            gone.append(name)
    return gone
