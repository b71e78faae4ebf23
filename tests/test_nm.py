"""``nm`` (N:M semi-structured sparsity) against NVIDIA ASP, its reference: apex/contrib/sparsity
``sparse_masklib.py`` (``create_mask``, ``mn_1d_best``) transcribed here with its ``.cuda()`` calls
moved to the CPU, and ``asp.py``'s rule for which layers it sparsifies."""

import sys
from itertools import permutations

import pytest
import torch
import yaml
from torch import nn

from prune_core.config import ConfigError, ExperimentConfig
from prune_core.metrics import count_flops
from prune_core.pruning import PruneContext, prune_model, rebuild
from prune_core.pruning.nm import eligible, nm_mask

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# -- sparse_masklib.py, the 1-D path (m4n2_1d), on the CPU -----------------------------------------

def reshape_1d(matrix, m):
    if matrix.shape[1] % m > 0:
        mat = torch.FloatTensor(matrix.shape[0], matrix.shape[1] + (m - matrix.shape[1] % m)).fill_(0)
        mat[:, : matrix.shape[1]] = matrix
        shape = mat.shape
        return mat.view(-1, m), shape
    else:
        return matrix.view(-1, m), matrix.shape


def compute_valid_1d_patterns(m, n):
    patterns = torch.zeros(m)
    patterns[:n] = 1
    return torch.tensor(list(set(permutations(patterns.tolist()))))


def mn_1d_best(matrix, m, n):
    patterns = compute_valid_1d_patterns(m, n)
    mask = torch.IntTensor(matrix.shape).fill_(1).view(-1, m)
    mat, shape = reshape_1d(matrix, m)
    pmax = torch.argmax(torch.matmul(mat.abs(), patterns.t()), dim=1)
    mask[:] = patterns[pmax[:]]
    mask = mask.view(matrix.shape)
    return mask


def m4n2_1d(mat, density):
    return mn_1d_best(mat, 4, 2)


def create_mask(tensor, pattern="m4n2_1d", density=0.5):
    shape = tensor.shape
    ttype = tensor.type()
    t = tensor.float().contiguous()
    func = getattr(sys.modules[__name__], pattern, None)
    if len(shape) == 2:
        t = t.view(shape[0], shape[1])
        mask = func(t, density)
        return mask.view(shape).type(ttype)
    elif len(shape) == 3:
        t = t.permute(0, 2, 1).contiguous().view(shape[0] * shape[2], shape[1])
        mask = func(t, density)
        mask = mask.view(shape[0], shape[2], shape[1]).permute(0, 2, 1).contiguous()
        return mask.view(shape).type(ttype)
    elif len(shape) == 4:
        t = t.permute(2, 3, 0, 1).contiguous().view(shape[2] * shape[3] * shape[0], shape[1])
        mask = func(t, density)
        mask = mask.view(shape[2], shape[3], shape[0], shape[1]).permute(2, 3, 0, 1).contiguous()
        return mask.view(shape).type(ttype)


def distinct(*shape, seed=0) -> torch.Tensor:
    """A weight of distinct magnitudes and random signs: the best pattern of every group is unique."""
    g = torch.Generator().manual_seed(seed)
    n = torch.Size(shape).numel()
    signs = torch.randint(0, 2, (n,), generator=g) * 2 - 1
    return ((torch.randperm(n, generator=g) + 1.0) / n * signs).reshape(shape)


@pytest.mark.parametrize("shape", [(8, 16), (16, 32, 3, 3), (8, 16, 5), (24, 48, 1, 1)],
                         ids=["linear", "conv2d", "conv1d", "pointwise"])
def test_2_4_masks_equal_asp_s_create_mask(shape):
    weight = distinct(*shape)
    ours = nm_mask(weight, 2, 4)
    assert torch.equal(ours, create_mask(weight))
    # along the input channels: every group of 4 consecutive input weights keeps exactly 2
    rows = ours.movedim(1, -1).reshape(-1, 4) if ours.dim() > 2 else ours.reshape(-1, 4)
    assert bool((rows.sum(1) == 2).all())


