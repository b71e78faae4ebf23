"""Distillation in fine-tuning (``finetune.kd_alpha``, ``finetune.kd_temperature``): Hinton et al.
2015's loss on hand-sized inputs, the loss ``fit`` minimises, the teacher left untouched, the
methods that refuse it, and what a trial records."""

import math
import re

import pytest
import torch
from torch import nn

from prune_core import SMOKE, ExperimentConfig, run
from prune_core.config import ConfigError, FinetuneConfig
from prune_core.train import distillation_loss, fit, training_loss

CPU = torch.device("cpu")
STUDENT = [[1.0, -0.5, 2.0], [0.3, 0.8, -1.2]]
TEACHER = [[2.5, 0.0, 0.5], [-0.4, 1.5, 0.2]]


def softmax(row, t):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def hinton(student, teacher, t):
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over rows, by hand."""
    total = 0.0
    for s, te in zip(student, teacher):
        p, q = softmax(te, t), softmax(s, t)
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return t * t * total / len(student)


def cross_entropy(student, labels):
    return sum(-math.log(softmax(s, 1.0)[y]) for s, y in zip(student, labels)) / len(student)


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_distillation_loss_is_hintons_soft_target_term(t):
    s, te = torch.tensor(STUDENT, dtype=torch.float64, requires_grad=True), torch.tensor(TEACHER, dtype=torch.float64)
    loss = distillation_loss(s, te, t)
    assert float(loss.detach()) == pytest.approx(hinton(STUDENT, TEACHER, t), rel=1e-12)
    # RepDistiller's DistillKL (distiller_zoo/KD.py): kl_div(log_softmax(s/T), softmax(t/T), sum) * T^2 / batch
    reference = nn.functional.kl_div(torch.log_softmax(s.detach() / t, 1), torch.softmax(te / t, 1),
                                     reduction="sum") * t ** 2 / s.shape[0]
    assert float(loss.detach()) == pytest.approx(float(reference), rel=1e-12)
    # Hinton et al.'s gradient: dC/dz_i = (q_i - p_i) / T for the KL, times T^2 (and 1/batch for the mean)
    loss.backward()
    expected = t * (torch.softmax(s.detach() / t, 1) - torch.softmax(te / t, 1)) / s.shape[0]
    assert torch.allclose(s.grad, expected, rtol=0, atol=1e-15)
    assert float(distillation_loss(te, te, t)) == pytest.approx(0.0, abs=1e-15)  # its own teacher: nothing to learn


def test_the_step_loss_mixes_hard_and_soft_terms_by_alpha():
    s, te, y = torch.tensor(STUDENT, dtype=torch.float64), torch.tensor(TEACHER, dtype=torch.float64), torch.tensor([0, 2])
    ce = nn.CrossEntropyLoss()
    for alpha in (0.0, 0.3, 1.0):
        got = float(training_loss(s, y, ce, te, alpha, 2.0))
        want = (1 - alpha) * cross_entropy(STUDENT, [0, 2]) + alpha * hinton(STUDENT, TEACHER, 2.0)
        assert got == pytest.approx(want, rel=1e-12)
    assert float(training_loss(s, y, ce, None, 0.3, 2.0)) == pytest.approx(cross_entropy(STUDENT, [0, 2]), rel=1e-12)


class Batches(list):
    """A loader of fixed batches with the ``set_epoch`` fit calls."""

    def set_epoch(self, epoch):
        pass


class Data:
    def __init__(self, x, y):
        self.train = self.val = Batches([(x, y)])
        self.num_classes = 3


def linear(weight, bias):
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor(weight))
        net[1].bias.copy_(torch.tensor(bias))
    return net


def test_fit_minimises_the_distillation_loss_and_leaves_the_teacher_as_it_was():
    x = torch.tensor([[1.0, 0.0, -1.0, 2.0], [0.5, -0.5, 1.0, 0.0]]).reshape(2, 1, 2, 2)
    y = torch.tensor([0, 2])
    ws, bs = [[0.2, -0.1, 0.4, 0.3], [-0.3, 0.5, 0.1, -0.2], [0.1, 0.2, -0.4, 0.6]], [0.1, -0.1, 0.0]
    wt, bt = [[0.9, 0.1, -0.5, 0.2], [0.0, 0.7, 0.3, -0.6], [-0.2, 0.4, 0.8, 0.1]], [0.0, 0.2, -0.3]
    flat = x.reshape(2, 4).tolist()
    logits = [[sum(w * v for w, v in zip(row, xi)) + b for row, b in zip(ws, bs)] for xi in flat]
    soft = [[sum(w * v for w, v in zip(row, xi)) + b for row, b in zip(wt, bt)] for xi in flat]
    for alpha in (0.0, 0.6):
        student, teacher = linear(ws, bs), nn.Sequential(linear(wt, bt), nn.BatchNorm1d(3))
        teacher[1].running_mean.zero_()  # identity in eval mode: the teacher's logits are its linear layer's
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        cfg = FinetuneConfig(epochs=1, lr=0.1, weight_decay=0.0, kd_alpha=alpha, kd_temperature=2.0)
        history = fit(student, cfg, Data(x, y), device=CPU, stage="finetune", teacher=teacher)
        # the loss of the one step, on the weights before it: (1 - a) CE + a T^2 KL, by hand
        want = (1 - alpha) * cross_entropy(logits, [0, 2]) + alpha * hinton(logits, soft, 2.0)
        assert history.epochs[0]["train_loss"] == pytest.approx(want, rel=1e-5)
        # the teacher ran in eval mode, without gradient: its weights and BN statistics are as they were
        assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
        assert not student[1].weight.equal(torch.tensor(ws))  # the student did train
    with pytest.raises(ValueError, match="kd_alpha=0.5 needs a teacher"):
        fit(linear(ws, bs), FinetuneConfig(epochs=1, kd_alpha=0.5), Data(x, y), device=CPU, stage="finetune")


@pytest.mark.parametrize("method", ["snip", "random_init", "imp"])
def test_methods_that_do_not_fine_tune_refuse_distillation_in_one_line(method):
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict({"prune.method": method, "finetune.kd_alpha": 0.5})
    text = str(err.value)
    assert text.startswith(f"finetune.kd_alpha=0.5: expected 0 for {method}") and "\n" not in text


@pytest.mark.parametrize("key, value, accepted", [("finetune.kd_alpha", 1.5, "in [0, 1]"),
                                                  ("finetune.kd_alpha", float("nan"), "expected a number (finite)"),
                                                  ("finetune.kd_temperature", 0, "positive finite"),
                                                  ("finetune.kd_temperature", float("inf"),
                                                   "expected a number (finite)")])
def test_bad_distillation_values_name_the_key_and_what_is_accepted(key, value, accepted):
    with pytest.raises(ConfigError, match=re.escape(accepted)) as err:
        ExperimentConfig.from_dict({key: value})
    assert str(err.value).startswith(f"{key}=")
    with pytest.raises(ConfigError, match="train accepts"):  # the base has no teacher: no train.kd_alpha
        ExperimentConfig.from_dict({"train.kd_alpha": 0.5})


def test_a_distilled_trial_records_its_teacher_epochs_and_trains_on_another_loss(tmp_path):
    base = {**SMOKE, "runtime.cache_dir": str(tmp_path / "cache"), "runtime.device": "cpu", "data.limit_train": 128,
            "model.width": 0.5, "prune.method": "channel", "prune.ratio": 0.3, "finetune.epochs": 2}
    plain, distilled = [], []
    m0 = run(ExperimentConfig.from_dict(base), reporter=lambda m, _: plain.append(m), log=lambda _: None)
    m1 = run(ExperimentConfig.from_dict({**base, "finetune.kd_alpha": 1.0, "finetune.kd_temperature": 1.0}),
             reporter=lambda m, _: distilled.append(m), log=lambda _: None)
    assert m0["epochs_teacher"] == 0 and m1["epochs_teacher"] == m1["finetune_epochs"] == 2
    assert m0["epochs_trial"] == m1["epochs_trial"]  # the teacher's passes are counted apart
    # the same pruned network, fine-tuned on the same batches: only the loss differs
    assert m0["flops_final"] == m1["flops_final"] and m0["acc_pruned"] == m1["acc_pruned"]
    assert plain[0]["train_loss"] != pytest.approx(distilled[0]["train_loss"], rel=1e-3)
