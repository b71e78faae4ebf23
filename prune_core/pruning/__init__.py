"""Pruning methods, criteria, rebuild and the pruned-model file format.

Every method has one signature, ``method(model, ctx) -> PruningPlan``, and one record in
``METHODS`` (``MethodSpec``: its unit, the base it needs, what trains after it, ...), filled by
``register_method`` in the method's own file; criteria are entries of ``CRITERIA``, filled by
``register_criterion``, and declare the units they score. ``ratio`` is always the fraction of the
method's unit removed:

========== =====================================================================================
channel    prunable conv output channels (dependency groups removed whole; classifier kept)
kernel     k x k conv kernels (single input -> output connections)
intra_kernel  conv kernels removed whole (connectivity), on top of every 3x3 kernel keeping one
           pattern of a library chosen from the weights (PatDNN); ``ratio: 0`` = patterns only
imp        conv and linear weights, reached in levels of ``imp_fraction`` with rewinding
snip       conv and linear weights, chosen at initialisation by connection sensitivity
random_init  conv and linear weights, chosen at random at initialisation, the same fraction in
           every layer (the control of Frankle et al. 2021)
nm         conv and linear weights in N:M groups along input channels (NVIDIA ASP's 2:4), where
           ASP's shape rule allows; ``ratio`` must be 1 - N/M
none       nothing
========== =====================================================================================

With ``prune.target == "flops"`` the ratio is instead the fraction of FLOPs (effective FLOPs for
mask methods) removed, and the method searches the unit ratio that removes it; with ``"latency"``
(channel only) the fraction of latency at ``runtime.latency_batch`` on the device, estimated from a
per-layer latency table (``devicecost.LatencyTable``). ``prune.round_to: auto`` keeps channel
counts multiples of what runs fastest on the device (``devicecost.channel_multiple``).

>>> from prune_core.config import ExperimentConfig
>>> from prune_core.models import build_model
>>> cfg = ExperimentConfig.from_dict({"model.name": "resnet20", "prune.ratio": 0.5})
>>> model, x = build_model("resnet20", 10, 3, 32), torch.randn(2, 3, 32, 32)
>>> plan = prune_model(model, PruneContext(cfg, example_input=x))
>>> small = rebuild(model, plan, x)
>>> small.max_abs_diff < 1e-4
True
"""

from __future__ import annotations

import dataclasses

from . import _tp  # noqa: F401  (first: Torch-Pruning without timm)

import torch
from torch import nn

from ..sections import PruneConfig, require, require_choice
from ..errors import RebuildMismatch
from ._base import (CRITERIA, METHODS, UNITS, Method, MethodSpec, PruneContext, PruningPlan, RebuildResult,
                    accepted_criteria, post_prune_training, register_method)
from .criteria import Criterion, FilterImportance, register_criterion
from . import baseline, channel, imp, kernel, nm, snip  # noqa: F401  (fill METHODS)
from . import fpgm, group_norm, hrank  # noqa: F401  (fill CRITERIA after the built-in criteria of criteria.py)
from .surgery import rebuild
from .architecture import ArchitectureMismatch, architecture_key, build_architecture, control_network
from .serialize import load_pruned, save_pruned

__all__ = ["METHODS", "CRITERIA", "UNITS", "MethodSpec", "Criterion", "FilterImportance", "register_method",
           "register_criterion", "accepted_criteria", "post_prune_training", "resolve_prune", "Method",
           "PruneContext", "PruningPlan", "RebuildResult", "RebuildMismatch", "prune_model", "rebuild", "save_pruned",
           "load_pruned", "build_architecture", "architecture_key", "ArchitectureMismatch", "control_network"]


def resolve_prune(cfg: PruneConfig) -> PruneConfig:
    """``cfg`` with its method's defaults filled in (criterion "" -> the method's default, l2 with
    LAMP where the method accepts it; calib_batches 0 -> the record's ``calib_batches``), after
    checking the method, the criterion and the rest against the method's record
    (``METHODS[cfg.method]``). Returns a new PruneConfig; ``cfg`` is not changed."""
    require_choice("prune.method", cfg.method, METHODS)
    spec = METHODS[cfg.method]
    allowed = accepted_criteria(cfg.method)
    defaults = {}
    if not cfg.criterion:  # filled once, so hashes are stable; LAMP is defined on squared magnitudes
        defaults["criterion"] = "l2" if cfg.lamp and "l2" in allowed else allowed[0] if allowed else ""
    if cfg.calib_batches == 0:
        defaults["calib_batches"] = spec.calib_batches
    cfg = dataclasses.replace(cfg, **defaults) if defaults else cfg
    require(bool(allowed), "prune.method", cfg.method, f"a method with a criterion for its unit ({spec.unit}); "
            f"registered criteria: {', '.join(CRITERIA)}")
    require_choice("prune.criterion", cfg.criterion, CRITERIA)
    require(cfg.criterion in allowed, "prune.criterion", cfg.criterion,
            f"one of {', '.join(allowed)} for method {cfg.method}")
    meeting = [m for m, s in METHODS.items() if cfg.target in s.targets]
    require(cfg.target in spec.targets, "prune.target", cfg.target,
            f"{' or '.join(spec.targets)} for method {cfg.method} ({cfg.target}: "
            f"{', '.join(meeting) or 'no method'})")
    lamp_methods = [m for m, s in METHODS.items() if s.lamp]
    require(not cfg.lamp or spec.lamp, "prune.lamp", cfg.lamp,
            f"false for method {cfg.method} (LAMP ranks the units of {', '.join(lamp_methods)})")
    require(not cfg.lamp or cfg.criterion == "l2", "prune.criterion", cfg.criterion,
            "l2 with prune.lamp (LAMP is defined on squared weight magnitudes, Lee et al. 2021)")
    rankers = [m for m, s in METHODS.items() if s.global_scores]
    chosen = cfg.global_scores in ("raw", "mean")  # another value is the section's to refuse
    require(not chosen or (spec.global_scores and cfg.scope == "global" and not cfg.lamp),
            "prune.global_scores", cfg.global_scores,
            f"auto unless prune.scope is global without prune.lamp, for {', '.join(rankers)}")
    for flag in sorted({f for s in METHODS.values() for f in s.flags} - set(spec.flags)):
        owners = [m for m, s in METHODS.items() if flag in s.flags]
        value = getattr(cfg, flag)
        require(not value, f"prune.{flag}", dict(value) if isinstance(value, tuple) else value,
                f"{'false' if isinstance(value, bool) else 'none'} unless prune.method is {' or '.join(owners)}")
    spec.check(cfg)
    return cfg


def prune_model(model: nn.Module, ctx: PruneContext) -> PruningPlan:
    """Run the method ``METHODS[ctx.cfg.prune.method]`` on ``model`` and return its plan.

    Channel pruning leaves ``model`` untouched (``rebuild`` removes the channels); mask methods
    attach their masks to ``model`` in place. Random scores are drawn from ``runtime.seed``.
    """
    cfg = ctx.cfg
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.runtime.seed)
        plan = METHODS[cfg.prune.method].prune(model, ctx)
    plan.stats.setdefault("criterion", cfg.prune.criterion)
    return plan
