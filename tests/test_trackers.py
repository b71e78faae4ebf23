"""The sweep's trackers (``loggers:``) and the Optuna study optuna-dashboard reads, end to end on
one local Ray (2 CPUs): tiny grid and optuna sweeps on mnist5k."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Dict, Iterator, List

import optuna
import pytest
import ray
import yaml
from tensorboardX.proto import event_pb2, plugin_hparams_pb2

from _sweeps import trial_rows, write_sweep
from prune_sweep import driver
from prune_sweep.expand import load_sweep
from prune_sweep.launch_cli import main
from prune_sweep.loggers import with_loggers
from prune_sweep.spec import Logger
from prune_sweep.trackers import PER_LAYER_KEYS

GRID = {"algorithm": "grid", "max_concurrent": 2}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def events(path: Path) -> Iterator[event_pb2.Event]:
    """The records of a TensorBoard event file (TFRecord: length, its CRC, data, the data's CRC)."""
    data, i = path.read_bytes(), 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        yield event_pb2.Event.FromString(data[i + 12:i + 12 + n])
        i += 12 + n + 4


def tensorboard(trial_dir: Path) -> Dict[str, object]:
    """``{"tags": scalar tags, "hparams": {name: value} of the HParams session}`` of a trial."""
    tags, hparams = set(), {}
    for path in trial_dir.glob("events.out.tfevents.*"):
        for event in events(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "hparams":
                    tags.add(value.tag)
                    continue
                data = plugin_hparams_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.HasField("session_start_info"):
                    for name, v in data.session_start_info.hparams.items():
                        hparams[name] = getattr(v, v.WhichOneof("kind"))
    return {"tags": tags, "hparams": hparams}


def done(rows: List[dict]) -> dict:
    finals = [r for r in rows if r.get("stage") == "done"]
    assert len(finals) == 1, [r.get("stage") for r in rows]
    return finals[0]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("prune-sweep: error: ") and "\n" not in err, err
    return err


def test_grid_sweep_records_hparams_in_tensorboard_and_a_run_per_trial_in_mlflow(tmp_path, capsys, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra (mlflow-skinny) is not installed")
    path = write_sweep(tmp_path, "trk", [0.3, 0.5], finetune=(2, 3), search=GRID,
                       loggers=["tensorboard", "mlflow"])
    assert main([str(path), "--storage", str(tmp_path), "--no-quiet-latency"]) == 0
    exp = tmp_path / "trk"
    runs = trial_rows(exp)
    assert len(runs) == 2
    for name, rows in runs.items():
        final = done(rows)
        tb = tensorboard(exp / name)
        # Ray's own logger records no HParams for a grid point; every trial has them here
        assert tb["hparams"] == {"prune.ratio": pytest.approx(final["config"]["prune.ratio"])}, tb["hparams"]
        assert "ray/tune/val_acc" in tb["tags"] and "ray/tune/acc_final" in tb["tags"]
        assert not [t for t in tb["tags"] if any(k in t for k in PER_LAYER_KEYS)]  # per-layer off by default
    assert [lg.name for lg in load_sweep(exp / "sweep.yaml").loggers] == ["tensorboard", "mlflow"]

    client = mlflow.tracking.MlflowClient(f"file:{exp / 'mlruns'}")
    experiment = client.get_experiment_by_name("trk")
    ml = client.search_runs([experiment.experiment_id])
    assert len(ml) == 2 and all(r.info.status == "FINISHED" for r in ml)
    by_ratio = {float(r.data.params["prune.ratio"]): r for r in ml}
    for rows in runs.values():
        final = done(rows)
        run = by_ratio[final["config"]["prune.ratio"]]
        assert run.data.metrics["acc_final"] == pytest.approx(final["acc_final"])  # the final metrics
        assert run.data.metrics["flops_kept_dense"] == pytest.approx(final["flops_kept_dense"])
        assert not [m for m in run.data.metrics if m.startswith(PER_LAYER_KEYS)]

    # --resume keeps the sweep's loggers (sweep.yaml); it cannot change them; a finished sweep stays finished
    assert main([str(path), "--storage", str(tmp_path), "--resume", "--no-quiet-latency"]) == 0
    assert len(client.search_runs([experiment.experiment_id])) == 2
    capsys.readouterr()
    assert main([str(path), "--storage", str(tmp_path), "--resume", "--logger", "wandb"]) == 2
    assert "--logger cannot change a sweep that is resumed" in one_error_line(capsys)

    # the stored sweep needs mlflow: without it, --resume stops in one line before Ray is asked for anything
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    monkeypatch.setattr(driver, "init_ray", lambda *a, **k: pytest.fail("Ray started"))
    assert main([str(path), "--storage", str(tmp_path), "--resume"]) == 2
    assert one_error_line(capsys) == ("prune-sweep: error: loggers: mlflow needs the mlflow package, which is not "
                                      "installed; pip install 'prune-sweep[mlflow]'")


def test_per_layer_scalars_when_asked_and_wandb_offline_run_files(tmp_path):
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    path = write_sweep(tmp_path, "wb", [0.4], finetune=(1, 3), search=GRID,
                       loggers=[{"tensorboard": {"per_layer": True}}, {"wandb": {"mode": "offline", "project": "p"}}])
    assert main([str(path), "--storage", str(tmp_path), "--no-quiet-latency"]) == 0
    exp = tmp_path / "wb"
    [(name, rows)] = trial_rows(exp).items()
    final = done(rows)
    tags = tensorboard(exp / name)["tags"]
    for key in PER_LAYER_KEYS:
        assert {f"ray/tune/{key}/{layer}" for layer in final[key]} <= tags, key
    runs = list((exp / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((exp / "wandb").iterdir()) if (exp / "wandb").exists() else "no wandb folder"
    assert (runs[0] / f"run-{final['trial_id']}.wandb").stat().st_size > 0  # W&B's own record of the run


def test_optuna_study_names_its_objectives_and_keeps_each_trials_results(tmp_path):
    space = {"prune.ratio": {"uniform": [0.2, 0.6]}, "prune.scope": {"choice": ["local", "global"]}}
    search = {"algorithm": "optuna", "num_samples": 2, "max_concurrent": 2,
              "objectives": {"val_acc": "max", "flops_kept_dense": "min"}}
    path = write_sweep(tmp_path, "dash", [0.3], finetune=(1, 3), search=search, loggers=[])
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, "space": space, "search": search}, sort_keys=False))  # objectives in order
    assert main([str(path), "--storage", str(tmp_path), "--no-quiet-latency"]) == 0
    exp = tmp_path / "dash"
    assert not list(exp.rglob("events.out.tfevents.*"))  # loggers: [] is no TensorBoard, not Ray's default
    study = optuna.load_study(study_name="dash", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert study.metric_names == ["val_acc", "flops_kept_dense"]
    finals = {done(rows)["trial_id"]: done(rows) for rows in trial_rows(exp).values()}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2 == len(finals)
    by_config = {json.dumps(f["config"], sort_keys=True): f for f in finals.values()}
    for t in complete:
        final = by_config[json.dumps(t.user_attrs["config"], sort_keys=True)]  # the trial's swept keys
        assert set(t.user_attrs["config"]) == set(space)
        assert t.user_attrs["acc_final"] == pytest.approx(final["acc_final"])
        assert t.user_attrs["latency_ms_final"] == pytest.approx(final["latency_ms_final"]) and final["latency_ms_final"] > 0
        assert t.values == pytest.approx([final["val_acc"], final["flops_kept_dense"]])


def test_an_unknown_logger_is_one_line_naming_the_accepted_ones(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(driver, "init_ray", lambda *a, **k: pytest.fail("Ray started"))
    path = write_sweep(tmp_path, "bad", [0.3], loggers=["tensorboard", "comet"])
    assert main([str(path), "--storage", str(tmp_path)]) == 2
    assert one_error_line(capsys).endswith("loggers[1]: 'comet': unknown logger; expected one of tensorboard, "
                                           "mlflow, wandb")
    path = write_sweep(tmp_path, "good", [0.3])
    assert main([str(path), "--storage", str(tmp_path), "--logger", "tb"]) == 2
    assert one_error_line(capsys) == ("prune-sweep: error: --logger: 'tb': unknown logger; expected one of "
                                      "tensorboard, mlflow, wandb or none")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main([str(path), "--storage", str(tmp_path), "--logger", "tensorboard", "--logger", "wandb"]) == 2
    assert "wandb needs the wandb package" in one_error_line(capsys) and not (tmp_path / "good").exists()


def test_logger_flags_replace_the_files_loggers_and_keep_their_options(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, "o", [0.3], loggers=[{"mlflow": {"experiment": "e"}}]))
    assert sweep.loggers == (Logger("mlflow", (("experiment", "e"),)),)
    assert with_loggers(sweep, ["tensorboard", "mlflow"]).loggers == (Logger("tensorboard"), sweep.loggers[0])
    assert with_loggers(sweep, ["none"]).loggers == ()
    assert load_sweep(write_sweep(tmp_path, "d", [0.3])).loggers == (Logger("tensorboard"),)  # the default
