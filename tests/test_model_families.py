"""``channel`` on one model per torchvision family: rebuilt = masked, FLOPs drop, heads updated.

Tiny configurations of the same torchvision classes keep the code paths (grouped convs, channel
shuffle, LayerNorm-coupled residual streams, multi-head attention, window attention, MaxViT) and
the module under a minute on 2 cores. ``bench/model_coverage.py`` runs the full-size builders."""

from __future__ import annotations

from functools import lru_cache, partial

import pytest
import torch
from torch import nn

torchvision = pytest.importorskip("torchvision")
from torchvision.models import (MaxVit, VisionTransformer, convnext,  # noqa: E402
                                densenet, efficientnet, mobilenetv2, regnet, resnet, shufflenetv2,
                                squeezenet, swin_transformer, vgg)

from prune_core.config import ExperimentConfig  # noqa: E402
from prune_core.metrics import count_flops  # noqa: E402
from prune_core.pruning import PruneContext, prune_model, rebuild  # noqa: E402
from prune_core.pruning.heads import attention_modules, head_count, head_width  # noqa: E402
from prune_core.pruning.surgery import zero_channels  # noqa: E402
from prune_core.pruning.graph import copy_model  # noqa: E402


def _tiny_convnext():
    cfg = [convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, None, 1)]
    return convnext.ConvNeXt(cfg, num_classes=10)


def _tiny_regnet():
    params = regnet.BlockParams(depths=[1, 1], widths=[16, 32], group_widths=[8, 8], bottleneck_multipliers=[1.0, 1.0],
                                strides=[2, 2], se_ratio=0.25)
    return regnet.RegNet(params, num_classes=10)


def _tiny_vgg():
    net = vgg.VGG(vgg.make_layers([8, "M", 16, "M"], batch_norm=True), num_classes=10)
    # torchvision's head reads 512 x 7 x 7 through two 4096-wide layers (120M weights): the same
    # structure, narrow
    net.classifier = nn.Sequential(nn.Linear(16 * 7 * 7, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 32),
                                   nn.ReLU(True), nn.Dropout(), nn.Linear(32, 10))
    return net


FAMILIES = {
    "resnet": (lambda: resnet.resnet18(num_classes=10), 32),
    "resnext": (lambda: resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], num_classes=10, groups=4, width_per_group=4),
                32),
    "vgg": (lambda: _tiny_vgg(), 32),
    "densenet": (lambda: densenet.DenseNet(8, (2, 2), 16, num_classes=10), 32),
    "mobilenet": (lambda: mobilenetv2.MobileNetV2(num_classes=10, width_mult=0.25), 32),
    "efficientnet": (lambda: efficientnet.efficientnet_b0(num_classes=10), 32),
    "convnext": (_tiny_convnext, 32),
    "regnet": (_tiny_regnet, 32),
    "shufflenet": (lambda: shufflenetv2.ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128], num_classes=10), 32),
    "squeezenet": (lambda: squeezenet.SqueezeNet("1_1", num_classes=10), 32),
    "googlenet": (lambda: torchvision.models.googlenet(num_classes=10, aux_logits=False, init_weights=True), 32),
    "vit": (lambda: VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64,
                                      mlp_dim=128, num_classes=10), 32),
    # two stages, embedding 24, windows of 4: v1 and v2 (post-norm blocks, continuous position bias)
    "swin": (lambda: swin_transformer.SwinTransformer([4, 4], 24, [2, 2], [2, 4], [4, 4], num_classes=10), 32),
    "swin_v2": (lambda: swin_transformer.SwinTransformer([4, 4], 24, [2, 2], [2, 4], [4, 4], num_classes=10,
                                                         block=swin_transformer.SwinTransformerBlockV2,
                                                         downsample_layer=swin_transformer.PatchMergingV2), 32),
    "maxvit": (lambda: MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16, 32],
                              block_layers=[1, 1], head_dim=4, stochastic_depth_prob=0.0, num_classes=10), 32),
}


@torch.no_grad()
def _draw_constants(model: nn.Module) -> None:
    """Zero heads, ConvNeXt's 1e-6 layer scale, zero biases: random, so the check sees every path."""
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        if p.numel() > 1 and float(p.abs().max()) < 1e-3 and bool((p == p.reshape(-1)[0]).all()):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


@lru_cache(maxsize=None)  # the heads and grouped-conv tests read the prune the family test made
def _pruned(family: str, scope: str):
    make, px = FAMILIES[family]
    torch.manual_seed(0)
    model = make().eval()
    _draw_constants(model)
    x = torch.randn(2, 3, px, px)
    cfg = ExperimentConfig.from_dict({"prune.method": "channel", "prune.ratio": 0.3, "prune.criterion": "l1",
                                      "prune.scope": scope})
    plan = prune_model(model, PruneContext(cfg, example_input=x))
    return model, x, plan, rebuild(model, plan, x)


CASES = [(f, s) for f in sorted(FAMILIES) for s in ("local", "global")]


@pytest.mark.parametrize("family, scope", CASES)
def test_family_prunes_and_rebuilds_like_masked(family, scope):
    model, x, plan, result = _pruned(family, scope)
    assert plan.channels, "nothing was planned"
    dense, small = count_flops(model, x.shape[1:]).total, count_flops(result.model, x.shape[1:]).total
    assert small < 0.95 * dense
    masked = zero_channels(copy_model(model), plan.channels, x).eval()
    with torch.no_grad():
        want, got = masked(x), result.model.eval()(x)
    assert got.shape == (2, 10)
    assert (want - got).abs().max() <= 1e-4 * max(1.0, float(want.abs().max()))
    # the masked model differs from the dense one: the check compared something that was removed
    with torch.no_grad():
        assert (model(x) - want).abs().max() > 1e-6


