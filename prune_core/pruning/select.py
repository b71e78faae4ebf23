"""The arithmetic of pruning, as pure functions on score tensors.

Which units go given per-layer scores (local or global ranking, per-layer caps, channel-count
rounding), LAMP normalisation, IMP's levels (open_lth's sparse_global step), and the search for
the unit ratio that removes a target fraction of FLOPs. Nothing here knows about models.

>>> import torch
>>> [i.tolist() for i in select_lowest([torch.tensor([3., 1., 2.]), torch.tensor([.5, 9.])], 0.5, "global")]
[[1], [0]]
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch


def lamp_normalize(scores: torch.Tensor) -> torch.Tensor:
    """LAMP scores (Lee et al. 2021, eq. 2) of one layer's units.

    With the units sorted by ascending score ``s``, unit ``u`` gets ``s_u / sum_{v >= u} s_v``: its
    share of what survives if everything weaker than it is pruned. The largest unit of every layer
    scores 1, so a global threshold on LAMP scores never empties a layer. The paper's ``s`` is the
    squared weight magnitude; callers pass the score of their unit (squared norms for l2).
    """
    flat = scores.reshape(-1).double()
    order = torch.argsort(flat, stable=True)
    ordered = flat[order]
    # the suffix sums: how much of the layer survives from each position on
    tail = torch.flip(torch.cumsum(torch.flip(ordered, (0,)), 0), (0,))
    out = torch.empty_like(flat)
    out[order] = ordered / tail.clamp_min(torch.finfo(torch.float64).tiny)
    return out.reshape(scores.shape).to(scores.dtype if scores.is_floating_point() else torch.float32)


def comparable(scores: torch.Tensor, ranking: str) -> torch.Tensor:
    """One layer's scores as a ranking compares them across layers: ``global_lamp`` LAMP scores,
    ``global_mean`` divided by their mean, otherwise (``global_raw``, ``local``) as they are."""
    if ranking == "global_lamp":
        return lamp_normalize(scores)
    if ranking == "global_mean":
        return scores / scores.float().mean().clamp_min(1e-12)
    return scores


def round_keep(n: int, keep: int, round_to: int, min_keep: int = 1) -> int:
    """``keep`` moved to the nearest multiple of ``round_to`` (never below ``min_keep`` or one
    multiple, never above ``n``). Layers narrower than ``round_to`` are left as they are: rounding
    them could only empty them or leave them unpruned."""
    if round_to <= 1 or n < round_to:
        return keep
    m = max(round_to, int(math.floor(keep / round_to + 0.5)) * round_to)
    while m < min_keep:
        m += round_to
    return min(m, n)


class Ranking:
    """Which units to remove in each layer, given one 1-D score tensor per layer.

    ``local``: every layer removes ``round(ratio * n)`` of its lowest-scored units.
    ``global``: one ranking over all units; the lowest go until ``ratio`` of all units (each unit
    of layer ``i`` counting ``weights[i]``, default 1) are removed, no layer losing more than
    ``max_layer_ratio`` of its units, so the budget a capped layer cannot take goes to the next
    lowest units elsewhere. Either way a layer keeps at least one unit, and its kept count is
    rounded to a multiple of ``round_to`` where it is at least that wide. Ties go by position.

    The sorting is done once, so ``select`` at many ratios (a FLOPs-target search) is cheap.
    """

    def __init__(self, scores: Sequence[torch.Tensor], scope: str = "local", max_layer_ratio: float = 1.0,
                 round_to: Union[int, Sequence[int]] = 1, weights: Optional[Sequence[float]] = None,
                 layer_ratios: Optional[Sequence[Optional[float]]] = None):
        if scope not in ("local", "global"):
            raise ValueError(f"scope={scope!r}: expected local or global")
        self.scope = scope
        # local: a layer's own ratio where given (prune.stage_ratios), else the one select() gets
        self.layer_ratios = list(layer_ratios) if layer_ratios is not None else [None] * len(scores)
        self.sizes = [int(s.numel()) for s in scores]
        # one multiple per layer where layers differ (attention heads are never rounded)
        self.round_to = [round_to] * len(self.sizes) if isinstance(round_to, int) else list(round_to)
        # each layer's units from lowest to highest score
        self.order = [torch.argsort(s.reshape(-1).double().cpu(), stable=True) for s in scores]
        if scope == "global" and self.sizes:
            self._rank_globally(scores, max_layer_ratio, weights)

    def _rank_globally(self, scores, max_layer_ratio, weights) -> None:
        sizes = torch.tensor(self.sizes)
        w = torch.ones(len(self.sizes), dtype=torch.float64) if weights is None else torch.tensor(
            [float(x) for x in weights], dtype=torch.float64)
        caps = torch.tensor([max(0, min(n - 1, int(math.floor(max_layer_ratio * n)))) for n in self.sizes])
        self.min_keep = (sizes - caps).tolist()
        layer = torch.repeat_interleave(torch.arange(len(self.sizes)), sizes)
        # a unit is eligible while its layer is under its cap: its rank inside the layer is below it
        rank = torch.cat([torch.argsort(o) for o in self.order])
        flat = torch.cat([s.reshape(-1).double().cpu() for s in scores])
        order = torch.argsort(flat, stable=True)
        order = order[(rank < caps[layer])[order]]
        self.layer_sorted = layer[order]
        self.unit_w = w[self.layer_sorted]
        self.cum = torch.cumsum(self.unit_w, 0)
        self.budget_total = float((w * sizes.double()).sum())

    def counts(self, ratio: float) -> List[int]:
        """How many units each layer loses at ``ratio`` (before rounding)."""
        if self.scope == "local":
            return [min(n - 1, int(math.floor((ratio if r is None else r) * n + 0.5)))
                    for n, r in zip(self.sizes, self.layer_ratios)]
        if not self.sizes:
            return []
        # take units while the budget covers at least half of the next one: the nearest total
        take = int(((self.cum - self.unit_w / 2) < ratio * self.budget_total).sum())
        return torch.bincount(self.layer_sorted[:take], minlength=len(self.sizes)).tolist()

    def select(self, ratio: float) -> List[torch.Tensor]:
        """Sorted indices of the units each layer loses at ``ratio``."""
        min_keep = self.min_keep if self.scope == "global" and self.sizes else [1] * len(self.sizes)
        out = []
        for order, n, k, lo, multiple in zip(self.order, self.sizes, self.counts(ratio), min_keep, self.round_to):
            keep = round_keep(n, n - k, multiple, lo) if k > 0 else n
            out.append(torch.sort(order[: n - keep]).values)
        return out


def select_lowest(scores: Sequence[torch.Tensor], ratio: float, scope: str = "local",
                  max_layer_ratio: float = 1.0, round_to: int = 1,
                  weights: Optional[Sequence[float]] = None) -> List[torch.Tensor]:
    """Indices of the units to remove in each layer at ``ratio`` (see ``Ranking``)."""
    return Ranking(scores, scope, max_layer_ratio, round_to, weights).select(ratio)


def imp_round_fraction(ratio: float, rounds: int) -> float:
    """The fraction ``p`` of the remaining weights each IMP round removes so that ``rounds`` rounds
    reach sparsity ``ratio``: ``1 - (1 - p) ** rounds == ratio`` (Frankle & Carbin 2019, sec. 2)."""
    return 1.0 - (1.0 - ratio) ** (1.0 / rounds)


def sparsity_after(p: float, k: int) -> float:
    """Sparsity after ``k`` rounds that each remove a fraction ``p`` of what remains."""
    return 1.0 - (1.0 - p) ** k


def imp_levels(ratio: float, fraction: float) -> int:
    """How many IMP levels reach sparsity ``ratio`` when every level but the last removes
    ``fraction`` of the remaining weights: the smallest ``L`` with ``1 - (1 - fraction) ** L >= ratio``
    (at least 1; the last level then removes what is left to reach ``ratio`` exactly)."""
    if ratio <= 0.0:
        return 1
    # the tolerance keeps a ratio that a whole number of levels reaches (0.36 at 0.2) at that number
    return max(1, math.ceil(math.log1p(-ratio) / math.log1p(-fraction) - 1e-9))


def sparse_global_keep(scores: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], fraction: float
                       ) -> List[torch.Tensor]:
    """One level of open_lth's ``pruning/sparse_global.py`` (``Strategy.prune``), transcribed.

    ``n = ceil(fraction * remaining)``; the threshold is the ``n``-th (0-based) smallest ``|score|``
    among the live weights (mask 1), and a live weight survives where ``|score| > threshold``. So it
    removes ``n + 1`` weights when the magnitudes are distinct, and every weight tied with the
    threshold. Returns the new masks (never reviving a removed weight). Where ``n`` reaches the
    number of live weights (open_lth: an IndexError) nothing survives.
    """
    remaining = sum(int(m.sum()) for m in masks)
    n = math.ceil(fraction * remaining)
    live = torch.cat([s.detach().reshape(-1)[m.reshape(-1) == 1].abs() for s, m in zip(scores, masks)])
    if n >= live.numel():
        return [torch.zeros_like(m) for m in masks]
    threshold = torch.sort(live).values[n]
    return [torch.where(s.detach().abs() > threshold, m, torch.zeros_like(m)) for s, m in zip(scores, masks)]


def lowest_count_keep(scores: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], n_remove: int
                      ) -> List[torch.Tensor]:
    """New masks with exactly ``n_remove`` more live weights removed: the lowest ``|score|`` over
    all tensors (ties by position). IMP's last level uses it to land exactly on its ratio."""
    flat = torch.cat([torch.where(m.reshape(-1) == 1, s.detach().reshape(-1).abs().double(),
                                  torch.full((m.numel(),), -1.0, dtype=torch.float64))
                      for s, m in zip(scores, masks)])
    dead = int((flat < 0).sum())
    gone = torch.zeros(flat.numel(), dtype=torch.bool)
    gone[torch.argsort(flat, stable=True)[: dead + max(0, n_remove)]] = True
    out, start = [], 0
    for m in masks:
        out.append(torch.where(gone[start: start + m.numel()].reshape(m.shape), torch.zeros_like(m), m))
        start += m.numel()
    return out


