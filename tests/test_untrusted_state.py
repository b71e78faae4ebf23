"""A resumed sweep runs no code from its storage: every pickle Tune reads back goes through
``prune_sweep.trusted_state``'s allowlist. A tiny grid sweep is run once, in-process on one local
Ray; each test resumes a copy of it with one file swapped."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import optuna
import pytest
import ray
from _sweeps import write_sweep
from ray import cloudpickle
from ray.train._internal.storage import _upload_to_fs_path

from prune_sweep import trusted_state
from prune_sweep.launch_cli import main

NONJSON = ("results", "extra_arg", "placement_group_factory", "_resources", "_default_placement_group_factory")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never a cluster another test left
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-trial grid sweep: tuner.pkl, experiment_state-*.json, basic-variant-state-*.json."""
    folder = tmp_path_factory.mktemp("legit")
    path = write_sweep(folder, "legit", [0.3], train=(1, 2), finetune=(1, 2))
    assert main([str(path), "--storage", str(folder), "--no-quiet-latency", "--no-dashboard"]) == 0
    return folder / "legit"


class Command:
    """A pickle whose loading runs a shell command (``os.system``, pickled as ``posix.system``)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class Call:
    """A pickle whose loading calls ``function``."""

    def __init__(self, function):
        self.function = function

    def __reduce__(self):
        return self.function, ()


def by_value(marker: Path) -> bytes:
    """A pickle that builds a function from the code it holds (pickled by value), which writes
    ``marker``, and calls it."""
    return cloudpickle.dumps(Call(eval(f"lambda: __import__('pathlib').Path({str(marker)!r}).touch()")))


def copy(exp: Path, tmp_path: Path) -> Path:
    shutil.copytree(exp, tmp_path / "storage" / exp.name)
    return tmp_path / "storage" / exp.name


def resume(exp: Path, finished: Path, capsys) -> tuple:
    """``--resume`` of the copy ``exp``, with the sweep file ``finished`` was started from: the exit
    code and prune-sweep's own stderr lines (Ray forwards its workers' output, ``(run_trial pid=N)
    ...``, to stderr too)."""
    sweep = finished.parent / f"{finished.name}.yaml"
    capsys.readouterr()
    code = main([str(sweep), "--resume", "--storage", str(exp.parent), "--no-quiet-latency", "--no-dashboard"])
    err = capsys.readouterr().err
    return code, [ln for ln in err.splitlines() if ln.strip() and not re.match(r"(\x1b\[\d+m)?\(\w+ pid=\d+", ln)]


def state_pickles(exp: Path) -> list:
    """Every pickle of the newest experiment state: its CLOUDPICKLE_FALLBACK values and the
    non-JSON fields of each trial (``Trial.__getstate__``), as bytes."""
    found = []

    def walk(obj):
        if isinstance(obj, dict):
            if obj.get("_type") == "CLOUDPICKLE_FALLBACK":
                found.append(bytes.fromhex(obj["value"]))
                return
            found.extend(bytes.fromhex(obj[k]) for k in NONJSON if isinstance(obj.get(k), str))
            for key, value in obj.items():
                if key not in NONJSON:
                    walk(value)
        elif isinstance(obj, list):
            for value in obj:
                walk(value)
        elif isinstance(obj, str) and obj.startswith("{"):
            walk(json.loads(obj))

    walk(json.loads(max(exp.glob("experiment_state-*.json")).read_text()))
    return found


def test_the_allowlist_loads_a_real_sweeps_state_as_pickle_does(finished):
    tuner = (finished / "tuner.pkl").read_bytes()
    ours, theirs = trusted_state.loads(tuner), cloudpickle.loads(tuner)
    assert sorted(ours) == sorted(theirs)
    assert type(ours["_tune_config"].search_alg) is type(theirs["_tune_config"].search_alg)
    assert ours["_run_config"].name == theirs["_run_config"].name == "legit"
    variants = trusted_state.loads(max(finished.glob("basic-variant-state-*.json")).read_bytes())
    parser = variants["_iterators"][0].parser  # argparse's identity, stored by value, comes back as itself
    assert parser._registries["type"][None]("x") == "x"
    blobs = state_pickles(finished)
    assert len(blobs) >= 5
    for blob in blobs:
        trusted_state.loads(blob)


def payloads(tmp_path: Path) -> dict:
    """Pickles no sweep writes, each of which would do something on an ordinary load."""
    marker = tmp_path / "marker"
    db = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(db)
    storage.url = f"sqlite:///{tmp_path / 'elsewhere.db'}"

    class Upload:
        def __reduce__(self):  # a function a saved state holds, run with the file's arguments
            return _upload_to_fs_path, (str(tmp_path), None, str(marker))

    return {
        "refers to posix.system": pickle.dumps(Command(f"touch {marker}")),
        "holds code (a function '<lambda>' pickled by value)": by_value(marker),
        # a closure: its cell comes before the function is made
        "refers to ray.cloudpickle.cloudpickle._make_empty_cell": cloudpickle.dumps(Call(lambda: marker.touch())),
        "runs ray.train._internal.storage._upload_to_fs_path while loading": pickle.dumps(Upload()),
        # BUILD on a module-level function: (trial_dirname, (None, {"__defaults__": ...}))
        "changes prune_sweep.trial.trial_dirname itself": (
            b"\x80\x02cprune_sweep.trial\ntrial_dirname\nN}X\x0c\x00\x00\x00__defaults__N\x85s\x86b."),
        "imports 'os'": cloudpickle.dumps(os),  # a module: cloudpickle's subimport('os')
        "a database other than the study's optuna.db": pickle.dumps(storage),
    }


def test_the_allowlist_refuses_what_no_sweep_writes_before_any_of_it_runs(tmp_path):
    control = tmp_path / "control"
    for data in (pickle.dumps(Command(f"touch {control}")), by_value(control)):  # an ordinary load runs them
        pickle.loads(data)
        assert control.exists()
        control.unlink()
    for reason, data in payloads(tmp_path).items():
        with pytest.raises(trusted_state.Refused, match=re.escape(reason)):
            trusted_state.loads(data)
    assert not (tmp_path / "marker").exists() and not (tmp_path / "elsewhere.db").exists()


def one_line(lines: list, *parts: str) -> None:
    assert len(lines) == 1, lines
    assert lines[0].startswith("prune-sweep: error: --resume: ") and all(p in lines[0] for p in parts), lines[0]


def test_a_swapped_tuner_pkl_is_refused_in_one_line_and_nothing_runs(finished, tmp_path, capsys):
    exp, marker = copy(finished, tmp_path), tmp_path / "marker"
    (exp / "tuner.pkl").write_bytes(pickle.dumps(Command(f"touch {marker}")))
    code, lines = resume(exp, finished, capsys)
    assert code == 2
    one_line(lines, f"{exp}/tuner.pkl refers to posix.system", 'README "Who may write to the storage"')
    assert not marker.exists()


def test_a_pickle_hidden_in_the_experiment_state_is_refused(finished, tmp_path, capsys):
    # a CLOUDPICKLE_FALLBACK value, decoded as the JSON is parsed (Tuner.restore ignores a state it
    # cannot read; the refusal still ends the launch)
    exp, marker = copy(finished, tmp_path), tmp_path / "marker"
    path = max(exp.glob("experiment_state-*.json"))
    state = json.loads(path.read_text())
    state["runner_data"]["_evil"] = {"_type": "CLOUDPICKLE_FALLBACK",
                                     "value": pickle.dumps(Command(f"touch {marker}")).hex()}
    path.write_text(json.dumps(state))
    code, lines = resume(exp, finished, capsys)
    assert code == 2
    one_line(lines, f"{path} refers to posix.system")
    assert not marker.exists()


def test_a_swapped_searcher_state_is_refused_where_tune_resumes(finished, tmp_path, capsys):
    # basic-variant-state-*.json (a pickle) is read by Tune's controller once fit() starts
    exp, marker = copy(finished, tmp_path), tmp_path / "marker"
    path = max(exp.glob("basic-variant-state-*.json"))
    path.write_bytes(by_value(marker))
    code, lines = resume(exp, finished, capsys)
    assert code == 2
    one_line(lines, f"{path} holds code (a function '<lambda>' pickled by value)")
    assert not marker.exists()


def test_a_truncated_tuner_pkl_is_one_line(finished, tmp_path, capsys):
    exp = copy(finished, tmp_path)
    data = (exp / "tuner.pkl").read_bytes()
    (exp / "tuner.pkl").write_bytes(data[:len(data) // 2])
    code, lines = resume(exp, finished, capsys)
    assert code == 2
    one_line(lines, f"{exp}/tuner.pkl cannot be loaded")


def test_a_copy_of_a_legit_experiment_resumes(finished, tmp_path, capsys):
    exp = copy(finished, tmp_path)
    code, lines = resume(exp, finished, capsys)
    assert code == 0 and not [ln for ln in lines if "error" in ln], lines
