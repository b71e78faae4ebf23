"""``prune_core.run`` end to end: every method, the base cache, resume, and the accuracy it keeps."""

import math

import pytest

from prune_core import DETAIL_KEYS, EPOCH_KEYS, METHODS, METRIC_KEYS, ExperimentConfig, run
from prune_core import SMOKE
from prune_core.config import ConfigError
from prune_core.pipeline import base_path, ensure_base


def quiet(_msg):
    pass


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("base_cache"))


def smoke(cache, **dotted):
    values = {**SMOKE, "runtime.cache_dir": cache, "runtime.device": "cpu", "data.limit_train": 128,
              "model.width": 0.5, **dotted}
    return ExperimentConfig.from_dict(values)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_reports_every_key(cache, method, tmp_path):
    reports = []
    # runtime.export: every method's rebuilt model exports to ONNX and ONNX Runtime agrees with it
    cfg = smoke(cache, **{"prune.method": method, "prune.ratio": 0.5, "runtime.workdir": str(tmp_path),
                          "runtime.export": "onnx"})
    metrics = run(cfg, reporter=lambda m, ckpt: reports.append((m, ckpt)), log=quiet)
    # the schema is the whole contract: every key emitted is declared, every metric is present
    assert set(METRIC_KEYS) <= set(metrics) <= set(METRIC_KEYS) | set(DETAIL_KEYS)
    assert {"layer_channels_final", "layer_params_base"} <= set(metrics)
    assert ({"imp_levels", "imp_epochs"} <= set(metrics)) == (method == "imp")
    assert all(set(m) == set(EPOCH_KEYS) for m, _ in reports[:-1])
    assert set(reports[-1][0]) == set(metrics) | {"stage"}
    for key in METRIC_KEYS:
        if key not in ("acc5_base", "acc5_final"):  # top-5 is null below 100 classes
            assert metrics[key] is not None, key
    assert metrics["acc5_final"] is None and metrics["num_classes"] == 10
    assert metrics["rebuild_max_abs_diff"] <= 1e-4 and metrics["onnx_max_abs_diff"] <= 1e-4
    assert (tmp_path / f"{cfg.model.name}_rebuilt.onnx").stat().st_size > 0
    assert metrics["flops_nz_final"] <= metrics["flops_base"]
    assert math.isclose(metrics["flops_kept_effective"], metrics["flops_nz_final"] / metrics["flops_base"])
    assert math.isclose(metrics["flops_kept_dense"], metrics["flops_final"] / metrics["flops_base"])
    if method in ("imp", "snip", "random_init", "kernel", "intra_kernel"):  # masks: no dense kernel runs faster
        assert metrics["flops_kept_dense"] > metrics["flops_kept_effective"]
    # compute: the base's epochs (shared), IMP's levels inside pruning, the training after it
    assert metrics["epochs_base"] == (0 if method in ("snip", "random_init") else cfg.train.epochs)
    assert metrics["epochs_trial"] == metrics["epochs_prune"] + metrics["finetune_epochs"]
    assert (metrics["epochs_prune"] > 0) == (method == "imp")
    assert metrics["epochs_teacher"] == 0  # no distillation unless finetune.kd_alpha > 0
    if method != "none":
        assert metrics["flops_nz_final"] < metrics["flops_base"]
        assert metrics["params_nz_final"] < metrics["params_base"]
    if method in ("imp", "snip", "random_init"):
        assert metrics["sparsity"] == pytest.approx(0.5, abs=0.02)
    epochs = [m for m, _ in reports if m["stage"] == "finetune"]
    assert len(epochs) == metrics["finetune_epochs"] >= 1
    assert all(ckpt is not None and "flops_final" in m for m, ckpt in reports[:-1])
    assert reports[-1][0]["stage"] == "done" and reports[-1][1] is None


def test_second_run_loads_the_cached_base(cache, tmp_path):
    cfg = smoke(cache, **{"train.lr": 0.05})  # a base no other test trains
    first = run(cfg, log=quiet)
    second = run(cfg.replace(**{"prune.ratio": 0.3}), log=quiet)
    assert (first["base_cached"], second["base_cached"]) == (0, 1)
    assert first["acc_base"] == second["acc_base"]
    info = ensure_base(cfg.replace(**{"prune.method": "kernel"}), log=quiet)  # another method, the same base
    assert (info.source, info.trained, info.path) == ("cache", False, base_path(cfg))
    assert info.val_acc == first_val_acc(info) and info.seconds >= 0


def first_val_acc(info):
    return max(r["val_acc"] for r in info.artifact["history"])


def test_killed_finetune_resumes_where_it_stopped(cache, tmp_path):
    cfg = smoke(cache, **{"finetune.epochs": 3, "runtime.workdir": str(tmp_path / "a")})
    straight = run(cfg, log=quiet)

    class Killed(Exception):
        pass

    def die_after_two(m, _ckpt):
        if m.get("epoch") == 2:
            raise Killed

    cfg_b = cfg.replace(**{"runtime.workdir": str(tmp_path / "b")})
    with pytest.raises(Killed):
        run(cfg_b, reporter=die_after_two, log=quiet)
    seen = []
    resumed = run(cfg_b.replace(**{"runtime.resume": True}), reporter=lambda m, c: seen.append(m.get("epoch")),
                  log=quiet)
    assert seen[:-1] == [3]  # only the third epoch ran again, then the final report
    for key in ("acc_final", "acc_pruned", "flops_final", "params_nz_final"):
        assert resumed[key] == pytest.approx(straight[key]), key


def test_channel_pruning_keeps_accuracy_on_mnist5k(tmp_path):
    """resnet20 on mnist5k: base >= 95% after 5 epochs; channel-L1 global at 0.5 with 3 fine-tune
    epochs within 1.5 points of it."""
    cfg = ExperimentConfig.from_dict({"prune.method": "channel", "prune.criterion": "l1", "prune.scope": "global",
                                      "prune.ratio": 0.5, "finetune.epochs": 3, "runtime.device": "cpu",
                                      "runtime.cache_dir": str(tmp_path), "runtime.latency_repeats": 5})
    m = run(cfg, log=quiet)
    assert m["acc_base"] >= 95.0
    assert m["acc_final"] >= m["acc_base"] - 1.5, (m["acc_base"], m["acc_final"])
    assert m["flops_kept_dense"] == m["flops_kept_effective"] < 0.5  # channels removed: realisable


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("method", ["channel", "snip", "kernel"])
def test_lenet300_end_to_end_on_mnist5k(cache, method, tmp_path):
    """The MLP through the whole pipeline: channel pruning removes hidden neurons, SNIP masks
    weights; kernel pruning, which needs a conv layer, stops with one line naming what applies."""
    cfg = smoke(cache, **{"model.name": "lenet300", "prune.method": method, "prune.ratio": 0.5,
                          "runtime.workdir": str(tmp_path)})
    if method == "kernel":
        with pytest.raises(ConfigError, match="^prune.method='kernel': model lenet300 has no conv layer"):
            run(cfg, log=quiet)
        return
    m = run(cfg, log=quiet)
    assert m["rebuild_max_abs_diff"] <= 1e-4
    assert m["flops_nz_final"] < 0.6 * m["flops_base"]
    assert m["acc_final"] > 10.0  # better than chance after a few steps
    if method == "channel":  # model.width 0.5: 150 and 50 hidden neurons, halved; the 10 outputs kept
        assert m["layer_channels_final"] == {"fc1": 75, "fc2": 25, "fc3": 10}
