"""The fairness of the comparison on hand-made result tables: choices on validation, seeds as
means, training compute with a shared base, and the compute warning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prune_core.schema import METRIC_KEYS
from prune_sweep.analysis import analyze_results
from prune_sweep.fairness import compute_warning
from prune_sweep.report import COMPUTE_COL, TEST_COL, VAL_COL, _budget_frame, _trial_frame, summary_text
from prune_sweep.results import GROUP_KEYS, Experiment, Results

FLOPS = 100e6


def trial(tid: str, method: str = "channel", ratio: float = 0.5, frac: float = 0.5, val: float = 90.0,
          test: float = 90.0, seed: int = 0, lr: float = 0.01, epochs_base: float = 10, epochs_trial: float = 2,
          status: str = "done", **extra) -> dict:
    row = {k: np.nan for k in METRIC_KEYS}
    row.update({"experiment": "e", "trial_id": tid, "status": status, "reason": "", "prune.method": method,
                "prune.criterion": "l1", "prune.scope": "local", "prune.ratio": ratio, "runtime.seed": seed,
                "finetune.lr": lr, "epochs": 2, "val_acc_last": val, "trial_dir": tid, "command": f"run {tid}",
                "acc_base": 93.0, "num_classes": 10, "val_acc_final": val, "acc_final": test,
                "flops_base": FLOPS, "flops_final": frac * FLOPS, "flops_nz_base": FLOPS,
                "flops_nz_final": frac * FLOPS,
                "params_base": 1e5, "params_nz_base": 1e5, "params_nz_final": frac * 1e5, "latency_ms_base": 2.0,
                "latency_ms_final": 2.0 * frac, "epochs_base": epochs_base, "epochs_trial": epochs_trial})
    row.update(extra)
    return row


def analyse(rows, budgets=(0.5,), base_config=None):
    table = pd.DataFrame(rows)
    exp = Experiment("e", Path("e"), "", False, ["prune.method", "prune.ratio", "runtime.seed", "finetune.lr"],
                     base_config or {})
    return analyze_results(Results(table, pd.DataFrame(), {}, [exp]), budgets)


def on_front(a, col="front_flops"):
    return set(a.table.loc[a.table[col], "trial_id"])


def test_best_test_accuracy_with_worse_validation_is_off_the_front_and_not_the_budget_winner():
    a = analyse([trial("test_best", frac=0.5, val=90.0, test=95.0, lr=0.1),
                 trial("val_best", frac=0.5, val=92.0, test=91.0, lr=0.01),
                 trial("cheap", ratio=0.8, frac=0.2, val=80.0, test=80.0)])
    assert on_front(a) == {"val_best", "cheap"}
    assert on_front(a, "front_flops_method") == {"val_best", "cheap"}
    winner = a.budgets[(a.budgets["axis"] == "flops") & (a.budgets["budget"] == 0.5)].iloc[0]
    assert winner["trial_id"] == "val_best" and winner["acc_final"] == 91.0
    # hypervolume on validation: 0.8 x (80 - 10) + 0.3 x (92 - 80)
    assert a.hypervolume.set_index("method").loc["all", "hv_flops"] == pytest.approx(0.8 * 70 + 0.5 * 12)
    # the table shows both, test labelled as the reported number
    frame = _trial_frame(a.configs[a.configs["front_flops"]].sort_values("flops_frac"), False, a.repeated)
    assert frame[VAL_COL].tolist() == ["80.00", "92.00"] and frame[TEST_COL].tolist() == ["80.00", "91.00"]


def test_a_trial_without_validation_accuracy_is_not_on_a_front():
    a = analyse([trial("no_val", frac=0.1, val=np.nan, test=99.0), trial("ok", frac=0.5, val=90.0)])
    assert on_front(a) == {"ok"} and on_front(a, "front_compute") == {"ok"}


def test_seeds_are_one_point_with_mean_std_and_n_and_fronts_use_the_means():
    rows = [trial(f"x{s}", frac=0.5, val=v, test=t, seed=s) for s, v, t in zip(range(3), (89, 91, 93), (90, 92, 94))]
    # costlier, one lucky seed (95 on validation) but a lower mean: dominated on the means
    rows += [trial(f"y{s}", ratio=0.4, frac=0.6, val=v, test=96.0, seed=s) for s, v in zip(range(3), (80, 80, 95))]
    a = analyse(rows)
    assert a.repeated and len(a.configs) == 2
    x = a.configs.set_index("trial_id").loc["x0"]
    assert (x["seeds"], x["acc_final"], x["acc_final_std"]) == (3, pytest.approx(92.0), pytest.approx(2.0))
    assert x["val_acc_final"] == pytest.approx(91.0) and x["seed_values"] == "0,1,2"
    assert on_front(a) == {"x0", "x1", "x2"}
    assert a.configs.loc[a.configs["trial_id"] == "y0", "front_flops"].tolist() == [False]
    frame = _trial_frame(a.configs[a.configs["front_flops"]], False, a.repeated)
    assert frame[TEST_COL].tolist() == ["92.00 ± 2.00 (n=3)"] and frame[VAL_COL].tolist() == ["91.00 ± 2.00 (n=3)"]
    assert len(a.seeds) == 2


def test_budget_table_and_its_compute_column():
    rows = [trial("a", frac=0.3, val=88.0, test=89.0, epochs_trial=2),
            trial("b", method="imp", ratio=0.6, frac=0.45, val=90.0, test=88.5, epochs_trial=14),
            trial("c", ratio=0.3, frac=0.7, val=93.0, test=93.0, epochs_trial=2)]
    a = analyse(rows, budgets=(0.25, 0.5))
    frame = _budget_frame(a, False).set_index("budget")
    assert frame.loc["≤50% dense FLOPs", "trial"] == "b"  # c is too costly, b beats a on validation
    assert frame.loc["≤50% dense FLOPs", COMPUTE_COL] == "17.3"  # 14 + 10 / 3 trials sharing the base
    assert frame.loc["≤50% dense FLOPs", TEST_COL] == "88.50"
    assert frame.loc["≤25% dense FLOPs", "method"] == "no finished trial this cheap"


def test_compute_epochs_shares_the_base_among_its_trials():
    rows = [trial(f"t{i}", ratio=0.2 + 0.1 * i, frac=0.2 + 0.1 * i, epochs_base=10, epochs_trial=2) for i in range(4)]
    rows.append(trial("own_base", ratio=0.9, frac=0.9, seed=1, epochs_base=10, epochs_trial=2))
    rows.append(trial("old", ratio=0.95, frac=0.95, epochs_base=np.nan, epochs_trial=np.nan, seed=2))
    rows.append(trial("at_init", ratio=0.85, frac=0.85, epochs_base=0, epochs_trial=10))  # same base, unused
    a = analyse(rows, base_config={"data.name": "cifar10"})
    compute = a.table.set_index("trial_id")["compute_epochs"]
    assert compute[[f"t{i}" for i in range(4)]].tolist() == [4.5] * 4
    assert compute["own_base"] == 12.0  # runtime.seed is a base key: a base of its own
    assert compute["at_init"] == 10.0  # SNIP trains from scratch: no share of the trained base
    assert np.isnan(compute["old"])  # results from before the epoch keys: missing, not a crash
    frame = _trial_frame(a.configs.sort_values("flops_frac"), False, a.repeated)
    assert frame[COMPUTE_COL].tolist() == ["4.5"] * 4 + ["10", "12", "–"]
    assert len(set(a.table["base_id"])) == 3


def test_a_swept_base_key_gives_each_value_its_own_base():
    rows = [trial("a", **{"data.limit_train": 100}), trial("b", ratio=0.6, frac=0.4, **{"data.limit_train": 200}),
            trial("c", ratio=0.7, frac=0.3, **{"data.limit_train": 200})]
    compute = analyse(rows).table.set_index("trial_id")["compute_epochs"]
    assert compute.tolist() == [12.0, 7.0, 7.0]


def test_compute_warning_above_twice_and_not_below():
    front = pd.DataFrame({"prune.method": ["channel", "channel", "imp", "imp"],
                          "compute_epochs": [4.0, 4.5, 12.0, 13.0]})
    warning = compute_warning(front)
    assert "imp" in warning and "channel" in warning and "2.9x" in warning
    front["compute_epochs"] = [4.0, 4.5, 6.0, 8.0]
    assert compute_warning(front) == ""
    assert compute_warning(front[front["prune.method"] == "imp"]) == ""  # one method: nothing to compare


def test_fairness_section_warns_for_the_dense_flops_front():
    rows = [trial("c1", frac=0.3, val=88.0, epochs_trial=2), trial("c2", ratio=0.3, frac=0.6, val=90.0, epochs_trial=2),
            trial("i1", method="imp", ratio=0.2, frac=1.0, val=93.0, epochs_trial=14)]
    a = analyse(rows)
    assert a.table.loc[a.table["front_flops"], "prune.method"].nunique() == 2
    assert any(line.startswith("e: Warning") and "imp" in line and "channel" in line for line in a.fairness_lines)
    fair = a.fairness.set_index("method")
    assert fair.loc["channel", "seeds"] == "0" and fair.loc["imp", "epochs_base"] == "10"
    assert fair.loc["channel", "base"] == fair.loc["imp", "base"]  # one base for both methods
    even = analyse([{**r, "epochs_trial": 2} for r in rows])
    assert not any("Warning" in line for line in even.fairness_lines)
    assert "training compute (within 2x)" in even.fairness_lines[0].split("differs")[0]
    assert "budget" in even.fairness_lines[0].split("differs")[0] and fair.loc["imp", "budget (epochs)"] == "0"
    at_init = analyse([*(dict(r, epochs_trial=2) for r in rows),
                       trial("s1", method="snip", ratio=0.5, frac=0.9, val=80.0, epochs_base=0, epochs_trial=2)])
    assert "base (one base for all methods)" in at_init.fairness_lines[0].split("differs")[0]  # SNIP: same base
    budgeted = analyse([{**r, "prune.budget_epochs": 40 if r["prune.method"] == "imp" else 0} for r in rows])
    assert "budget" in budgeted.fairness_lines[0].split("differs")[1]  # one method under a budget, one not


def test_a_distilled_method_is_named_in_fairness_and_pays_a_third_of_an_epoch_per_teacher_epoch():
    rows = [trial("c1", frac=0.3, val=88.0, epochs_trial=2, epochs_teacher=2, **{"finetune.kd_alpha": 0.5}),
            trial("k1", method="kernel", ratio=0.3, frac=0.6, val=90.0, epochs_trial=2, epochs_teacher=0,
                  **{"finetune.kd_alpha": 0.0})]
    a = analyse(rows)
    compute = a.table.set_index("trial_id")["compute_epochs"]
    # 2 epochs + 2 teacher epochs / 3 + the base's 10 epochs shared by 2 trials; the other pays no teacher
    assert compute["c1"] == pytest.approx(2 + 2 / 3 + 5) and compute["k1"] == pytest.approx(2 + 5)
    fair = a.fairness.set_index("method")
    assert fair.loc["channel", "distillation (kd_alpha)"] == "0.5" and fair.loc["kernel", "distillation (kd_alpha)"] == "0"
    assert "distillation" in a.fairness_lines[0].split("differs")[1]
    # results written before epochs_teacher was recorded had no teacher: their compute is unchanged
    old = analyse([{k: v for k, v in r.items() if k not in ("epochs_teacher", "finetune.kd_alpha")} for r in rows])
    assert old.table["compute_epochs"].tolist() == [7.0, 7.0]
    assert "distillation" in old.fairness_lines[0].split("differs")[0]  # held equal: both without


def test_a_control_that_beats_a_method_at_equal_flops_is_named_with_its_margin():
    ctl = {"prune.control": "narrow"}
    rows = [trial("c1", ratio=0.7, frac=0.3, val=88.0, test=87.5, **{"prune.control": ""}),
            trial("c2", ratio=0.4, frac=0.6, val=92.0, test=91.0, **{"prune.control": ""}),
            trial("n1", ratio=0.7, frac=0.302, val=90.0, test=89.0, **ctl),  # within 2 % of c1's FLOPs
            trial("n2", ratio=0.4, frac=0.7, val=95.0, test=94.0, **ctl),  # better, but costs more than c2
            trial("s1", ratio=0.7, frac=0.3, val=85.0, test=84.0, **{"prune.control": "scratch_e"}),
            trial("s2", ratio=0.4, frac=0.6, val=91.0, test=90.0, **{"prune.control": "scratch_e"})]
    a = analyse(rows)
    assert sorted(a.table["prune.method"].unique()) == ["channel", "narrow", "scratch_e"]  # controls: own series
    assert ("e: channel is dominated by narrow at 1 of its 2 front points (dense FLOPs 0.30 of the base); most at "
            "0.30: narrow at 0.30 reads 90.00 % validation (test 89.00) against 88.00 % (test 87.50), +2.00 points."
            ) in a.fairness_lines
    assert "e: channel is not dominated by scratch_e on its dense-FLOPs front (2 points)." in a.fairness_lines
    summary = summary_text(a)  # the terminal shows where a control wins, not where none does
    assert "channel is dominated by narrow" in summary and "not dominated" not in summary
    fair = a.fairness.set_index("method")
    assert fair.loc["narrow", "finetune.epochs"] == "–" and fair.loc["channel", "finetune.epochs"] == "3"
    # the controls' own compute does not raise the methods' warning, and they are no method to hold equal
    assert not any("Warning" in line for line in a.fairness_lines)
    assert a.fairness_lines[0] == "e: one method (channel), nothing to compare."
    # with seeds, the line gives mean ± std of both accuracies; a worse control at no lower cost says nothing
    seeds = analyse([*rows, *(dict(r, trial_id=r["trial_id"] + "b", **{"runtime.seed": 1,
                                                                        "val_acc_final": r["val_acc_final"] + 1})
                              for r in rows)])
    assert any("reads 90.50 ± 0.71 % validation" in line for line in seeds.fairness_lines)


def test_group_keys_are_configuration_keys_but_the_seed():
    assert "runtime.seed" in GROUP_KEYS  # the seed groups rows of the table, never configurations


def test_results_without_epoch_keys_show_compute_as_missing():
    rows = [trial("a", frac=0.3, val=88.0, epochs_base=np.nan, epochs_trial=np.nan),
            trial("b", method="kernel", ratio=0.3, frac=0.6, val=90.0, epochs_base=np.nan, epochs_trial=np.nan)]
    a = analyse(rows)
    assert not a.table["front_compute"].any()
    assert _budget_frame(a, False).set_index("budget").loc["≤50% dense FLOPs", COMPUTE_COL] == "–"
    assert "training compute not recorded" in a.fairness_lines[0]
    assert not any("Warning" in line for line in a.fairness_lines)
    assert set(a.fairness["epochs_base"]) == {"–"}


def test_a_one_method_study_of_criteria_gets_a_front_per_criterion_and_a_many_method_study_does_not(tmp_path):
    from prune_sweep.report import write_report

    crit = [trial("l1_a", frac=0.5, val=92.0), trial("l1_b", ratio=0.8, frac=0.2, val=80.0),
            trial("mine_a", frac=0.5, val=91.0, **{"prune.criterion": "linf"}),
            trial("mine_b", ratio=0.8, frac=0.2, val=85.0, **{"prune.criterion": "linf"})]
    a = analyse(crit)
    assert set(a.hypervolume["method"]) == {"all", "channel/l1", "channel/linf"}
    # each criterion's own front keeps its points; together only the better one at each cost
    assert on_front(a, "front_flops_method") == {"l1_a", "l1_b", "mine_a", "mine_b"}
    assert on_front(a) == {"l1_a", "mine_b"}
    assert any("one method (channel) with 2 criteria" in n for n in a.notes)
    write_report(Results(a.table, pd.DataFrame(), {}, []), a, tmp_path)  # results.csv: each trial's own method
    assert set(pd.read_csv(tmp_path / "results.csv")["prune.method"]) == {"channel"}
    mixed = analyse([*crit, trial("kernel_a", method="kernel", frac=0.9, val=93.0)])
    assert set(mixed.hypervolume["method"]) == {"all", "channel", "kernel"}
