"""``python -m prune_core``: bad input is one line and exit 2; a smoke run writes every output."""

import json
import subprocess
import sys

import pytest

from prune_core import METRIC_KEYS
from prune_core.cli import main


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "prune_core", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args,needle", [
    (["--dataset", "mnist6k"], "data.name='mnist6k'"),
    (["--model", "resnet19"], "model.name='resnet19'"),
    (["--dataset", "cifar10", "--data-root", "nowhere"], "nowhere"),
    (["--base-train-epochs", "-1"], "train.epochs=-1"),
    (["--batch-size", "0"], "data.batch_size=0"),
    (["--config", "absent.yaml"], "absent.yaml"),
    (["--pruning-ratio", "1.5"], "prune.ratio=1.5"),
    (["--set", "prune.colour=red"], "prune.colour"),
    (["--eval-only"], "--model-path"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    proc = _cli(*args, "--output-dir", str(tmp_path / "exp"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_unparseable_config_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("{{{")
    assert main(["--config", str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_smoke_run_writes_outputs_and_resaved_model_evaluates(tmp_path, capsys):
    out = tmp_path / "exp"
    rc = main(["--smoke-test", "--output-dir", str(out), "--pruning-method", "channel", "--pruning-ratio", "0.5",
               "--global-pruning", "--save-model", "--no-cuda"])
    assert rc == 0
    (run,) = (out / "mnist5k").iterdir()
    assert run.name.startswith("resnet20_channel_mnist5k_")
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(metrics)
    assert metrics["flops_final"] < metrics["flops_base"]
    for name in ("config.yaml", "training_curves.png", "parameter_distribution.png", "channels_per_layer.png",
                 "resnet20_rebuilt.pt", "resnet20_base.pt"):
        assert (run / name).stat().st_size > 0, name
    capsys.readouterr()
    assert main(["--eval-only", "--model-path", str(run / "resnet20_rebuilt.pt"), "--smoke-test",
                 "--output-dir", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["flops_final"] == metrics["flops_final"]
    assert evaluated["acc_final"] == pytest.approx(metrics["acc_final"])
