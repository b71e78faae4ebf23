"""Optuna samplers as Tune stores them: a module-level class, so the standard ``pickle`` Tune's
``OptunaSearch.save`` uses (every experiment checkpoint, ``searcher-state-*.pkl``) finds it by name.
Imported only by a sweep whose search is Optuna's."""

from __future__ import annotations

import threading
from typing import Any, Dict

import optuna


class PicklableNSGAII(optuna.samplers.NSGAIISampler):
    """Optuna's NSGAIISampler without its ``threading.Lock`` (``_thread_lock``) in the pickle:
    Optuna 5's genetic samplers hold one, which made every ``sampler: nsga2`` sweep fail before its
    first trial; a new lock is made on loading."""

    def __getstate__(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_thread_lock"}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()