@pytest.mark.parametrize("family", ["vit", "swin", "swin_v2", "maxvit"])
def test_transformer_loses_whole_heads_with_counts_updated(family):
    model, x, plan, result = _pruned(family, "local")
    before, after = attention_modules(model), attention_modules(result.model)
    assert set(before) == set(after) and after
    for name, m in after.items():
        n, d = head_count(m), head_width(m)
        assert d == head_width(before[name])  # whole heads go, the head dimension stays
        assert n == head_count(before[name]) - len(plan.channels.get(name, ()))
        qkv = m.in_proj_weight if isinstance(m, nn.MultiheadAttention) else (m.qkv if hasattr(m, "qkv") else m.to_qkv).weight
        out = m.out_proj if isinstance(m, nn.MultiheadAttention) else getattr(m, "proj", None) or m.merge
        assert qkv.shape[0] == 3 * n * d and out.weight.shape[1] == n * d
    assert any(head_count(m) < head_count(before[k]) for k, m in after.items())
    result.model.train()(x).sum().backward()  # the rebuilt model trains


def test_grouped_conv_keeps_groups_uniform():
    _, _, _, result = _pruned("resnext", "global")
    for m in result.model.modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0
    assert any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.in_channels < 4 * 4 * 1
               for m in result.model.modules())


def test_vit_flops_count_its_projections_and_attention_products():
    """A hand count of a tiny ViT: conv stem, per layer q/k/v and output projections, attention's two
    products (q·kᵀ and attention·v, inside scaled_dot_product_attention) and the MLP, and the
    head; the fused fast path would leave the projections out (contract 6)."""
    model = FAMILIES["vit"][0]().eval()
    tokens, width, mlp, layers = 17, 64, 128, 2
    stem = 2 * 16 * 64 * 3 * 8 * 8
    per_layer = 2 * tokens * (3 * width * width + width * width + 2 * width * mlp) + 2 * 2 * tokens * tokens * width
    report = count_flops(model, (3, 32, 32))
    assert report.total == stem + layers * per_layer + 2 * width * 10
    assert sum(report.per_layer.values()) < report.total


def tiny_vit(num_classes, in_channels, image_size, width):
    """FAMILIES' ViT as a ``model.name`` builder (``<file.py>:tiny_vit``)."""
    return FAMILIES["vit"][0]()


def tiny_maxvit(num_classes, in_channels, image_size, width):
    return FAMILIES["maxvit"][0]()


def tiny_swin_v2(num_classes, in_channels, image_size, width):
    return FAMILIES["swin_v2"][0]()


NAMED = {"vit": f"{__file__}:tiny_vit", "swin_v2": f"{__file__}:tiny_swin_v2", "maxvit": f"{__file__}:tiny_maxvit"}


@pytest.mark.parametrize("family", sorted(NAMED))
def test_head_pruned_transformer_saves_loads_and_rebuilds_from_recorded_widths(family, tmp_path):
    """The head counts travel with a pruned model: ``save_pruned``/``load_pruned`` give back the same
    logits, and the recorded widths (``layer_channels``, an attention layer's entry = heads x head
    dimension) rebuild its architecture for the quiet latency pass (``build_architecture``)."""
    from prune_core.metrics import layer_channels
    from prune_core.models import build_model
    from prune_core.pruning import build_architecture, load_pruned, save_pruned

    model, x, plan, result = _pruned(family, "local")
    small = result.model.eval()
    widths = layer_channels(small)
    attention = attention_modules(small)
    assert all(widths[n] == head_count(m) * head_width(m) for n, m in attention.items())
    assert widths != layer_channels(model)
    save_pruned(small, tmp_path / "pruned.pt")
    again = load_pruned(tmp_path / "pruned.pt", build_model(NAMED[family], 10, 3, 32)).eval()
    assert {n: head_count(m) for n, m in attention_modules(again).items()} == {n: head_count(m) for n, m in attention.items()}
    with torch.no_grad():
        assert torch.allclose(again(x), small(x), atol=1e-5)
    net = build_architecture(NAMED[family], 10, (3, 32, 32), 1.0, widths)
    assert layer_channels(net) == widths
    assert count_flops(net, (3, 32, 32)).total == count_flops(small, (3, 32, 32)).total
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in small.parameters())


def test_recorded_attention_width_that_is_not_whole_heads_is_refused_in_one_line():
    from prune_core.metrics import layer_channels
    from prune_core.models import build_model
    from prune_core.pruning import ArchitectureMismatch, build_architecture

    widths = layer_channels(build_model(NAMED["vit"], 10, 3, 32))
    layer = next(iter(attention_modules(build_model(NAMED["vit"], 10, 3, 32))))
    with pytest.raises(ArchitectureMismatch, match=rf"attention layer {layer} width 40; expected a multiple of its "
                                                   r"head dimension 16 \(whole heads\)$"):
        build_architecture(NAMED["vit"], 10, (3, 32, 32), 1.0, dict(widths, **{layer: 40}))


@pytest.mark.parametrize("family", ["vit", "maxvit"])
def test_channel_counts_read_for_a_head_plan_are_what_rebuild_leaves(family):
    """The latency search's table reads a plan's layer widths from the graph: removed heads narrow
    the q, k, v projection (MaxViT's is a linear layer) and the output projection's inputs there too."""
    from prune_core.pruning import devicecost
    from prune_core.pruning.graph import build_graph

    model, x, plan, result = _pruned(family, "local")
    assert any(name in attention_modules(model) for name in plan.channels)
    read = build_graph(copy_model(model), x).pruned_channels(plan.channels)
    assert read == devicecost.channels(result.model) != devicecost.channels(model)
