"""MO-ASHA (prune_sweep.moasha): rung decisions worked out by hand, the ranking, pickling, and the
sweep-file wiring. No Ray start: the scheduler is driven with fake trials and hand-made reports."""

from __future__ import annotations

import copy
import itertools
import json
import pickle
import random
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
import pytest
import yaml
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from prune_sweep.driver import make_scheduler
from prune_sweep.expand import corner_configs, load_sweep
from prune_sweep.moasha import MOASHAScheduler, crowding_distance, non_dominated_fronts, rank_of_last, reported_rows
from prune_sweep.spec import SCHEDULERS, SweepError
from prune_sweep.storage import RESULT_FILE

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
OBJECTIVES = (("val_acc", "max"), ("flops_kept_dense", "min"))


class FakeTrial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def report(epoch: int, acc: float, flops: float, stage: str = "finetune") -> dict:
    return {"stage": stage, "epoch": epoch, "val_acc": acc, "flops_kept_dense": flops}


def scheduler(**kw) -> MOASHAScheduler:
    return MOASHAScheduler(OBJECTIVES, **{"max_t": 7, "grace_period": 1, "reduction_factor": 2, **kw})


# the hand-sized rung: A and C are non-dominated (C cheap, inaccurate), B is dominated by A,
# D by C; rank = results strictly ahead, continue when rank < n / 2
A, B, C, D = (90.0, 0.5), (80.0, 0.6), (60.0, 0.2), (55.0, 0.3)


def test_four_trials_at_a_rung_by_hand():
    s = scheduler()
    trials = {k: FakeTrial(k) for k in "ABCD"}
    decisions = {k: s.on_trial_result(None, trials[k], report(1, *p)) for k, p in zip("ABCD", (A, B, C, D))}
    # A: first at the rung. B: n=2, A ahead (1 < 1 is false). C: n=3, on the front with A, nobody
    # ahead. D: n=4, A and C ahead (front 0), 2 < 2 is false
    assert decisions == {"A": CONTINUE, "B": STOP, "C": CONTINUE, "D": STOP}
    assert s._num_stopped == 2


def test_a_cheap_inaccurate_trial_on_the_front_continues_where_asha_stops_it():
    asha = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=7, grace_period=1,
                         reduction_factor=2, stop_last_trials=False)
    mo = scheduler()
    got = {}
    for name, point in zip("ABC", (A, B, C)):
        trial = FakeTrial(name)
        asha.on_trial_add(None, trial)
        got[name] = (asha.on_trial_result(None, trial, report(1, *point)),
                     mo.on_trial_result(None, trial, report(1, *point)))
    # C has the lowest accuracy at the rung (ASHA: 60 < median 85 of A, B) but the lowest FLOPs
    assert got["C"] == (STOP, CONTINUE)
    assert got["B"] == (STOP, STOP)  # dominated: both stop it


def test_a_non_dominated_trial_in_a_crowded_middle_of_the_front_stops():
    s = scheduler()
    decisions = [s.on_trial_result(None, FakeTrial(k), report(1, *p))
                 for k, p in (("ends1", (90.0, 0.9)), ("ends2", (60.0, 0.1)), ("mid", (80.0, 0.5)))]
    # one front of three; the two ends have infinite crowding distance, so 2 are ahead of mid and
    # 2 < 3 / 2 is false: only the top half of a rung continues, even of a front
    assert decisions == [CONTINUE, CONTINUE, STOP]


