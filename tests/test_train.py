"""The one training loop: accuracy on the embedded digits, exact resume, schedules, progress lines."""

import itertools
import re

import pytest
import torch
from _payload import LOADED, payload

from prune_core.config import ExperimentConfig, TrainConfig
from prune_core.data import load_data
from prune_core.models import build_model
from prune_core.metrics import evaluate
from prune_core.train import Diverged, fit, lr_factor, param_groups, save_atomic, seed_everything

CPU = torch.device("cpu")


def _setup(limit=0, seed=0, model="resnet20"):
    cfg = ExperimentConfig.from_dict({"data.limit_train": limit, "data.batch_size": 128})
    data = load_data(cfg.data, CPU, seed)
    seed_everything(seed)
    model = build_model(model, data.num_classes, *data.input_shape[:2], width=0.5)
    return data, model


def test_lr_schedules():
    cos = TrainConfig(epochs=10, schedule="cosine", warmup_epochs=1)
    assert lr_factor(0, 10, cos) == pytest.approx(0.1)
    assert lr_factor(9, 10, cos) == pytest.approx(1.0)
    assert lr_factor(10, 10, cos) == pytest.approx(1.0)
    assert lr_factor(55, 10, cos) == pytest.approx(0.5)
    assert lr_factor(100, 10, cos) == pytest.approx(0.0, abs=1e-12)
    step = TrainConfig(epochs=10, schedule="step", step_size=3, gamma=0.1)
    assert lr_factor(29, 10, step) == 1.0 and lr_factor(30, 10, step) == pytest.approx(0.1)


def test_no_weight_decay_on_norm_and_bias():
    model = build_model("resnet20", 10, 3, 32)
    decay, no_decay = param_groups(model, 5e-4)
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 5e-4
    bn = model.bn1.weight
    assert any(p is bn for p in no_decay["params"])


def test_resumed_run_ends_like_an_uninterrupted_one(tmp_path):
    cfg = TrainConfig(epochs=4, lr=0.05, max_steps=6)
    data, model = _setup(limit=512)
    fit(model, cfg, data, device=CPU, checkpoint=tmp_path / "a.pt")
    straight = evaluate(model, data.test, data.num_classes)

    class Killed(Exception):
        pass

    def kill_after_two(record, _ckpt):
        if record["epoch"] == 2:
            raise Killed

    data, model = _setup(limit=512)
    with pytest.raises(Killed):
        fit(model, cfg, data, device=CPU, checkpoint=tmp_path / "b.pt", on_epoch=kill_after_two)
    torch.manual_seed(123)  # a new process starts from other RNG state
    data, model = _setup(limit=512, seed=0)
    model2 = build_model("resnet20", data.num_classes, *data.input_shape[:2], width=0.5)
    history = fit(model2, cfg, data, device=CPU, checkpoint=tmp_path / "b.pt", resume=True)
    resumed = evaluate(model2, data.test, data.num_classes)
    assert [e["epoch"] for e in history.epochs] == [1, 2, 3, 4]
    assert resumed.top1 == straight.top1
    assert resumed.loss == pytest.approx(straight.loss, rel=1e-6)


def test_early_stopping_and_bn_penalty():
    data, model = _setup(limit=256)
    cfg = TrainConfig(epochs=6, lr=1e-6, patience=1, max_steps=2, bn_l1=1e-2, weight_decay=0)
    before = model.bn1.weight.detach().abs().sum()
    history = fit(model, cfg, data, device=CPU)
    assert history.stopped_early and len(history.epochs) < 6
    # with a negligible lr only the L1 subgradient could move the scales, and only downwards
    assert model.bn1.weight.detach().abs().sum() <= before


def test_divergence_is_reported():
    data, model = _setup(limit=128)
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")  # what an exploding update leaves behind
    with pytest.raises(Diverged, match="lower the learning rate"):
        fit(model, TrainConfig(epochs=1, lr=0.1, max_steps=2), data, device=CPU)


def test_resume_never_unpickles_code_from_a_checkpoint(tmp_path):
    """A checkpoint that carries a pickled object whose loading would run code (a tampered or foreign
    file): fit loads checkpoints with weights_only=True, so the object is never built, whether fit
    then raises or sets the file aside and starts over."""
    LOADED.clear()
    data, model = _setup(limit=128)
    ckpt = tmp_path / "ckpt.pt"
    fit(model, TrainConfig(epochs=1, lr=0.05, max_steps=2), data, device=CPU, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)
    # the payload is live: a load that unpickles anything runs both of its parts
    save_atomic({**state, "extra": payload(tmp_path / "CONTROL")}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert (tmp_path / "CONTROL").exists() and LOADED == ["marker"]
    LOADED.clear()

    save_atomic({**state, "extra": payload(tmp_path / "PWNED")}, ckpt)  # fit's checkpoint, one entry more
    data, model = _setup(limit=128)
    try:
        fit(model, TrainConfig(epochs=2, lr=0.05, max_steps=2), data, device=CPU, checkpoint=ckpt, resume=True)
    except Exception:  # refused; which error (or a fresh start instead) is fit's choice
        pass
    assert not (tmp_path / "PWNED").exists() and LOADED == []


def test_progress_lines_within_an_epoch_follow_the_clock(one_thread):
    """The clock is read once as the epoch begins and once after each step but the last; a line
    comes when 10 s have passed since the epoch began or since the last line, never two in a period
    (steps 3 and 4 are past the first period but within the second line's)."""
    data, model = _setup(limit=1024, model="lenet300")  # 8 batches of 128
    ticks = iter([0.0, 4.0, 20.0, 21.0, 29.0, 32.0, 33.0])
    lines = []
    fit(model, TrainConfig(epochs=1, lr=0.05, max_steps=7), data, device=CPU, log=lines.append,
        progress_every=10.0, clock=lambda: next(ticks))
    assert next(ticks, None) is None  # every tick read: one per step, none at the last
    assert lines[:2] == ["train epoch 1/1: step 2/7, 13 img/s, 0:00:50 left",  # 256 images in 20 s
                         "train epoch 1/1: step 5/7, 20 img/s, 0:00:13 left"]  # 640 in 32 s; 2 steps of 6.4 s
    assert lines[2].startswith("train epoch 1/1: loss ") and len(lines) == 3
    assert lines[0].record == {"stage": "train", "epoch": 1, "epochs": 1, "step": 2, "steps": 7, "img_s": 12.8,
                               "left_s": 50.0}


def test_an_epoch_shorter_than_the_period_logs_only_its_epoch_line(one_thread):
    data, model = _setup(limit=512, model="lenet300")
    lines, clock = [], itertools.count(0.0, 4.9)  # 9.8 s at the second step, the last one read
    fit(model, TrainConfig(epochs=2, lr=0.05, max_steps=3), data, device=CPU, log=lines.append,
        clock=lambda: next(clock))
    assert len(lines) == 2 and all(re.fullmatch(rf"train epoch {k}/2: loss \d+\.\d{{4}}  val \d+\.\d\d%  "
                                                r"\(\d+\.\ds\)", line) for k, line in zip((1, 2), lines)), lines
    # past the period at every step, but tqdm's bar shows the epoch's progress instead
    lines, clock = [], itertools.count(0.0, 60.0)
    fit(model, TrainConfig(epochs=1, lr=0.05, max_steps=3), data, device=CPU, log=lines.append, progress="on",
        clock=lambda: next(clock))
    assert len(lines) == 1 and lines[0].startswith("train epoch 1/1: loss "), lines