def solve_ratio(target: float, removed_at: Callable[[float], float], hi: float = 0.99, tol: float = 0.005,
                max_iter: int = 30, what: str = "FLOPs") -> Tuple[float, float]:
    """The unit ratio whose removed fraction (``removed_at(ratio)``, of ``what``: FLOPs or latency) is
    ``target``.

    Bisection on [0, ``hi``]; ``removed_at`` must not decrease with the ratio. Stops within ``tol``
    of the target or when the interval closes (units are discrete), and returns the best
    (ratio, removed fraction) seen; warns when that misses the target by more than ``2 * tol``
    (a target beyond what the method's units hold, or steps coarser than the tolerance).
    """
    ratio, got = _bisect(target, removed_at, hi, tol, max_iter)
    if abs(got - target) > 2 * tol:
        warnings.warn(f"{what} target {target:.3f}: the closest reachable is {got:.3f} (unit ratio {ratio:.3f})",
                      stacklevel=2)
    return ratio, got


def _bisect(target: float, removed_at: Callable[[float], float], hi: float, tol: float, max_iter: int
            ) -> Tuple[float, float]:
    lo, best = 0.0, (0.0, removed_at(0.0))
    if abs(best[1] - target) <= tol:
        return best
    top = removed_at(hi)
    if top <= target:
        return (hi, top) if abs(top - target) < abs(best[1] - target) else best
    best = min(best, (hi, top), key=lambda rf: abs(rf[1] - target))
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        got = removed_at(mid)
        if abs(got - target) < abs(best[1] - target):
            best = (mid, got)
        if abs(got - target) <= tol or hi - lo < 1e-4:
            break
        if got < target:
            lo = mid
        else:
            hi = mid
    return best
