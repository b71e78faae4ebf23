"""Group sparsity (DepGraph, Fang et al. 2023): ``train.group_l1`` trains with Torch-Pruning's
``GroupNormPruner`` regulariser, the reference, and ``group_norm`` scores a channel by its whole
group's L2 norm."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from prune_core.config import ConfigError, ExperimentConfig
from prune_core.data import load_data
from prune_core.pruning import CRITERIA, PruneContext, prune_model
from prune_core.pruning.group_norm import group_regularizer
from prune_core.train import fit, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4))


def backward(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    model.train()
    F.cross_entropy(model(torch.randn(8, 3, 8, 8, generator=g)), torch.randint(0, 4, (8,), generator=g)).backward()


def test_the_penalty_is_torch_pruning_s_group_norm_regulariser_with_the_classes_left_alone():
    """What Torch-Pruning's examples do (GroupNormPruner(..., ignored_layers=[classifier]), then
    regularize(model) after each backward) is what the training step does, and tracing the graph
    leaves the batch norms' statistics as they were."""
    ours, ref = net(), net()
    example = torch.randn(2, 3, 8, 8)
    stats = {k: v.clone() for k, v in ours.state_dict().items()}
    regularize = group_regularizer(ours, example, 1e-2)
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in stats.items())
    pruner = tp.pruner.GroupNormPruner(ref, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                       reg=1e-2, ignored_layers=[ref[8]])
    backward(ours), backward(ref)
    plain = {n: p.grad.clone() for n, p in ours.named_parameters()}  # before the penalty
    regularize(ours)
    pruner.regularize(ref)
    for (n, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=n)
    assert not torch.equal(ours[0].weight.grad, plain["0.weight"])  # the conv rows are pushed
    # the classes are no group: without ignoring the classifier its rows would be pushed too
    unignored = net()
    whole = tp.pruner.GroupNormPruner(unignored, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      reg=1e-2)
    backward(unignored)
    whole.regularize(unignored)
    assert not torch.equal(unignored[8].weight.grad, ours[8].weight.grad)


def test_a_weak_group_is_pushed_hardest():
    """DepGraph's eq. 5: gamma_k = 2^(4 (I_max - I_k) / (I_max - I_min)), so the channel with the
    smallest group norm gets 16x the decay of the largest, per unit of weight."""
    model = net()
    with torch.no_grad():
        model[0].weight[2].mul_(0.05)  # channel 2 of the first group: the weakest by far
    regularize = group_regularizer(model, torch.randn(2, 3, 8, 8), 1.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    regularize(model)
    decay = (model[0].weight.grad / model[0].weight.detach()).flatten(1).mean(1)  # reg * gamma per row
    assert decay.argmax().item() == 2 and decay.max().item() == pytest.approx(16.0, rel=1e-4)
    assert decay.min().item() == pytest.approx(1.0, rel=1e-4)


def test_group_norm_reads_the_whole_group_where_l2_reads_its_filters():
    """Two channels with equal filters but next-layer input columns of different size: l2 ties,
    group_norm ranks the one the next layer hardly reads lower."""
    model = net().eval()
    with torch.no_grad():
        model[0].weight[1].copy_(model[0].weight[0])
        model[1].weight[1] = model[1].weight[0]
        model[3].weight[:, 0].mul_(0.01)  # channel 0 feeds the next conv almost nothing
    ctx = PruneContext(ExperimentConfig.from_dict({"prune.criterion": "group_norm", "prune.ratio": 0.2}),
                       example_input=torch.randn(2, 3, 8, 8))
    plan = prune_model(copy.deepcopy(model), ctx)
    assert plan.channels["0"] == [0]
    assert "group_norm" in CRITERIA and CRITERIA["group_norm"].units == ("channel",)


def test_group_l1_is_in_the_base_key_only_when_set_and_must_not_be_negative():
    plain = ExperimentConfig.from_dict({})
    assert "group_l1" not in plain.base_key()["train"]  # bases cached before it keep their hashes
    sparse = ExperimentConfig.from_dict({"train.group_l1": 5e-4})
    assert sparse.base_key()["train"]["group_l1"] == 5e-4 and sparse.base_hash() != plain.base_hash()
    with pytest.raises(ConfigError, match=r"^train.group_l1=-0.1: expected a number >= 0$"):
        ExperimentConfig.from_dict({"train.group_l1": -0.1})


def test_training_with_the_penalty_shrinks_the_weakest_groups():
    cfg = ExperimentConfig.from_dict({"data.name": "synthetic", "data.num_samples": 256, "data.image_size": 8,
                                      "data.num_classes": 4, "data.batch_size": 32, "train.epochs": 2, "train.lr": 0.05})
    device = torch.device("cpu")
    data = load_data(cfg.data, device, 0)
    norms = {}
    for strength in (0.0, 0.05):
        seed_everything(0)
        model = net()
        fit(model, cfg.replace(**{"train.group_l1": strength}).train, data, device=device, amp=False)
        norms[strength] = model[0].weight.detach().flatten(1).norm(dim=1)
    shrink = norms[0.05] / norms[0.0]
    assert shrink.max() < 1.0  # every channel decays
    assert shrink[norms[0.0].argmin()] < shrink[norms[0.0].argmax()]  # the weakest the most
