"""Multi-objective early stopping: MO-ASHA as a Ray Tune scheduler (``scheduler: {name: mo_asha}``).

ASHA stops a trial whose validation accuracy is in the bottom of its rung, which is wrong for a
search of the cost/accuracy front: a trial that removes most FLOPs is less accurate at every epoch,
yet it is the front's cheap end. MO-ASHA ranks a rung's results by non-dominated sorting of every
objective instead, so such a trial continues when nothing at its rung dominates it.

Reference: R. Schmucker, M. Donini, V. Perrone, C. Archambeau, "Multi-objective Asynchronous
Successive Halving", arXiv 2106.12639 (2021); reference implementation: syne-tune's ``MOASHA``
(``syne_tune/optimizer/schedulers/multiobjective/moasha.py``). Followed here: one bracket (both
implementations' default) with rungs at ``grace_period * reduction_factor**k`` epochs; at each rung,
asynchronously, a trial's result is ranked against every result already recorded at that rung and
the trial continues when its rank is in the top ``1 / reduction_factor``, else it is stopped; the
first result at a rung always continues; a trial is judged once per rung; ``on_trial_complete``
records the final result like any other.

Deviations, each stated:

* Ranking within a front: the paper's NSGA-II selection, non-dominated sorting with ties in a front
  broken by crowding distance (per objective normalised by the front's range, boundary points
  first). syne-tune's default breaks them by an epsilon-net in raw units, which depends on the
  objectives' scales (accuracy in %, FLOPs as a fraction); crowding distance does not.
* The rank of the new result is its position in that order, ties counting in its favour (as ASHA's
  ``>= cutoff`` does); syne-tune's code reads the sorted order as per-item priorities, which ranks
  whichever trial is sorted last rather than the new one.
* Top ``1 / reduction_factor`` strictly: of ``n`` results the new one continues when fewer than
  ``n / reduction_factor`` rank ahead of it (syne-tune keeps position ``<= n / reduction_factor``,
  one more: with two results and a factor of 2 neither can ever be stopped).
* No stop at ``max_t``: rungs lie strictly below a trial's last epoch (``make_scheduler``), so a
  trial that survives every rung reaches its final report, as the project's ASHA is configured.

State: the rungs (trial id -> signed objective values) pickle with the scheduler; ``save`` /
``restore`` write and read them as JSON (data only: nothing on storage runs code on restore). Ray Tune 2.x calls neither on ``--resume``: the
restored tuner holds the scheduler as pickled when the sweep started (``tuner.pkl``), with empty
rungs (Ray's ASHA stays that way). Tune then adds every restored trial (``on_trial_add``) with its
last result; for a trial whose last result has reached an epoch, this scheduler reads the reports
in the trial's ``result.json`` from storage and records them in the rungs as they were recorded
live, without stopping anything, so the trials that run after a resume are ranked against every
result of the sweep.
"""

from __future__ import annotations

import json
import math
import posixpath
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from prune_sweep.storage import RESULT_FILE, json_rows

Point = Tuple[float, ...]  # one result's objectives, each signed so that lower is better


def non_dominated_fronts(points: Sequence[Point]) -> List[List[int]]:
    """Indices of ``points`` by front (lower is better in every coordinate): front 0 is the
    non-dominated set, front 1 what is non-dominated once front 0 is removed, and so on."""
    remaining = list(range(len(points)))
    fronts: List[List[int]] = []
    while remaining:
        front = [i for i in remaining if not any(_dominates(points[j], points[i]) for j in remaining if j != i)]
        fronts.append(front)
        remaining = [i for i in remaining if i not in front]
    return fronts


