"""Pareto fronts and hypervolume (prune_sweep.pareto) on hand-made points."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from prune_sweep.pareto import hypervolume_2d, pareto_front

inf, nan = math.inf, math.nan


def brute_force_front(points):
    """O(n^2) reference: dominated rows and later copies of an earlier row are off the front."""
    pts = [tuple(p) for p in points]
    out = []
    for i, (c, a) in enumerate(pts):
        if not (math.isfinite(c) and math.isfinite(a)):
            out.append(False)
            continue
        dominated = any(math.isfinite(c2) and math.isfinite(a2) and c2 <= c and a2 >= a and (c2 < c or a2 > a)
                        for c2, a2 in pts)
        duplicate = any(pts[j] == (c, a) for j in range(i))
        out.append(not dominated and not duplicate)
    return out


def test_front_keeps_only_the_non_dominated_points():
    pts = [(1.0, 90.0), (0.5, 88.0), (0.25, 80.0), (0.6, 85.0), (0.3, 79.0)]
    assert pareto_front(pts).tolist() == [True, True, True, False, False]


def test_ties_in_one_coordinate_keep_the_better_other():
    # equal cost: the more accurate wins; equal accuracy: the cheaper wins
    pts = [(0.5, 80.0), (0.5, 85.0), (0.7, 85.0), (0.2, 70.0), (0.9, 70.0)]
    assert pareto_front(pts).tolist() == [False, True, False, True, False]


def test_nan_and_inf_rows_are_never_on_the_front():
    pts = [(nan, 99.0), (0.1, nan), (0.1, inf), (-inf, 50.0), (inf, 99.0), (0.5, -inf), (0.5, 80.0), (0.8, 90.0)]
    assert pareto_front(pts).tolist() == [False] * 6 + [True, True]


def test_only_non_finite_rows_give_an_empty_front():
    assert pareto_front([(nan, nan), (inf, 1.0)]).tolist() == [False, False]
    assert pareto_front(np.empty((0, 2))).tolist() == []


def test_a_single_trial_is_its_own_front():
    assert pareto_front([(0.4, 60.0)]).tolist() == [True]


def test_one_point_dominating_all_others():
    pts = [(0.9, 80.0), (0.5, 70.0), (0.2, 95.0), (0.6, 94.9), (0.2, 94.0)]
    assert pareto_front(pts).tolist() == [False, False, True, False, False]


def test_exact_duplicates_keep_the_first_one():
    pts = [(0.5, 80.0), (0.3, 70.0), (0.5, 80.0), (0.3, 70.0), (0.5, 80.0)]
    assert pareto_front(pts).tolist() == [True, True, False, False, False]


def test_duplicates_keep_one_whatever_the_order():
    base = [(0.5, 80.0), (0.5, 80.0), (0.3, 70.0), (0.9, 60.0)]
    for perm in itertools.permutations(range(len(base))):
        pts = [base[i] for i in perm]
        mask = pareto_front(pts)
        kept = sorted(tuple(p) for p, m in zip(pts, mask) if m)
        assert kept == [(0.3, 70.0), (0.5, 80.0)]
        first = next(j for j, i in enumerate(perm) if base[i] == (0.5, 80.0))
        assert mask[first]


@pytest.mark.parametrize("seed", range(5))
def test_front_matches_brute_force_on_points_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 6, size=(60, 2)).astype(float)  # a coarse grid forces ties and duplicates
    pts[rng.random(60) < 0.1, 0] = nan
    pts[rng.random(60) < 0.05, 1] = inf
    assert pareto_front(pts).tolist() == brute_force_front(pts)


def test_hypervolume_by_hand():
    # boxes [0.25, 1] x [10, 80] and [0.5, 1] x [10, 90]: 0.25 * 70 + 0.5 * 80
    assert hypervolume_2d([(0.25, 80.0), (0.5, 90.0)], reference=(1.0, 10.0)) == pytest.approx(57.5)


def test_hypervolume_ignores_dominated_non_finite_and_outside_points():
    front = [(0.25, 80.0), (0.5, 90.0)]
    extra = [(0.5, 85.0), (0.9, 20.0), (nan, 99.0), (0.1, inf), (1.2, 99.0), (0.1, 5.0), (0.5, 90.0)]
    assert hypervolume_2d(front + extra, (1.0, 10.0)) == pytest.approx(57.5)
    assert hypervolume_2d([], (1.0, 10.0)) == 0.0
    assert hypervolume_2d([(1.5, 99.0)], (1.0, 10.0)) == 0.0


def test_hypervolume_of_one_point_is_its_box():
    assert hypervolume_2d([(0.4, 70.0)], (1.0, 10.0)) == pytest.approx(0.6 * 60.0)


@pytest.mark.parametrize("seed", range(6))
def test_hypervolume_equals_optunas(seed):
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    cost = rng.uniform(0.01, 1.0, n)
    acc = rng.uniform(10.0, 95.0, n)
    if seed % 2:  # ties and duplicates
        cost, acc = np.round(cost, 1), np.round(acc, -1)
    ref = (1.0, 10.0)
    ours = hypervolume_2d(np.c_[cost, acc], ref)
    # Optuna minimises every objective: negate accuracy
    theirs = compute_hypervolume(np.c_[cost, -acc], np.array([ref[0], -ref[1]]))
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12)
    assert ours > 0 or np.all((cost >= 1.0) | (acc <= 10.0))


def test_a_study_of_several_models_gives_each_model_its_own_series():
    """Cost fractions of two networks are fractions of two dense costs: each model's trials are
    their own series (method @ model), with their own fronts; the trial's method is still read back."""
    from prune_sweep.analysis import criterion_series, method_name

    table = pd.DataFrame({"experiment": ["e"] * 4 + ["f"], "prune.method": ["channel"] * 4 + ["imp"],
                          "prune.criterion": ["l1", "taylor", "l1", "taylor", "l1"],
                          "model.name": ["torchvision:resnet18"] * 2 + ["/home/me/nets.py:build"] * 2 + ["resnet20"]})
    out, notes = criterion_series(table)
    assert list(out["prune.method"]) == ["channel/l1 @ torchvision.resnet18", "channel/taylor @ torchvision.resnet18",
                                         "channel/l1 @ nets.build", "channel/taylor @ nets.build", "imp"]
    assert list(method_name(out["prune.method"])) == ["channel"] * 4 + ["imp"]
    assert len(notes) == 2 and "e: 2 models" in notes[1]
