"""``SweepError`` and the checks every part of the sweep language reads a value with (``spec``,
``loggers``, ``expand``): each failure is one line naming the file and the key."""

from __future__ import annotations

import math
import re
from typing import Any, Dict, Mapping, Sequence


MAX_CPU, MAX_GPU = 1024, 16  # what one trial may ask for: it runs in one process on one node
MAX_NAME = 100  # an experiment's folder name; trial folders and files nest below it (NAME_MAX is 255 bytes)


class SweepError(ValueError):
    """A bad sweep file or flag. The message is one line naming the key."""


def fail(source: str, where: str, message: str) -> SweepError:
    """The error of a bad value at ``where`` (a dotted path in the file ``source``), to raise."""
    return SweepError(f"{source}: {where}: {message}")


def as_mapping(value: Any, source: str, where: str, allowed: Sequence[str]) -> Dict[str, Any]:
    """``value`` as a dict whose keys are all in ``allowed`` (``None``: empty)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise fail(source, where, f"expected a mapping with keys {', '.join(allowed)}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise fail(source, f"{where}.{unknown[0]}", f"unknown key; expected one of {', '.join(allowed)}")
    return dict(value)


def as_number(value: Any, source: str, where: str, kind: type = float, low: float = -math.inf,
              high: float = math.inf, accepted: str = "a number") -> Any:
    """``value`` as ``kind`` (int: a whole number) in ``[low, high]``; ``accepted`` says what was expected."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or not low <= value <= high:
        raise fail(source, where, f"{value!r}: expected {accepted}")
    return kind(value)


def check_name(value: Any, where: str) -> str:
    """``value`` as an experiment name: one folder directly inside ``--storage``, so no separator,
    no ``.`` or ``..``, no absolute path and at most ``MAX_NAME`` characters. ``where`` names it
    (``sweeps/x.yaml: name``, ``--name``)."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value) and len(value) <= MAX_NAME:
        return value
    shown = repr(value) if not isinstance(value, str) or len(value) <= 60 else f"{value[:40]!r}... ({len(value)} characters)"
    raise SweepError(f"{where}: {shown}: expected a name of letters, digits, '_', '-' or '.', starting with a letter "
                     f"or digit, at most {MAX_NAME} characters (a folder inside --storage)")