def _dominates(a: Point, b: Point) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def crowding_distance(points: Sequence[Point], front: Sequence[int]) -> Dict[int, float]:
    """NSGA-II's crowding distance of each index of ``front``: per objective, the gap between its
    two neighbours divided by the front's range; the two ends of any objective get infinity."""
    dist = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}
    for m in range(len(points[front[0]])):
        order = sorted(front, key=lambda i: points[i][m])
        low, high = points[order[0]][m], points[order[-1]][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        if high == low:
            continue
        for prev, cur, nxt in zip(order, order[1:], order[2:]):
            dist[cur] += (points[nxt][m] - points[prev][m]) / (high - low)
    return dist


def rank_of_last(points: Sequence[Point]) -> int:
    """How many of ``points`` rank strictly ahead of the last one: every point of a better front,
    and the points of its own front with a larger crowding distance."""
    last = len(points) - 1
    fronts = non_dominated_fronts(points)
    k = next(f for f, front in enumerate(fronts) if last in front)
    crowd = crowding_distance(points, fronts[k])
    return sum(len(f) for f in fronts[:k]) + sum(crowd[i] > crowd[last] for i in fronts[k])


class MOASHAScheduler(FIFOScheduler):
    """MO-ASHA (see the module's docstring): asynchronous successive halving on several objectives.

    ``objectives``: (metric, "max" | "min") pairs, every one present in the trials' reports;
    ``time_attr``: the report's progress counter (here ``epoch``, fine-tune epochs); rungs at
    ``grace_period * reduction_factor**k <= max_t``."""

    def __init__(self, objectives: Sequence[Tuple[str, str]], time_attr: str = "epoch", max_t: float = 100,
                 grace_period: float = 1, reduction_factor: float = 2.0):
        if not objectives or any(mode not in ("max", "min") for _, mode in objectives):
            raise ValueError(f"objectives {list(objectives)!r}: expected (metric, max|min) pairs")
        if not (grace_period > 0 and reduction_factor > 1 and max_t >= grace_period):
            raise ValueError(f"grace_period {grace_period}, reduction_factor {reduction_factor}, max_t {max_t}: "
                             "expected 0 < grace_period <= max_t and reduction_factor > 1")
        super().__init__()
        self._objectives = tuple((str(m), str(mode)) for m, mode in objectives)
        self._time_attr = time_attr
        self._rf = float(reduction_factor)
        milestones = []
        m = float(grace_period)
        while m <= max_t + 1e-9:
            milestones.append(m)
            m *= self._rf
        # highest first, so a result lands in the highest rung it has reached (as Ray's ASHA)
        self._rungs: List[Tuple[float, Dict[str, Point]]] = [(ms, {}) for ms in reversed(milestones)]
        self._num_stopped = 0

    @property
    def milestones(self) -> List[float]:
        return sorted(ms for ms, _ in self._rungs)

    def _point(self, result: Mapping[str, Any]) -> Optional[Point]:
        values = []
        for metric, mode in self._objectives:
            v = result.get(metric)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                return None
            values.append(-float(v) if mode == "max" else float(v))
        return tuple(values)

    def _on_result(self, trial_id: str, t: float, point: Point) -> str:
        for milestone, recorded in self._rungs:
            if t < milestone:
                continue
            if trial_id in recorded:
                return TrialScheduler.CONTINUE  # judged at the highest rung it has reached already
            ahead = rank_of_last([*recorded.values(), point])
            recorded[trial_id] = point
            n = len(recorded)
            return TrialScheduler.CONTINUE if ahead < n / self._rf else TrialScheduler.STOP
        return TrialScheduler.CONTINUE  # before the first rung

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        last = getattr(trial, "last_result", None) or {}
        if last.get(self._time_attr) is not None:  # restored by --resume: its reports back into the rungs
            self.replay(trial.trial_id, reported_rows(trial))

    def replay(self, trial_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Record a trial's earlier reports in the rungs, as they were recorded live; no decision."""
        for row in rows:
            point, t = self._point(row), row.get(self._time_attr)
            if point is not None and isinstance(t, (int, float)):
                self._on_result(trial_id, t, point)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: Dict) -> str:
        point = self._point(result)
        t = result.get(self._time_attr)
        if point is None or not isinstance(t, (int, float)):
            return TrialScheduler.CONTINUE  # as ASHA: no decision on a report without the metrics
        action = self._on_result(trial.trial_id, t, point)
        if action == TrialScheduler.STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: Dict) -> None:
        point = self._point(result or {})
        t = (result or {}).get(self._time_attr)
        if point is not None and isinstance(t, (int, float)):
            self._on_result(trial.trial_id, t, point)  # recorded for later trials; no decision to take

    def debug_string(self) -> str:
        rungs = ", ".join(f"{ms:g}: {len(rec)}" for ms, rec in reversed(self._rungs))
        return f"Using MO-ASHA: num_stopped={self._num_stopped}; results per rung (epoch: n) {rungs}"

    def save(self, checkpoint_path: str) -> None:
        """The rungs and the stop count as JSON: restoring reads data, never runs code from a file
        on shared storage (a pickle would)."""
        state = {"rungs": [[ms, {t: list(p) for t, p in rec.items()}] for ms, rec in self._rungs],
                 "num_stopped": self._num_stopped}
        with open(checkpoint_path, "w") as f:
            json.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            state = json.load(f)
        self._rungs = [(float(ms), {str(t): tuple(float(v) for v in p) for t, p in rec.items()})
                       for ms, rec in state["rungs"]]
        self._num_stopped = int(state["num_stopped"])


def reported_rows(trial: Any) -> List[Dict[str, Any]]:
    """The reports in a Tune trial's ``result.json`` in its storage (a line cut short by a kill is
    skipped); none when the file cannot be read."""
    storage = getattr(trial, "storage", None)
    try:
        path = posixpath.join(storage.trial_fs_path, RESULT_FILE)
        with storage.storage_filesystem.open_input_stream(path) as f:
            return json_rows(f.read().decode("utf-8", errors="replace"))
    except (AttributeError, OSError, RuntimeError):  # RuntimeError: Tune's storage has no trial folder yet
        return []
