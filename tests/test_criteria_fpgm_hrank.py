"""FPGM (He et al. 2019) and HRank (Lin et al. 2020) against their reference code, transcribed
here, on hand-sized networks: he-y/filter-pruning-geometric-median ``Mask.get_filter_similar`` and
lmbxmu/HRank ``rank_generation.get_feature_hook`` with ``mask.py``'s choice."""

import copy

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from prune_core.config import ExperimentConfig
from prune_core.pruning import CRITERIA, PruneContext, prune_model
from prune_core.pruning.channel import group_scores
from prune_core.pruning.graph import build_graph

from _nets import ResidualPair

distance = pytest.importorskip("scipy.spatial.distance")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def net_of(widths=(6, 8), bias_low=-1.0) -> nn.Module:
    """conv-BN-ReLU per width; BN shifts spread from ``bias_low`` to 0.5, so some channels' maps
    are mostly zero after the ReLU (low rank) and others dense (full rank)."""
    torch.manual_seed(0)
    layers, cin = [], 3
    for w in widths:
        bn = nn.BatchNorm2d(w)
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.copy_(torch.linspace(bias_low, 0.5, w)[torch.randperm(w)])
            bn.running_var.uniform_(0.5, 2.0)
        layers += [nn.Conv2d(cin, w, 3, padding=1), bn, nn.ReLU()]
        cin = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 4)).eval()


def batches():
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        yield torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 4, (6,), generator=g)


def context(values: dict) -> PruneContext:
    return PruneContext(ExperimentConfig.from_dict(values), example_input=torch.randn(2, 3, 8, 8),
                        calib_batches=batches)


def scores(net: nn.Module, criterion: str) -> dict:
    work = copy.deepcopy(net)
    groups = build_graph(work, torch.randn(2, 3, 8, 8)).channel_groups()
    return {g.root: s for g, s in zip(groups, group_scores(work, groups, CRITERIA[criterion](), context({})))}


# -- FPGM ---------------------------------------------------------------------------------------

def reference_fpgm(weight_torch: torch.Tensor, compress_rate: float, distance_rate: float):
    """``Mask.get_filter_similar`` of pruning_cifar10.py with dist_type "l2", less its CUDA and
    prints: the norm step keeps ``compress_rate`` of the filters (1: all, the pure-FPGM setting),
    then the ``distance_rate`` share with the smallest summed distance is pruned. Returns
    (similar_sum, put back in filter order, the indices pruned by distance)."""
    filter_pruned_num = int(weight_torch.size()[0] * (1 - compress_rate))
    similar_pruned_num = int(weight_torch.size()[0] * distance_rate)
    weight_vec = weight_torch.view(weight_torch.size()[0], -1)
    norm_np = torch.norm(weight_vec, 2, 1).cpu().numpy()
    filter_large_index = norm_np.argsort()[filter_pruned_num:]
    weight_vec_after_norm = torch.index_select(weight_vec, 0, torch.LongTensor(filter_large_index)).numpy()
    similar_matrix = distance.cdist(weight_vec_after_norm, weight_vec_after_norm, 'euclidean')
    similar_sum = np.sum(np.abs(similar_matrix), axis=0)
    similar_small_index = similar_sum.argsort()[:similar_pruned_num]
    in_order = np.full(len(norm_np), np.nan)
    in_order[filter_large_index] = similar_sum
    return in_order, sorted(int(filter_large_index[i]) for i in similar_small_index)


def test_fpgm_scores_and_prunes_each_layer_as_the_reference_does():
    net = net_of()
    got = scores(net, "fpgm")
    plan = prune_model(copy.deepcopy(net), context({"prune.criterion": "fpgm", "prune.ratio": 0.5}))
    for root in ("0", "3"):
        want_sum, want_pruned = reference_fpgm(net.get_submodule(root).weight.detach(), 1.0, 0.5)
        np.testing.assert_allclose(got[root].double().numpy(), want_sum, rtol=1e-6)
        assert plan.channels[root] == want_pruned, root


def test_fpgm_ranks_raw_weights_not_torch_pruning_s_magnitudes():
    """Filters a, -a and b: on raw weights a and -a are far apart (the reference); on |w|, as
    Torch-Pruning's FPGMImportance measures, they coincide, and the ranking turns over."""
    net = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.Flatten(), nn.Linear(3 * 4, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0, 0.3]).view(3, 1, 1, 1))
    raw = scores_on(net, "fpgm")
    want, _ = reference_fpgm(net[0].weight.detach(), 1.0, 0.0)
    np.testing.assert_allclose(raw.double().numpy(), want, rtol=1e-6)
    group = build_graph(copy.deepcopy(net), torch.randn(1, 1, 2, 2)).channel_groups()[0].group
    magnitude = tp.importance.FPGMImportance(p=1, normalizer=None)(group)
    assert torch.argmin(raw).item() == 2 and torch.argmin(magnitude).item() != 2


