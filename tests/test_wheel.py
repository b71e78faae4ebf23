"""The package as a user installs it: a wheel built from this checkout, installed (not editable) in
a fresh virtual environment, runs its three entry points from a folder outside the checkout."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _sweeps import trial_rows

from prune_core import METRIC_KEYS, ExperimentConfig
from prune_sweep.expand import load_sweep

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(ROOT)], check=True, cwd=tmp)
    wheel = next((tmp / "dist").glob("prune_sweep-*.whl"))
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    # the dependencies (torch, ray, ...) come from this environment by a path line, which does not run
    # its .pth files: the editable install of this checkout stays invisible to the new environment
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, cwd=tmp)
    return env_dir


def run(venv, *cmd, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / cmd[0]), *cmd[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_installed_packages_come_from_the_wheel(venv, tmp_path):
    out = run(venv, "python", "-c", "import prune_core, prune_sweep.spec as s; print(prune_core.__file__); "
              "print(s.DEFAULT_SWEEP)", cwd=tmp_path)
    core, sweep = out.stdout.split()
    assert Path(core).is_relative_to(venv) and Path(sweep).is_relative_to(venv), out.stdout
    assert Path(sweep).is_file()


def test_prune_sweep_plans_its_default_sweep(venv, tmp_path):
    out = run(venv, "prune-sweep", "--dry-run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "quickstart" in out.stdout and "trials" in out.stdout


def test_prune_sweep_smoke_test_reports_every_metric(venv, tmp_path):
    """The README's quickstart, smoke-sized (one trial per method family), from the installed
    wheel: every trial reports every metric, every epoch is checkpointed, one base is trained,
    the quiet latency pass times every trial, and the installed prune-analyze reports on it."""
    out = run(venv, "prune-sweep", "--smoke-test", "--storage", str(tmp_path / "runs"), "--no-dashboard", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    exp = tmp_path / "runs" / "quickstart-smoke"
    assert f"python analyze.py {exp}" in out.stdout and "distinct models timed alone on cpu" in out.stdout
    sweep = load_sweep(exp / "sweep.yaml")
    assert sweep.smoke_test and sweep.name == "quickstart-smoke"
    base = ExperimentConfig.from_yaml(exp / "base.yaml")
    assert base.model.name == "resnet20" and base.data.name == "mnist5k"
    runs = trial_rows(exp)
    params = [json.loads((exp / name / "params.json").read_text()) for name in runs]
    assert {p["prune.method"] for p in params} == {"channel", "kernel", "intra_kernel", "imp", "snip"}
    assert all(sorted(p) == sorted(sweep.keys) for p in params)  # params.json: the swept keys, dotted
    finals = {}
    for name, rows in runs.items():
        (final,) = [r for r in rows if r.get("stage") == "done"]
        finals[name] = final
        assert set(METRIC_KEYS) <= set(final), set(METRIC_KEYS) - set(final)
        assert final["base_cached"] == 1  # the base came from the sweep's base task
        epochs = [r for r in rows if r.get("stage") == "finetune"]
        assert [r["epoch"] for r in epochs] == list(range(1, final["finetune_epochs"] + 1))
        assert all({"val_acc", "train_loss", "flops_kept_dense", "flops_kept_effective", "lr"} <= set(r) for r in epochs)
        assert list((exp / name).glob("checkpoint_*")), "every epoch is checkpointed"
    assert len(list((exp / "base_cache").glob("*/base.pt"))) == 1
    quiet = json.loads((exp / "latency.json").read_text())  # every finished trial timed again, alone
    assert sorted(quiet) == sorted(f["trial_id"] for f in finals.values())
    assert all(q["latency_pass"] == "quiet" and q["latency_ms_final"] > 0 for q in quiet.values())
    report = run(venv, "prune-analyze", str(exp), "--out", str(tmp_path / "analysis"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (tmp_path / "analysis" / "report.html").is_file()


def test_prune_analyze_smoke_test(venv, tmp_path):
    out = run(venv, "prune-analyze", "--smoke-test", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "smoke test passed" in out.stdout
