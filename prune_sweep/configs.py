"""Configurations: the trials of one setting run with several seeds, read as one point.

A configuration is a trial's swept keys except ``runtime.seed``, plus ``GROUP_KEYS``. Its point is
the mean over its seeds of validation accuracy, test accuracy and every cost, with the sample
standard deviation (ddof=1) of both accuracies and the seed count. Every choice the analysis
makes reads ``SELECT`` (validation accuracy); ``REPORT`` (test accuracy) is only shown beside it,
so the number reported was not also the number a winner was picked on (ARCHITECTURE.md, contract 8).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import pandas as pd

from .results import GROUP_KEYS, Experiment

SELECT = "val_acc_final"  # fronts, budget winners, hyperparameters and hypervolume read this
REPORT = "acc_final"  # shown for the chosen points, never used to choose

# trial columns averaged over a configuration's seeds (those present in the table)
MEANS = ("val_acc_final", "acc_final", "acc_base", "num_classes", "flops_final", "flops_nz_final", "params_nz_final",
         "latency_ms_final", "flops_base", "flops_nz_base", "params_nz_base", "params_base", "latency_ms_base",
         "epochs_base", "epochs_prune", "epochs_trial", "epochs_teacher", "finetune_epochs", "compute_epochs", "latency_ms_final_ort",
         "latency_ms_base_ort")


def config_keys(exps: Sequence[Experiment]) -> List[str]:
    """The keys that name a configuration: GROUP_KEYS and every swept key, less the seed."""
    return [k for k in dict.fromkeys([*GROUP_KEYS, *(k for e in exps for k in e.swept)]) if k != "runtime.seed"]


def config_ids(table: pd.DataFrame, exps: Sequence[Experiment]) -> np.ndarray:
    """An integer per row, equal for the rows of one configuration of one experiment."""
    keys = [k for k in ["experiment", *config_keys(exps)] if k in table]
    # text keys: a key whose values mix types across trials still groups
    frame = table[keys].astype(object).where(table[keys].notna(), "<none>").astype(str)
    return frame.groupby(keys, sort=False).ngroup().to_numpy()


def usable(table: pd.DataFrame) -> pd.Series:
    """Finished trials with a validation accuracy: the only ones that enter a configuration."""
    return (table["status"] == "done") & np.isfinite(table[SELECT].astype(float))


def configurations(table: pd.DataFrame, exps: Sequence[Experiment], fracs: Sequence[str]) -> pd.DataFrame:
    """One row per configuration of the usable trials of ``table`` (which carries ``config``).

    Columns: the first seed's row (``trial_id``, keys, ``command``), ``trials`` (every trial id),
    ``seeds`` (how many), ``seed_values``, the means of ``MEANS`` and ``fracs`` under their own
    names, and ``<acc>_std`` for both accuracies (NaN with one seed).
    """
    done = table[usable(table)]
    keys = [k for k in config_keys(exps) if k in table]
    head = ["experiment", "config", "trial_id", *keys, "command"]
    cols = [c for c in (*MEANS, *fracs) if c in done]
    if done.empty:
        numeric = [*cols, f"{SELECT}_std", f"{REPORT}_std", "seeds"]
        return pd.DataFrame({**{c: pd.Series(dtype=object) for c in [*head, "trials", "seed_values"]},
                             **{c: pd.Series(dtype=float) for c in numeric}})
    first = done.drop_duplicates("config").set_index("config")[[c for c in head if c != "config"]]
    g = done.groupby("config", sort=False)
    out = first.join(g[cols].mean())
    out[f"{SELECT}_std"] = g[SELECT].std(ddof=1)
    out[f"{REPORT}_std"] = g[REPORT].std(ddof=1)
    out["seeds"] = g.size()
    # plain dicts: a Python function per group through groupby.agg costs more than the rest together
    trials: Dict[int, List[str]] = {}
    seeds: Dict[int, set] = {}
    for c, tid, seed in zip(done["config"].to_numpy(), done["trial_id"].to_numpy(), done["runtime.seed"].to_numpy()):
        trials.setdefault(c, []).append(str(tid))
        seeds.setdefault(c, set()).add(_seed(seed))
    out["trials"] = [" ".join(trials[c]) for c in out.index]
    out["seed_values"] = [",".join(sorted(seeds[c])) for c in out.index]
    return out.reset_index()


def _seed(value) -> str:
    return str(int(value)) if isinstance(value, (int, float, np.number)) and float(value).is_integer() else str(value)


def acc_text(mean: float, std: float, n: int, repeated: bool) -> str:
    """``95.10 ± 0.30 (n=3)`` where seeds repeat; ``95.10`` otherwise ("–" when missing)."""
    if mean is None or not np.isfinite(mean):
        return "–"
    if not repeated:
        return f"{mean:.2f}"
    spread = f"{std:.2f}" if std is not None and np.isfinite(std) else "–"
    return f"{mean:.2f} ± {spread} (n={int(n)})"