def test_rungs_are_judged_once_each_and_only_against_their_own_results():
    s = scheduler(max_t=7)
    assert s.milestones == [1, 2, 4]
    a, b, c = FakeTrial("a"), FakeTrial("b"), FakeTrial("c")
    assert s.on_trial_result(None, a, report(1, 90.0, 0.5)) == CONTINUE
    assert s.on_trial_result(None, b, report(1, 95.0, 0.4)) == CONTINUE  # dominates a
    assert s.on_trial_result(None, a, report(1, 10.0, 0.9)) == CONTINUE  # rung 1 judged a already
    # epoch 2: rung 2 is empty, whatever was recorded at rung 1
    assert s.on_trial_result(None, c, report(2, 50.0, 0.9)) == CONTINUE
    assert s.on_trial_result(None, a, report(2, 40.0, 0.95)) == STOP  # dominated by c at rung 2
    assert s.on_trial_result(None, b, report(2, 95.0, 0.4)) == CONTINUE  # dominates c and a at rung 2
    assert s.on_trial_result(None, b, report(3, 1.0, 1.0)) == CONTINUE  # between rungs: judged at 2 already
    assert s.on_trial_result(None, b, report(4, 1.0, 1.0)) == CONTINUE  # first at rung 4
    assert s.on_trial_result(None, c, report(4, 0.5, 1.0)) == STOP  # dominated by b at rung 4
    assert {ms: sorted(rec) for ms, rec in s._rungs} == {4: ["b", "c"], 2: ["a", "b", "c"], 1: ["a", "b"]}


def test_reports_without_the_objectives_get_no_decision():
    s = scheduler()
    s.on_trial_result(None, FakeTrial("a"), report(1, 90.0, 0.1))
    assert s.on_trial_result(None, FakeTrial("b"), {"epoch": 1, "val_acc": 10.0}) == CONTINUE
    assert s.on_trial_result(None, FakeTrial("b"), report(1, float("nan"), 0.9)) == CONTINUE
    assert [len(rec) for _, rec in s._rungs] == [0, 0, 1]


def test_ranking_matches_a_brute_force_definition():
    rng = random.Random(0)
    for _ in range(200):
        pts = [(rng.choice([1.0, 2.0, 3.0]), rng.choice([1.0, 2.0, 3.0])) for _ in range(rng.randint(1, 7))]
        fronts = non_dominated_fronts(pts)
        assert sorted(itertools.chain(*fronts)) == list(range(len(pts)))
        for k, front in enumerate(fronts):
            for i in front:  # nothing in its own or a later front dominates it; something earlier does
                later = [j for f in fronts[k:] for j in f]
                assert not any(all(a <= b for a, b in zip(pts[j], pts[i])) and pts[j] != pts[i] for j in later)
                if k:
                    assert any(all(a <= b for a, b in zip(pts[j], pts[i])) and pts[j] != pts[i] for j in fronts[k - 1])
        rank = rank_of_last(pts)
        k = next(f for f, front in enumerate(fronts) if len(pts) - 1 in front)
        assert sum(map(len, fronts[:k])) <= rank < sum(map(len, fronts[:k + 1]))


def test_crowding_distance_by_hand():
    pts = [(0.0, 4.0), (1.0, 2.0), (3.0, 1.0), (4.0, 0.0)]
    d = crowding_distance(pts, [0, 1, 2, 3])
    # point 1: (3 - 0) / 4 + (4 - 1) / 4 = 1.5; point 2: (4 - 1) / 4 + (2 - 0) / 4 = 1.25
    assert d[0] == d[3] == float("inf") and d[1] == pytest.approx(1.5) and d[2] == pytest.approx(1.25)


def test_it_pickles_and_restores_with_its_rungs(tmp_path):
    s = scheduler()
    for name, point in zip("AB", (A, B)):
        s.on_trial_result(None, FakeTrial(name), report(1, *point))
    copy_ = pickle.loads(pickle.dumps(s))
    restored = scheduler()
    s.save(str(tmp_path / "sched.pkl"))
    restored.restore(str(tmp_path / "sched.pkl"))
    for other in (copy_, restored):
        assert other._rungs == s._rungs and other._num_stopped == 1
        # the next decisions are the ones the original takes: C continues, D stops
        assert other.on_trial_result(None, FakeTrial("C"), report(1, *C)) == CONTINUE
        assert other.on_trial_result(None, FakeTrial("D"), report(1, *D)) == STOP


def restored_trial(tmp_path: Path, trial_id: str, rows, tail: str = "") -> SimpleNamespace:
    """A trial as Tune restores it on --resume: its last result, and its reports in result.json."""
    folder = tmp_path / trial_id
    folder.mkdir()
    (folder / RESULT_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    storage = SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(), trial_fs_path=str(folder))
    return SimpleNamespace(trial_id=trial_id, last_result=dict(rows[-1]) if rows else {}, storage=storage)


