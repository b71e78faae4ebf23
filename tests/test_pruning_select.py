"""The pure arithmetic of pruning on hand-sized score tensors: rankings, LAMP, IMP rounds, search."""

import math

import pytest
import torch
import torch_pruning as tp

from prune_core.pruning.select import (Ranking, imp_round_fraction, lamp_normalize, round_keep, select_lowest,
                                       solve_ratio, sparsity_after)


def lamp_by_definition(scores):
    """Lee et al. 2021, eq. 2, written as the paper states it: s_u / sum of s_v over v >= u."""
    s = [float(v) for v in scores]
    order = sorted(range(len(s)), key=lambda i: (s[i], i))
    rank = {i: r for r, i in enumerate(order)}
    return [s[u] / sum(s[v] for v in order[rank[u]:]) for u in range(len(s))]


def test_lamp_matches_the_papers_formula():
    scores = torch.tensor([1.0, 4.0, 2.0, 3.0])
    # sorted 1, 2, 3, 4: 1/10, 2/9, 3/7, 4/4
    assert lamp_normalize(scores).tolist() == pytest.approx([0.1, 1.0, 2 / 9, 3 / 7])
    g = torch.rand(50, generator=torch.Generator().manual_seed(0))
    assert lamp_normalize(g).tolist() == pytest.approx(lamp_by_definition(g))
    # the largest unit of every layer scores 1: a global LAMP threshold never empties a layer
    assert float(lamp_normalize(g).max()) == pytest.approx(1.0)


def test_lamp_agrees_with_torch_pruning():
    g = torch.rand(30, generator=torch.Generator().manual_seed(1))
    theirs = tp.importance.GroupMagnitudeImportance()._normalize(g.clone(), "lamp")
    assert torch.allclose(lamp_normalize(g), theirs.to(lamp_normalize(g).dtype), atol=1e-6)


def test_local_removes_the_same_fraction_everywhere():
    scores = [torch.tensor([5.0, 1.0, 3.0, 2.0]), torch.tensor([0.1, 0.4, 0.3, 0.2, 9.0, 8.0])]
    chosen = select_lowest(scores, 0.5, "local")
    assert [c.tolist() for c in chosen] == [[1, 3], [0, 2, 3]]


def test_local_never_empties_a_layer():
    assert select_lowest([torch.tensor([1.0, 2.0])], 0.99, "local")[0].tolist() == [0]


def test_global_ranks_across_layers():
    scores = [torch.tensor([5.0, 1.0, 3.0, 2.0]), torch.tensor([0.1, 0.4, 0.3, 0.2, 9.0, 8.0])]
    chosen = select_lowest(scores, 0.5, "global")  # 5 of 10: 0.1, 0.2, 0.3, 0.4, 1.0
    assert [c.tolist() for c in chosen] == [[1], [0, 1, 2, 3]]


def test_global_cap_sends_the_budget_elsewhere():
    scores = [torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([5.0, 6.0, 7.0, 8.0])]
    # 4 of 8 would all come from layer 0; capped at half of it, layer 1 gives the other two
    chosen = select_lowest(scores, 0.5, "global", max_layer_ratio=0.5)
    assert [c.tolist() for c in chosen] == [[0, 1], [0, 1]]
    # without a cap a layer still keeps one unit
    chosen = select_lowest(scores, 0.5, "global")
    assert [c.tolist() for c in chosen] == [[0, 1, 2], [0]]


def test_global_budget_counts_weighted_units():
    # a unit of layer 1 stands for 3 conv layers' channels (a residual group): 2 of them are 6 of 12
    scores = [torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), torch.tensor([0.1, 0.2])]
    chosen = select_lowest(scores, 0.5, "global", weights=[1, 3])
    assert [c.tolist() for c in chosen] == [[0, 1, 2], [0]]
    assert Ranking(scores, "global", weights=[1, 3]).counts(0.5) == [3, 1]


def test_round_to_keeps_multiples():
    assert round_keep(64, 30, 16) == 32
    assert round_keep(64, 5, 16) == 16  # never below one multiple
    assert round_keep(64, 30, 16, min_keep=40) == 48
    assert round_keep(8, 3, 16) == 3  # narrower than round_to: left as it is
    chosen = select_lowest([torch.arange(64.0)], 0.55, "local", round_to=16)
    assert len(chosen[0]) == 32  # 64 - 35 = 29 kept -> 32


def test_ties_break_by_position():
    assert select_lowest([torch.ones(6)], 0.5, "local")[0].tolist() == [0, 1, 2]


def test_imp_round_fraction_reaches_the_ratio():
    p = imp_round_fraction(0.875, 3)
    assert p == pytest.approx(0.5)
    assert [sparsity_after(p, k) for k in (1, 2, 3)] == pytest.approx([0.5, 0.75, 0.875])
    assert sparsity_after(imp_round_fraction(0.9, 4), 4) == pytest.approx(0.9)


def test_solve_ratio_on_a_smooth_and_a_stepped_curve():
    ratio, got = solve_ratio(0.5, lambda r: r ** 2)
    assert got == pytest.approx(0.5, abs=0.005) and ratio == pytest.approx(math.sqrt(0.5), abs=0.01)
    stepped = lambda r: math.floor(r * 10) / 10  # noqa: E731
    with pytest.warns(UserWarning, match="closest reachable"):  # 0.45 falls between two steps
        ratio, got = solve_ratio(0.45, stepped)
    assert got in (0.4, 0.5)
    with pytest.warns(UserWarning, match="closest reachable"):
        _, got = solve_ratio(0.9, lambda r: 0.5 * r)  # beyond what the units hold
    assert got == pytest.approx(0.495)