def scores_on(net: nn.Module, criterion: str) -> torch.Tensor:
    work = copy.deepcopy(net)
    groups = build_graph(work, torch.randn(1, 1, 2, 2)).channel_groups()
    ctx = PruneContext(ExperimentConfig.from_dict({}), example_input=torch.randn(1, 1, 2, 2))
    return group_scores(work, groups, CRITERIA[criterion](), ctx)[0]


# -- HRank --------------------------------------------------------------------------------------

def reference_hrank(net: nn.Module, relu: nn.Module) -> torch.Tensor:
    """rank_generation.py: ``get_feature_hook`` on one ReLU, ``test()`` over the batches (eval, no
    gradients). ``torch.matrix_rank`` is ``torch.linalg.matrix_rank`` in current PyTorch."""
    state = {"feature_result": torch.tensor(0.), "total": torch.tensor(0.)}

    def get_feature_hook(self, input, output):
        a = output.shape[0]
        b = output.shape[1]
        c = torch.tensor([torch.linalg.matrix_rank(output[i, j, :, :]).item() for i in range(a) for j in range(b)])
        c = c.view(a, -1).float()
        c = c.sum(0)
        state["feature_result"] = state["feature_result"] * state["total"] + c
        state["total"] = state["total"] + a
        state["feature_result"] = state["feature_result"] / state["total"]

    handler = relu.register_forward_hook(get_feature_hook)
    net.eval()
    with torch.no_grad():
        for inputs, _ in batches():
            net(inputs)
    handler.remove()
    return state["feature_result"]


def test_hrank_scores_are_the_reference_s_average_feature_map_ranks_and_the_lowest_go():
    net = net_of()
    got = scores(net, "hrank")
    plan = prune_model(copy.deepcopy(net), context({"prune.criterion": "hrank", "prune.ratio": 0.5}))
    for root, relu in (("0", 2), ("3", 5)):
        ref = copy.deepcopy(net)
        want = reference_hrank(ref, ref[relu])
        assert want.min() < want.max() - 1, want  # the maps differ in rank: a ranking to check
        torch.testing.assert_close(got[root].float(), want, rtol=1e-6, atol=1e-6)
        keep = len(want) - len(want) // 2
        order = np.argsort(want.numpy(), kind="stable")  # mask.py: np.argsort(rank)[pruned_num:] are kept
        assert want[order[len(want) - keep - 1]] < want[order[len(want) - keep]]  # no tie at the cut
        assert plan.channels[root] == sorted(order[:len(want) - keep].tolist()), root


def test_hrank_averages_the_ranks_of_a_residual_group_s_batch_norms_and_keeps_the_model_as_it_was():
    """A named deviation: the reference ranks a block's output after the add; a coupled group here
    averages the ReLU-ranked maps of each batch norm whose output is added."""

    net = ResidualPair().train()
    with torch.no_grad():  # shifts that leave some maps mostly zero after the ReLU
        net.bn_a.bias.copy_(torch.tensor([-2.0, -1.0, 0.0, 0.5]))
        net.bn_b.bias.copy_(torch.tensor([0.5, -2.0, -0.5, 0.0]))
    maps = {}
    for bn in (net.bn_a, net.bn_b):
        ref = copy.deepcopy(net)
        layer = ref.bn_a if bn is net.bn_a else ref.bn_b
        relu = nn.ReLU()  # the reference's hook sits on a ReLU: one that sees this BN's output alone
        layer.register_forward_hook(lambda _m, _i, out, relu=relu: None if relu(out) is None else None)
        maps[bn] = reference_hrank(ref, relu)
    work = copy.deepcopy(net)
    before = {k: v.clone() for k, v in work.state_dict().items()}
    groups = build_graph(work, torch.randn(2, 3, 8, 8)).channel_groups()
    got = group_scores(work, groups, CRITERIA["hrank"](), context({}))[0]
    torch.testing.assert_close(got.float(), (maps[net.bn_a] + maps[net.bn_b]) / 2, rtol=1e-6, atol=1e-6)
    assert work.training  # its mode restored, and eval mode kept the BN statistics as they were
    assert all(torch.equal(v, work.state_dict()[k]) for k, v in before.items())


def test_hrank_ranks_a_hidden_neuron_by_how_often_it_fires():
    """A linear layer's map is one number per image: rank 1 where it is positive after the ReLU."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5), nn.ReLU(), nn.Linear(5, 4)).eval()
    work = copy.deepcopy(net)
    groups = build_graph(work, torch.randn(2, 3, 8, 8)).channel_groups()
    got = group_scores(work, groups, CRITERIA["hrank"](), context({}))[0]
    x = torch.cat([b for b, _ in batches()])
    with torch.no_grad():
        fired = (net[1](net[0](x)) > 0).double().mean(0)
    torch.testing.assert_close(got.double(), fired)
