"""Pareto fronts and 2-D hypervolume of (cost, accuracy) points: cost minimised, accuracy maximised."""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np


def pareto_front(points: Any) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points``, an (n, 2) array of (cost, accuracy).

    Cost is minimised, accuracy maximised. A row is dominated when another is no worse in both and
    better in one. Rows with NaN or inf are never on the front; of exact duplicates only the first
    is kept, so the result does not depend on anything but the input order.

    >>> pareto_front([(1.0, 90.0), (0.5, 90.0), (0.5, 80.0), (0.25, 70.0), (0.25, 70.0)]).tolist()
    [False, True, False, True, False]
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    mask = np.zeros(len(pts), dtype=bool)
    idx = np.flatnonzero(np.isfinite(pts).all(axis=1))
    if idx.size == 0:
        return mask
    cost, acc = pts[idx, 0], pts[idx, 1]
    order = np.lexsort((idx, -acc, cost))  # cheapest first; at equal cost the most accurate first
    acc_sorted = acc[order]
    best_before = np.maximum.accumulate(np.concatenate(([-np.inf], acc_sorted[:-1])))
    mask[idx[order[acc_sorted > best_before]]] = True
    return mask


def hypervolume_2d(points: Any, reference: Tuple[float, float]) -> float:
    """Area dominated by ``points`` (cost down, accuracy up) and bounded by ``reference``.

    ``reference`` is (cost, accuracy) of the worst point that still counts: here the dense base
    model's cost (1.0 as a fraction) and chance accuracy. Points that do not beat the reference in
    both coordinates add nothing; NaN and inf rows are ignored.

    >>> hypervolume_2d([(0.25, 80.0), (0.5, 90.0)], reference=(1.0, 10.0))
    57.5
    """
    ref_cost, ref_acc = float(reference[0]), float(reference[1])
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    pts = pts[(pts[:, 0] < ref_cost) & (pts[:, 1] > ref_acc)]
    if len(pts) == 0:
        return 0.0
    front = pts[pareto_front(pts)]
    front = front[np.argsort(front[:, 0], kind="stable")]  # on a front accuracy rises with cost
    widths = np.diff(np.append(front[:, 0], ref_cost))
    return float(np.sum(widths * (front[:, 1] - ref_acc)))