def test_a_resumed_sweep_ranks_new_trials_against_the_restored_trials_reports(tmp_path):
    live = scheduler()
    for name, point in zip("AB", (A, B)):
        for epoch in (1, 2):
            live.on_trial_result(None, FakeTrial(name), report(epoch, *point))
    # after --resume: a fresh scheduler (tuner.pkl's), Tune adding each restored trial; A's file
    # ends in a line a kill cut short, and a trial that never reported reads nothing
    resumed = scheduler()
    resumed.on_trial_add(None, restored_trial(tmp_path, "A", [report(1, *A), report(2, *A)], tail='{"epoch": 3, "val'))
    resumed.on_trial_add(None, restored_trial(tmp_path, "B", [report(1, *B), report(2, *B)]))
    resumed.on_trial_add(None, SimpleNamespace(trial_id="new", last_result={"trial_id": "new"}, storage=None))
    assert resumed._rungs == live._rungs and resumed._num_stopped == 0
    assert resumed.on_trial_result(None, FakeTrial("C"), report(1, *C)) == CONTINUE
    assert resumed.on_trial_result(None, FakeTrial("D"), report(1, *D)) == STOP  # A and C ahead, as live
    # a trial whose file is gone (storage lost) is skipped, not an error
    gone = restored_trial(tmp_path, "E", [report(1, *A)])
    (tmp_path / "E" / RESULT_FILE).unlink()
    assert reported_rows(gone) == []


def test_a_completed_trial_is_recorded_for_later_ones():
    s = scheduler(max_t=1)
    s.on_trial_complete(None, FakeTrial("a"), report(2, 90.0, 0.5, stage="done"))
    assert s.on_trial_result(None, FakeTrial("b"), report(1, 80.0, 0.6)) == STOP


# ---------------------------------------------------------------------------------------------
# the sweep file

SWEEP = {"name": "t", "base": {"data": {"name": "mnist5k"}, "model.name": "resnet20", "finetune.epochs": 8},
         "space": {"prune.ratio": {"uniform": [0.2, 0.8]}, "prune.criterion": {"choice": ["l1", "taylor"]}},
         "search": {"algorithm": "optuna", "num_samples": 4}}


def write(tmp_path: Path, **changes) -> Path:
    raw = copy.deepcopy(SWEEP)
    raw.update(changes)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_sweep_with_mo_asha_builds_it_on_the_search_objectives(tmp_path):
    sweep = load_sweep(write(tmp_path, scheduler={"name": "mo_asha", "grace_period": 1, "reduction_factor": 2},
                             search={**SWEEP["search"], "objectives": {"val_acc": "max", "flops_kept_dense": "min"}}))
    s = make_scheduler(sweep, corner_configs(sweep))  # as make_tuner does for optuna
    assert isinstance(s, MOASHAScheduler)
    assert s._objectives == OBJECTIVES and s._time_attr == "epoch"
    assert s.milestones == [1, 2, 4]  # strictly below the 8th epoch: a surviving trial reaches its final report
    assert load_sweep(write(tmp_path, scheduler="mo_asha")).scheduler.name == "mo_asha"
    assert "mo_asha" in SCHEDULERS


@pytest.mark.parametrize("scheduler_, where, accepted", [
    ({"name": "moasha"}, "scheduler.name", "fifo, asha, mo_asha"),
    ({"name": "mo_asha", "reduction_factor": 1}, "scheduler.reduction_factor", "a number > 1"),
    ({"name": "mo_asha", "grace_period": 0}, "scheduler.grace_period", "an integer >= 1"),
    ({"name": "mo_asha", "brackets": 2}, "scheduler.brackets", "name, grace_period"),
])
def test_bad_scheduler_values_get_one_line_naming_what_is_accepted(tmp_path, scheduler_, where, accepted):
    with pytest.raises(SweepError) as err:
        load_sweep(write(tmp_path, scheduler=scheduler_))
    message = str(err.value)
    assert "\n" not in message and where in message and accepted in message
