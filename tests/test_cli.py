"""``python -m prune_core``: every expected error is one line with its exit code (README, "Exit
codes"): 2 bad input, 3 missing data, 4 diverged, 5 rebuild mismatch, 130 interrupted, 1 a bug
(with its traceback); a smoke run writes every output."""

import json
import re
import subprocess
import sys

import pytest
import torch
from _payload import LOADED, payload

from prune_core import METRIC_KEYS, provenance
from prune_core.cli import main
from prune_core.models import build_model


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "prune_core", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args,needle", [
    (["--dataset", "mnist6k"], "--dataset: invalid choice: 'mnist6k'"),
    (["--model", "resnet19"], "--model: invalid choice: 'resnet19'"),
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
    recorded = json.loads((run / provenance.FILE).read_text())  # what the run was made with
    assert recorded["versions"] == provenance.versions() and recorded["device_name"] == provenance.cpu_name()
    capsys.readouterr()
    assert main(["--eval-only", "--model-path", str(run / "resnet20_rebuilt.pt"), "--smoke-test",
                 "--output-dir", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["flops_final"] == metrics["flops_final"]
    assert evaluated["acc_final"] == pytest.approx(metrics["acc_final"])


# ---------------------------------------------------------------------------------------------
# errors past the config: one line, their own exit code, what is computed stays

FAST = ["--smoke-test", "--no-cuda", "--model", "lenet300", "--batch-size", "32"]  # 4 steps per stage, in 1 s


@pytest.fixture(scope="module")
def base_cache(tmp_path_factory):
    """One base cache for the tests that train the same base (finetune.lr is not part of its key)."""
    return tmp_path_factory.mktemp("base_cache")


def _one_line(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prune-core: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_diverging_fine_tune_is_exit_4_keeps_the_run_and_resume_continues_it(tmp_path, capsys, base_cache, one_thread):
    out = tmp_path / "exp"
    common = [*FAST, "--output-dir", str(out), "--set", f"runtime.cache_dir={base_cache}"]
    assert main([*common, "--finetune-lr", "1e30"]) == 4
    line = _one_line(capsys)
    (run,) = (out / "mnist5k").iterdir()
    for word in ("diverged", "finetune: loss is", "--finetune-lr", "finetune.lr=1e+30", "--resume", str(run)):
        assert word in line, word
    assert (run / "pruned_model.pt").exists() and (run / "pre_finetune.json").exists()  # nothing computed is lost
    # what the line advises: a lower learning rate and --resume fine-tune the kept pruned model
    assert main([*common, "--finetune-lr", "0.01", "--resume"]) == 0
    assert "resuming fine-tuning from" in capsys.readouterr().out
    assert [p.name for p in (out / "mnist5k").iterdir()] == [run.name] and (run / "metrics.json").exists()


def test_diverging_base_is_exit_4_naming_the_base_learning_rate(tmp_path, capsys, base_cache, one_thread):
    out = tmp_path / "exp"
    assert main([*FAST, "--output-dir", str(out), "--set", f"runtime.cache_dir={base_cache}",
                 "--learning-rate", "1e30"]) == 4
    line = _one_line(capsys)
    for word in ("diverged", "base: loss is", "--learning-rate", "train.lr=1e+30"):
        assert word in line, word
    assert not (out / "mnist5k").exists()  # its run directory held only config.yaml: nothing to resume


def test_rebuild_mismatch_is_exit_5(tmp_path, capsys, base_cache, monkeypatch, one_thread):
    import prune_core.pruning.surgery as surgery

    monkeypatch.setattr(surgery, "TOLERANCE", -1.0)  # the real check: any difference is too much
    out = tmp_path / "exp"
    assert main([*FAST, "--output-dir", str(out), "--set", f"runtime.cache_dir={base_cache}"]) == 5
    line = _one_line(capsys)
    (run,) = (out / "mnist5k").iterdir()
    for word in ("rebuilt and masked logits differ", "bug", "report", str(run / "config.yaml"), "--pruning-method",
                 "cached in " + str(base_cache)):
        assert word in line, word
    assert (run / "base_history.json").exists()


def test_the_cli_prints_progress_lines_within_each_epoch(tmp_path, capsys, monkeypatch, one_thread):
    import prune_core.train as train

    monkeypatch.setattr(train, "PROGRESS_EVERY_S", 0.0)  # a line after every step but an epoch's last
    assert main([*FAST, "--output-dir", str(tmp_path / "exp")]) == 0
    out = capsys.readouterr().out
    for stage in ("base", "finetune"):  # base training and fine-tuning, each before its epoch's line
        shown = re.findall(rf"^{stage} epoch 1/1: (?:step (\d)/4, \d+ img/s, \d+:\d\d:\d\d left|(loss) )", out, re.M)
        assert shown == [("1", ""), ("2", ""), ("3", ""), ("", "loss")], out


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_cuda_without_a_device_is_exit_2(tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["--smoke-test", "--set", "runtime.device=cuda", "--output-dir", str(out)]) == 2
    line = _one_line(capsys)
    for word in ("runtime.device=cuda", "no CUDA device", "--no-cuda", "runtime.device=auto"):
        assert word in line, word
    assert not out.exists()  # refused before a run directory is made


@pytest.mark.parametrize("root", ["empty", "absent"])
def test_missing_dataset_is_exit_3(tmp_path, root):
    (tmp_path / "empty").mkdir()
    proc = _cli("--smoke-test", "--dataset", "cifar10", "--data-root", root, "--output-dir", str(tmp_path / "exp"),
                cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in ("prune-core: error: cifar10", str(tmp_path / root), "--download", "--data-root"):
        assert word in lines[0], word
    assert not (tmp_path / "exp" / "cifar10").exists()


@pytest.mark.parametrize("content", ["text", "pickle", "dict", "tensor", "shell"])
def test_eval_only_on_a_file_that_is_not_a_model_is_exit_2(tmp_path, capsys, content):
    path, pwned = tmp_path / "model.pt", tmp_path / "PWNED"
    LOADED.clear()
    if content == "text":
        path.write_text("not a model\n")
    elif content == "pickle":
        path.write_bytes(b"\x80\x02}q\x00.")  # an empty dict, pickled without torch's zip container
    else:
        torch.save({"dict": {"epochs": 3}, "tensor": torch.zeros(3),
                    "shell": {"w": torch.zeros(1), **payload(pwned)}}[content], path)
    assert main(["--eval-only", "--model-path", str(path), "--smoke-test", "--no-cuda"]) == 2
    line = _one_line(capsys)
    assert f"--model-path {path}: not a saved model" in line and "state dict" in line
    assert not pwned.exists() and not LOADED


def test_eval_only_on_a_model_of_another_architecture_is_exit_2(tmp_path, capsys):
    path = tmp_path / "lenet.pt"
    torch.save(build_model("lenet300", 10, 1, 32, 1.0).state_dict(), path)
    assert main(["--eval-only", "--model-path", str(path), "--model", "resnet20", "--smoke-test", "--no-cuda"]) == 2
    line = _one_line(capsys)
    assert "does not fit model.name=resnet20" in line and "--model" in line


def test_a_pruned_model_cannot_be_a_base(tmp_path, capsys):
    from prune_core.pruning import save_pruned

    path = tmp_path / "rebuilt.pt"
    save_pruned(build_model("lenet300", 10, 1, 32, 1.0), path)
    assert main(["--skip-base-training", "--model-path", str(path), "--smoke-test", "--no-cuda",
                 "--output-dir", str(tmp_path / "exp")]) == 2
    assert "a pruned model saved by prune-core" in _one_line(capsys)


def test_interrupt_is_exit_130_and_a_bug_is_exit_1_with_its_traceback(tmp_path, capsys, monkeypatch):
    import prune_core.pipeline as pipeline

    out = tmp_path / "exp"

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run", interrupted)
    assert main(["--smoke-test", "--no-cuda", "--output-dir", str(out)]) == 130
    err = capsys.readouterr().err
    (run,) = (out / "mnist5k").iterdir()
    assert len(err.strip().splitlines()) == 1 and "--resume" in err and str(run) in err, err

    def bug(cfg):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(pipeline, "run", bug)
    assert main(["--smoke-test", "--no-cuda", "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and 'raise ZeroDivisionError("a bug")' in err  # debuggable
    assert err.strip().splitlines()[-1].startswith("prune-core: error: unexpected ZeroDivisionError: a bug")


def test_divergence_with_a_fine_tune_checkpoint_says_resume_keeps_its_learning_rate(tmp_path):
    from prune_core.cli import _diverged
    from prune_core.config import ExperimentConfig
    from prune_core.errors import Diverged

    cfg = ExperimentConfig.from_dict({"finetune.lr": 0.5})
    for name in ("config.yaml", "pruned_model.pt", "pre_finetune.json", "finetune_ckpt.pt"):
        (tmp_path / name).write_text("")
    line = _diverged(Diverged("finetune: loss is nan in epoch 3 (lr 0.5); lower the learning rate"), cfg, tmp_path)
    assert "--finetune-lr (finetune.lr=0.5 now)" in line and "moving " + str(tmp_path / "finetune_ckpt.pt") in line
    assert "saved learning rate" in line


def test_every_exit_code_is_in_the_readme_table():
    from pathlib import Path

    from prune_core import cli

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    codes = [0, cli.EXIT_UNEXPECTED, cli.EXIT_CONFIG, cli.EXIT_DATA, cli.EXIT_DIVERGED, cli.EXIT_REBUILD,
             cli.EXIT_EXPORT, cli.EXIT_STORAGE, cli.EXIT_INTERRUPTED]
    assert codes == [0, 1, 2, 3, 4, 5, 6, 7, 130]  # documented: changing one breaks scripts that test for it
    for code in codes:
        assert f"\n| {code} | " in readme, code