def test_n_of_m_keeps_the_n_largest_of_each_group():
    weight = distinct(8, 16, seed=3)
    for n, m in ((1, 4), (1, 8), (4, 8), (2, 8)):
        mask = nm_mask(weight, n, m)
        groups, kept = weight.abs().reshape(-1, m), mask.reshape(-1, m).bool()
        assert bool((kept.sum(1) == n).all())
        smallest_kept = torch.where(kept, groups, torch.full_like(groups, float("inf"))).amin(1)
        largest_gone = torch.where(~kept, groups, torch.full_like(groups, -1.0)).amax(1)
        assert bool((smallest_kept > largest_gone).all()), (n, m)


def test_the_layers_sparsified_are_asp_s():
    """asp.py: linear and conv weights with size(0) % 8 == 0 and size(1) % 16 == 0; here also
    input channels a multiple of M and ungrouped convs."""
    assert eligible(nn.Conv2d(16, 32, 3), 4) and eligible(nn.Linear(64, 8), 4) and eligible(nn.Conv1d(16, 8, 3), 4)
    assert not eligible(nn.Conv2d(3, 16, 3), 4)  # a first conv on RGB: C % 16
    assert not eligible(nn.Linear(64, 10), 4)  # a 10-class classifier: K % 8
    assert not eligible(nn.Conv2d(32, 32, 3, groups=32), 4)  # depthwise: one input channel per group
    assert not eligible(nn.Conv2d(48, 48, 3), 32)  # 48 input channels do not group by 32
    assert not eligible(nn.BatchNorm2d(16), 4)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.body(torch.relu(self.stem(x)))).mean((2, 3)))


def test_nm_masks_the_eligible_layers_and_effective_flops_count_them():
    net, x = Net().eval(), torch.randn(2, 3, 8, 8)
    cfg = ExperimentConfig.from_dict({"prune.method": "nm"})
    dense = count_flops(net, (3, 8, 8))
    plan = prune_model(net, PruneContext(cfg, example_input=x))
    assert set(plan.masks) == {"body"} and plan.stats["nm_layers"] == 1 and plan.stats["unit_ratio"] == 0.5
    assert torch.equal(plan.masks["body"], create_mask(net.body.weight_orig.detach()))
    share = net.body.weight.numel() / (net.stem.weight.numel() + net.body.weight.numel() + net.fc.weight.numel())
    assert plan.stats["metrics"]["nm_weight_share"] == pytest.approx(share)
    result = rebuild(net, plan, x)
    after = count_flops(result.model, (3, 8, 8))
    body = dense.per_layer["body"]
    assert after.total == dense.total  # nothing removed physically: the pattern stays inside each layer
    assert after.effective == pytest.approx(dense.effective - body / 2)


def test_prune_nm_reads_n_m_in_any_spelling_and_refuses_a_ratio_it_cannot_give():
    assert ExperimentConfig.from_dict({"prune.method": "nm", "prune.nm": yaml.safe_load("2:4")}).prune.nm == "2:4"
    assert ExperimentConfig.from_dict({"prune.method": "nm", "prune.nm": yaml.safe_load("1:8"),
                                       "prune.ratio": 0.875}).prune.nm == "1:8"
    with pytest.raises(ConfigError, match=r"^prune.ratio=0.3: expected 0.5 for method nm with prune.nm='2:4' "):
        ExperimentConfig.from_dict({"prune.method": "nm", "prune.ratio": 0.3})
    with pytest.raises(ConfigError, match=r"^prune.nm='4:2': expected 'N:M' with 0 < N < M, e.g. '2:4'"):
        ExperimentConfig.from_dict({"prune.method": "nm", "prune.nm": "4:2"})
    with pytest.raises(ConfigError, match=r"^prune.target='flops': expected unit for method nm"):
        ExperimentConfig.from_dict({"prune.method": "nm", "prune.target": "flops"})
