"""``channel``: structured filter pruning over Torch-Pruning's dependency groups.

Coupled channels (residual adds, depthwise convs, SE gates, concatenations) form one group and
are scored together by the criterion's Torch-Pruning importance. ``ratio`` is the fraction of the
prunable conv output channels removed, counted per layer as ``layer_channels`` counts them: in
``local`` scope every group loses that fraction; in ``global`` scope one ranking decides, each
group capped at ``max_layer_ratio``. The classifier's outputs are never pruned, and no group goes
below one channel (or ``round_to`` where it is that wide; ``auto``: the device's fastest multiple).
``target: flops`` and ``target: latency`` search the ratio that removes that fraction of FLOPs or of
estimated latency (``devicecost``).

>>> cfg = ExperimentConfig.from_dict({"prune.method": "channel", "prune.ratio": 0.5})  # doctest: +SKIP
>>> plan = prune_model(model, PruneContext(cfg, example_input=x[:4]))  # doctest: +SKIP
>>> small = rebuild(model, plan, x[:4]).model  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import WEIGHTED, count_flops, time_interleaved
from ..errors import ConfigError
from ._base import CRITERIA, PruneContext, PruningPlan, accepted_criteria, register_method
from .devicecost import LatencyTable, channel_multiple
from .graph import ChannelGroup, Graph, build_graph, copy_model
from .heads import attention_modules, head_scores, head_width, remove_heads
from .select import Ranking, comparable, solve_ratio

LATENCY_TOLERANCE = 0.025  # target: latency stops correcting within 2.5 % of the goal (relative)
LATENCY_CORRECTIONS = 2


@dataclass(frozen=True)
class Unit:
    """One layer of the ranking: a dependency group's channels (positions inside a conv group for
    a grouped conv) or an attention layer's heads."""

    root: str  # the plan's key: the group's root layer, or the attention module
    scores: torch.Tensor  # one comparable score per unit
    weight: float  # output channels of conv/linear layers one unit takes away
    expand: Callable[[List[int]], List[int]]  # chosen units -> the plan's indices (channels, heads)
    heads: bool = False  # heads are never rounded to round_to


def group_scores(model: nn.Module, groups: List[ChannelGroup], criterion, ctx: PruneContext
                 ) -> List[Optional[torch.Tensor]]:
    """One score per channel of every group (None where the criterion cannot score a group, e.g.
    BN scale on a group without batch norm). ``model`` must be the graph's model: gradient-based
    criteria run their calibration passes on it."""
    importance = criterion.channel_importance()
    if criterion.needs_features:  # activation path: the criterion's importance records feature maps first
        importance.observe(model, [g.group for g in groups], ctx.calib_batches)
    if not criterion.needs_grad:
        with torch.no_grad():
            return [_cpu(importance(g.group)) for g in groups]
    # Molchanov et al. 2019 average the per-batch (squared first-order) scores over mini-batches
    total: List[Optional[torch.Tensor]] = [None] * len(groups)
    batches = 0
    device = next(model.parameters()).device
    model.train()
    for x, y in ctx.calib_batches():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x.to(device)), y.to(device)).backward()
        with torch.no_grad():
            for i, g in enumerate(groups):
                s = _cpu(importance(g.group))
                if s is not None:
                    total[i] = s if total[i] is None else total[i] + s
        batches += 1
    if batches == 0:
        raise RuntimeError("taylor: calib_batches yielded no batch")
    model.zero_grad(set_to_none=True)
    return [None if t is None else t / batches for t in total]


