"""The single-experiment figures the CLI writes beside its metrics, drawn with matplotlib's object
API (``Figure``): no pyplot and no global backend, so importing this module changes nothing for
a caller that plots on its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

from matplotlib.figure import Figure


def training_curves(run_dir: Path) -> Path:
    """Loss and validation accuracy per epoch of base training and fine-tuning."""
    stages = {}
    for stage, name in (("base", "base_history.json"), ("fine-tune", "history.json")):
        path = run_dir / name
        if path.exists():
            stages[stage] = json.loads(path.read_text())
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    offset = 0
    for stage, epochs in stages.items():
        x = [offset + e["epoch"] for e in epochs]
        ax_loss.plot(x, [e["train_loss"] for e in epochs], marker="o", label=stage)
        ax_acc.plot(x, [e["val_acc"] for e in epochs], marker="o", label=stage)
        offset += len(epochs)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = run_dir / "training_curves.png"
    fig.savefig(out, dpi=110)
    return out


def layer_bars(metrics: Dict[str, Any], run_dir: Path) -> None:
    """Per-layer non-zero parameters and output channels, base against pruned."""
    for key, label, name in (("layer_params", "non-zero weights", "parameter_distribution.png"),
                             ("layer_channels", "output channels", "channels_per_layer.png")):
        base, final = metrics.get(f"{key}_base") or {}, metrics.get(f"{key}_final") or {}
        if not base:
            continue
        names = list(base)
        fig = Figure(figsize=(max(6, 0.28 * len(names)), 4))
        ax = fig.subplots()
        idx = range(len(names))
        ax.bar([i - 0.2 for i in idx], [base[n] for n in names], width=0.4, label="base")
        ax.bar([i + 0.2 for i in idx], [final.get(n, 0) for n in names], width=0.4, label="pruned")
        ax.set_xticks(list(idx))
        ax.set_xticklabels(names, rotation=90, fontsize=6)
        ax.set(ylabel=label, title=f"{label} per layer")
        if key == "layer_params":
            ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=110)
