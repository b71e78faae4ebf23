"""Tiny sweeps for the tests that run ``launch.py``: a sweep file of resnet20 (width 0.5) on a few
hundred mnist5k digits, and the rows its trials wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import yaml


def write_sweep(folder: Path, name: str, ratios: Sequence[float], *, train: Tuple[int, int] = (1, 3),
                finetune: Tuple[int, int] = (3, 6), limit_train: int = 256, **top: Any) -> Path:
    """``<folder>/<name>.yaml``: a grid over ``prune.ratio``; ``train`` and ``finetune`` are
    (epochs, max_steps); ``top`` adds or replaces top-level keys (search, max_failures, ...)."""
    sweep = {"name": name,
             "base": {"data": {"name": "mnist5k", "limit_train": limit_train, "batch_size": 64},
                      "model": {"name": "resnet20", "width": 0.5},
                      "train": {"epochs": train[0], "max_steps": train[1]},
                      "finetune": {"epochs": finetune[0], "max_steps": finetune[1]},
                      "runtime": {"device": "cpu", "latency_repeats": 2, "latency_batch": 2}},
             "space": {"prune.ratio": {"grid": list(ratios)}},
             "resources": {"cpu": 1}, **top}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def trial_rows(exp: Path) -> Dict[str, List[dict]]:
    """Trial folder -> its complete result.json rows (the last line may be half-written while the
    trial runs: only lines ended by a newline are read)."""
    out = {}
    for params in exp.glob("*/params.json"):
        path = params.parent / "result.json"
        lines = path.read_text().split("\n") if path.exists() else []
        out[params.parent.name] = [json.loads(ln) for ln in lines[:-1] if ln.strip()]
    return out