def _cpu(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.detach().float().cpu()


def remove_channels(model: nn.Module, channels: Dict[str, List[int]], example_input: torch.Tensor,
                    graph: Optional[Graph] = None) -> nn.Module:
    """Physically remove the planned channels of ``model`` (in place) with Torch-Pruning, and the
    planned heads of its attention layers (a root naming one, ``heads.py``); ``graph``: one already
    built on ``model`` as it is now (tracing it again costs forwards)."""
    channels = {k: v for k, v in channels.items() if v}
    attention = attention_modules(model)
    coupled = {k: v for k, v in channels.items() if k not in attention}
    if coupled:
        graph = graph or build_graph(model, example_input)
        for root, idxs in coupled.items():
            # groups are disjoint, so indices planned on the unpruned model stay valid in any order
            graph.group_of(root, list(idxs)).prune()
    for root, idxs in channels.items():
        if root in attention:
            remove_heads(attention[root], list(idxs))
    return model


def _pruned(model: nn.Module, channels: Dict[str, List[int]], ctx: PruneContext) -> nn.Module:
    return remove_channels(copy_model(model), channels, ctx.example_input)


def _flops_removed(model: nn.Module, channels: Dict[str, List[int]], ctx: PruneContext, dense: float) -> float:
    return 1.0 - count_flops(_pruned(model, channels, ctx), ctx.input_shape).total / dense


def _solve_latency(model: nn.Module, graph: Graph, plan_at: Callable[[float], Dict[str, List[int]]],
                   ctx: PruneContext) -> Tuple[float, float, float]:
    """(unit ratio, the table's estimate of the latency kept, the latency kept as timed) for
    ``prune.target: latency``: the ratio whose table estimate keeps ``1 - prune.ratio`` of the dense
    latency, then timed against the dense network at the latency batch (medians, as the trial's
    latency is); while that misses by more than ``LATENCY_TOLERANCE`` the aim is corrected by the
    table's error, up to ``LATENCY_CORRECTIONS`` times, and the closest timed ratio is kept."""
    p, rt = ctx.cfg.prune, ctx.cfg.runtime
    table = LatencyTable(model, ctx.example_input, rt.latency_batch, rt.threads, ctx.cache)
    goal = aim = 1.0 - p.ratio
    best: Optional[Tuple[float, float, float]] = None
    for _ in range(1 + LATENCY_CORRECTIONS):
        ratio, removed = solve_ratio(1.0 - aim, lambda r: 1.0 - table.kept(graph.pruned_channels(plan_at(r))),
                                     what="latency")
        base, small = time_interleaved([model, _pruned(model, plan_at(ratio), ctx)], ctx.input_shape,
                                       rt.latency_batch, repeats=7, warmup=2, threads=rt.threads)
        timed = small.ms_batch / base.ms_batch
        if best is None or abs(timed - goal) < abs(best[2] - goal):
            best = (ratio, 1.0 - removed, timed)
        if abs(timed - goal) <= LATENCY_TOLERANCE * goal:
            break
        aim = min(1.0, max(0.01, (1.0 - removed) * goal / timed))  # the table over- or underrated by timed / estimate
    table.save()
    assert best is not None
    return best


def ranking_of(p, criterion, bn_l1: float) -> str:
    """How scores are compared: ``local`` (within each layer), ``global_lamp`` (LAMP scores,
    Lee et al. 2021), ``global_raw`` (raw scores: Network Slimming's one threshold on |gamma|, only
    meaningful when the base was trained with its sparsity penalty ``train.bn_l1``) or
    ``global_mean`` (each layer's scores divided by their mean). ``prune.global_scores: raw`` or
    ``mean`` chooses the last two for any criterion (raw: the Taylor reference's global ranking);
    ``auto`` is raw for a ``raw_global`` criterion on a base trained as its paper trains it, else mean.

    Raw filter norms grow with fan-in, so a raw global ranking empties the narrow early layers
    (resnet20 on mnist5k at 0.5: the 16-channel stage cut to 2 channels, 92.0% after fine-tuning
    against 95.9% dense); dividing by the layer's mean (Torch-Pruning's ``normalizer="mean"``) ranks
    channels by how they compare within their layer.
    """
    if p.scope == "local":
        return "local"
    if p.lamp:
        return "global_lamp"
    if p.global_scores != "auto":
        return f"global_{p.global_scores}"
    return "global_raw" if criterion.raw_global and bn_l1 > 0 else "global_mean"


def head_saliency(criterion, name: str) -> Tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """(per-weight saliency that ranks attention heads, what it is): the criterion's own where it scores
    single weights without a gradient (l1: |w|, l2: w², random), else w² (l2) for a criterion that
    cannot (bn_scale: attention has no batch norm; taylor: heads get no calibration gradient)."""
    if "weight" in criterion.units and not criterion.needs_grad:
        return (lambda w: criterion.weight_saliency(w, None)), name
    return (lambda w: w.pow(2)), "l2"


def stage_of(root: str, names) -> Optional[str]:
    """The longest of ``names`` that is ``root`` or a dotted prefix of it (``layer2`` of
    ``layer2.0.conv1``); None where none is."""
    hits = [n for n in names if root == n or root.startswith(n + ".")]
    return max(hits, key=len) if hits else None


def stage_ratios(roots: List[str], ratios: Dict[str, float], model: str) -> Optional[List[Optional[float]]]:
    """Each unit's own ratio under ``prune.stage_ratios`` (None: ``prune.ratio``); a name that no
    group lies in is a ``ConfigError`` that lists the model's stages."""
    if not ratios:
        return None
    owners = [stage_of(r, ratios) for r in roots]
    unused = sorted(set(ratios) - set(owners))
    if unused:
        stages = ", ".join(sorted({r.split(".")[0] for r in roots}))
        raise ConfigError(f"prune.stage_ratios.{unused[0]}: no dependency group of {model} lies in {unused[0]}; "
                          f"expected a stage ({stages}) or a group's root layer (prune-core --list-groups)")
    return [ratios.get(o) if o else None for o in owners]


def group_table(model: nn.Module, example_input: torch.Tensor, input_shape) -> List[Dict[str, object]]:
    """What ``prune-core --list-groups`` prints: per dependency group ``channel`` prunes, its root
    layer, stage (the root's first name), channels, conv/linear layers, and FLOPs share: of the
    model's FLOPs, the part in the layers whose outputs or inputs are its channels (a layer between
    two groups counts in both); per stage, the same over its groups' layers, each counted once."""
    per_layer = count_flops(model, input_shape).per_layer
    total = max(sum(per_layer.values()), 1e-12)
    graph = build_graph(copy_model(model), example_input)
    rows: List[Dict[str, object]] = []
    stages: Dict[str, set] = {}
    for g in graph.channel_groups():
        layers = {graph.names[it.dep.target.module] for it in g.group.items
                  if isinstance(it.dep.target.module, WEIGHTED) and it.dep.target.module in graph.names}
        stage = g.root.split(".")[0]
        stages.setdefault(stage, set()).update(layers)
        rows.append({"root": g.root, "stage": stage, "channels": g.size, "layers": len(layers),
                     "flops_share": sum(per_layer.get(n, 0.0) for n in layers) / total})
    for row in rows:
        row["stage_flops_share"] = sum(per_layer.get(n, 0.0) for n in stages[str(row["stage"])]) / total
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(rows, key=lambda r: order.get(str(r["root"]), len(order)))


def _check(p) -> None:
    if p.stage_ratios and (p.scope != "local" or p.target != "unit"):
        raise ConfigError(f"prune.stage_ratios={dict(p.stage_ratios)}: expected prune.scope local and prune.target "
                          f"unit (each stage's ratio is its own), not {p.scope} and {p.target}")


@register_method("channel", unit="channel", lamp=True, global_scores=True, targets=("unit", "flops", "latency"),
                 flags=("stage_ratios",), check=_check)
def channel(model: nn.Module, ctx: PruneContext) -> PruningPlan:
    """Filter pruning: choose whole channels per dependency group; ``rebuild`` removes them."""
    p = ctx.cfg.prune
    work = copy_model(model)  # calibration passes and tracing leave the caller's model as it was
    graph = build_graph(work, ctx.example_input)
    groups = graph.channel_groups()
    criterion = CRITERIA[p.criterion]()
    raw = group_scores(work, groups, criterion, ctx)
    ranked: List[Tuple[ChannelGroup, torch.Tensor]] = [(g, s) for g, s in zip(groups, raw) if s is not None]
    if groups and not ranked:  # e.g. bn_scale on a model without batch norm
        others = [c for c in accepted_criteria(p.method) if c != p.criterion]
        raise ConfigError(f"prune.criterion={p.criterion!r}: model {ctx.cfg.model.name} has no channel it can "
                          f"score; expected one of {', '.join(others)} for it")
    how = ranking_of(p, criterion, ctx.cfg.train.bn_l1)
    heads = attention_modules(work)
    saliency, heads_by = head_saliency(criterion, p.criterion)
    head_scores_ = [head_scores(m, saliency) for m in heads.values()]
    units: List[Unit] = [Unit(g.root, comparable(g.unit_scores(s), how), g.conv_outputs * g.period, g.channels)
                         for g, s in ranked]
    # a head counts as the 3 x head_dim outputs of the q, k, v projections it takes away
    units += [Unit(name, comparable(s, how), 3 * head_width(m), sorted, True)
              for (name, m), s in zip(heads.items(), head_scores_)]

    stats: Dict[str, object] = {"groups": len(groups), "groups_ranked": len(ranked), "ranking": how,
                                "attention_layers": len(heads), **({"heads_ranked_by": heads_by} if heads else {})}
    extra: Dict[str, float] = {}
    rt = ctx.cfg.runtime
    round_to = p.round_to
    if round_to == "auto":
        round_to = channel_multiple(ctx.example_input.device, rt.latency_batch, rt.threads, ctx.cache)["multiple"]
        extra["prune_round_to"] = round_to
    ranking = Ranking([u.scores for u in units], p.scope, p.max_layer_ratio,
                      [1 if u.heads else round_to for u in units], [u.weight for u in units],
                      stage_ratios([u.root for u in units], dict(p.stage_ratios), ctx.cfg.model.name))

    def plan_at(ratio: float) -> Dict[str, List[int]]:
        chosen = ranking.select(ratio)
        return {u.root: u.expand(idx.tolist()) for u, idx in zip(units, chosen) if len(idx)}

    ratio = p.ratio
    if p.target == "flops":
        dense = count_flops(model, ctx.input_shape).total
        ratio, removed = solve_ratio(p.ratio, lambda r: _flops_removed(model, plan_at(r), ctx, dense))
        stats["flops_removed"] = removed
    elif p.target == "latency":
        ratio, extra["latency_kept_estimate"], extra["latency_kept_measured"] = _solve_latency(model, graph, plan_at,
                                                                                              ctx)
    if extra:
        stats["metrics"] = extra
    channels = plan_at(ratio)
    total = sum(len(u.scores) * u.weight for u in units)
    gone = sum(len(idx) * u.weight for u, idx in zip(units, ranking.select(ratio)))
    stats["unit_ratio"] = gone / max(total, 1)  # fraction of prunable conv output channels removed
    return PruningPlan("channel", ratio=ratio, channels=channels, stats=stats)
