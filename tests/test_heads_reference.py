"""Head ranking pinned to Torch-Pruning's ``MetaPruner(prune_num_heads=True)`` on a hand-sized
timm attention layer: the same head scores and the same heads removed, for ``|w|`` and ``w²``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

timm_layers = pytest.importorskip("timm.layers")
tp = pytest.importorskip("torch_pruning")

from prune_core.config import ExperimentConfig  # noqa: E402
from prune_core.pruning import PruneContext, prune_model, rebuild  # noqa: E402
from prune_core.pruning.heads import attention_modules, head_count, head_scores  # noqa: E402

HEADS, DIM = 4, 16


class Net(nn.Module):
    """Tokens -> embedding -> one residual timm attention layer -> mean -> classes."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, DIM)
        self.attn = timm_layers.Attention(DIM, num_heads=HEADS, qkv_bias=True)
        self.head = nn.Linear(DIM, 3)

    def forward(self, x):
        if x.dim() == 4:  # an image batch (prune_model's example input): 8 channels, 5 x 1 pixels as tokens
            x = x.flatten(2).transpose(1, 2)
        h = self.embed(x)
        return self.head((h + self.attn(h)).mean(1))


def net(seed: int) -> Net:
    torch.manual_seed(seed)
    return Net().eval()


def reference(model: Net, p: int):
    """Torch-Pruning's head scores (captured from the attention group's importance) and the heads it keeps."""
    x = torch.randn(2, 5, 8)
    imp = tp.importance.MagnitudeImportance(p=p, group_reduction="mean", normalizer=None)
    pruner = tp.pruner.MetaPruner(model, x, importance=imp, pruning_ratio=0.5, head_pruning_ratio=0.5,
                                  num_heads={model.attn.qkv: HEADS}, prune_num_heads=True, prune_head_dims=False,
                                  ignored_layers=[model.head, model.embed])
    seen = {}
    estimate = pruner.estimate_importance

    def capture(group):
        scores = estimate(group)
        if any(dep.target.module is model.attn.proj for dep, _ in group):
            seen["head"] = scores.view(HEADS, -1).mean(1)  # what prune_num_heads ranks heads by
        return scores

    pruner.estimate_importance = capture
    before = model.attn.qkv.weight.detach().clone()
    pruner.step()
    after = model.attn.qkv.weight.detach()
    d = DIM // HEADS
    kept = [h for h in range(HEADS) if any(torch.equal(after[r], before[h * d]) for r in range(after.shape[0]))]
    return seen["head"], kept


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("p, saliency", [(1, lambda w: w.abs()), (2, lambda w: w.pow(2))], ids=["l1", "l2"])
def test_head_scores_and_choice_equal_torch_pruning(seed, p, saliency):
    ours = head_scores(net(seed).attn, saliency)
    theirs, kept = reference(net(seed), p)
    assert torch.allclose(ours, theirs.float(), rtol=1e-5)
    assert kept == sorted(ours.argsort()[HEADS // 2:].tolist()) and len(kept) == HEADS // 2


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_channel_on_timm_attention_removes_the_reference_heads_and_rebuilds_like_masked(criterion):
    """``channel`` (local) on the same net removes whole heads of timm's Attention, the lowest-scoring ones by
    the criterion's saliency; the rebuilt network computes what the masked one does."""
    model, x = net(0), torch.randn(2, 8, 5, 1)
    cfg = ExperimentConfig.from_dict({"prune.method": "channel", "prune.ratio": 0.5, "prune.criterion": criterion})
    plan = prune_model(model, PruneContext(cfg, example_input=x))
    saliency = (lambda w: w.abs()) if criterion == "l1" else (lambda w: w.pow(2))
    lowest = sorted(head_scores(model.attn, saliency).argsort()[:len(plan.channels["attn"])].tolist())
    assert plan.channels["attn"] == lowest and lowest
    small = rebuild(model, plan, x).model
    attn = attention_modules(small)["attn"]
    assert head_count(attn) == HEADS - len(lowest) and attn.attn_dim == head_count(attn) * attn.head_dim
