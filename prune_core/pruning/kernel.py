"""``kernel`` and ``intra_kernel``: masks at the granularity of a conv kernel and inside it.

``kernel`` (Mao et al. 2017, "Exploring the Regularity of Sparse Structure in CNNs": 2-D,
kernel-level sparsity) removes whole k x k kernels ``W[o, i]``, single input -> output
connections, ranked by the norm of their weights. ``ratio`` = fraction of kernels removed (per
layer in ``local`` scope; over all conv layers in ``global`` scope, each layer capped at
``max_layer_ratio``).

``intra_kernel`` is pattern-based pruning as PatDNN (Niu et al. 2020, "PatDNN: Achieving Real-Time
DNN Execution on Mobile Devices with Pattern-based Weight Pruning", sec. 4: pattern set design,
then kernel pattern and connectivity pruning) and PCONV (Ma et al. 2020, "PCONV: The Missing but
Desirable Sparsity in DNN Weight Pruning for Real-time Execution on Mobile Devices") define it:

- **kernel pattern pruning**: EVERY 3x3 kernel keeps exactly one pattern of a small library,
  ``pattern_keep`` (4) of its 9 weights, always including the centre; a kernel takes the library
  pattern that keeps the most of its saliency (``l2``: squared weights, ``l1``: absolute weights;
  ties go to the more frequent pattern). One library shared by the whole network is what lets a
  compiler generate one code path per pattern.
- **the library** (``prune.pattern: library``, the default) is chosen from the trained weights:
  each 3x3 kernel's own top pattern is the centre plus its ``pattern_keep - 1`` largest other
  weights; the ``prune.pattern_count`` (8) patterns that occur most often over the network form
  the library. Ties in a count go to the pattern whose kept positions, read row-major, come first;
  ties between equal weights inside a kernel go to the lower position; all-zero kernels (dead or
  already pruned) have no top pattern and are not counted. Fewer distinct patterns than
  ``pattern_count`` give a smaller library.
- **connectivity pruning** on top: ``ratio`` = fraction of the kernels removed whole, ranked by
  the norm of the original (unpatterned) kernel exactly as ``kernel`` ranks them (local per layer,
  or global with ``max_layer_ratio``; LAMP and ``target: flops`` too). PatDNN's extended ADMM
  keeps one auxiliary variable per constraint (pattern, connectivity), each a projection of the
  same weights, and the reference below ranks kernels by L2 norm before applying patterns in its
  final hard pruning: the ranking sees the dense kernels. A 3x3 layer's weight sparsity is
  ``ratio + (1 - ratio) * 5/9`` for ``pattern_keep`` 4; ``ratio: 0`` applies the patterns alone.
  With ``target: flops`` the search runs over the connectivity ratio, the patterns' share counted
  from ratio 0 (a target below what the patterns alone remove warns and stays at ratio 0).

Reference followed: no code from the PatDNN/PCONV authors is public (their compiler is not
released). The public re-implementation github.com/7bvcxz/PatDNN, ``utils/pattern_setter.py``
(``top_4``, ``pattern_setter``, ``top_4_pat``, ``top_k_kernel``) and ``utils/admm.py``
(``prune_weight``: connectivity by kernel L2 norm on the dense weights, then the best pattern by
kept L2 norm), does what is described above with ``pattern_keep`` 4, L2, 8 patterns; it breaks
count ties by reversed order of first occurrence, which depends on layer order, and counts an
all-zero kernel as a nine-weight "pattern"; both are replaced by the rules above.

Deviation, not an option: no ADMM phase. The reference (``main.py``) trains with ADMM (auxiliary
variables projected onto the pattern and connectivity constraints, a penalty pulling the weights
toward them) before its hard pruning, then retrains with the masks. Here the trained weights are
hard-pruned at once and fine-tuned with the masks, so the weights never move toward the patterns
before they are cut: expect lower accuracy right after pruning than the reference's.

Options (``prune.pattern``), each a named deviation from PatDNN's library:

- ``fixed``: a fixed library instead of the frequency-chosen one; for ``pattern_keep`` 4 the 8
  four-entry patterns that keep the centre and three weights forming a connected shape with it
  (the four 2x2 squares around the centre and the four T shapes), for other sizes every pattern
  of ``pattern_keep`` weights that contains the centre.
- ``magnitude``: each kernel keeps its own ``pattern_keep`` largest weights (any k x k kernel with
  k > 1, keeping the same fraction ``pattern_keep / 9`` of larger kernels): irregular "patterns",
  no shared library; kept for non-3x3 kernels.

Kernels that take no pattern (``library``/``fixed``: every kernel that is not 3x3, as PatDNN
applies patterns to 3x3 kernels only; ``magnitude``: 1x1) get connectivity pruning only, so
``ratio`` is the fraction of kernels removed over the same conv layers ``kernel`` prunes.

>>> PATTERNS[4].shape
torch.Size([8, 9])
"""

from __future__ import annotations

import itertools
import math
from typing import Dict, List, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ._base import CRITERIA, PruneContext, PruningPlan, register_method
from .masks import EffectiveFlops, apply_masks, conv_layers, ranked_masks

CENTRE = 4  # flat index of the centre of a 3x3 kernel (row-major)


def _pattern(cells) -> List[int]:
    row = [0] * 9
    for c in cells:
        row[c] = 1
    return row


def _fixed_library(keep: int) -> torch.Tensor:
    """The fixed 3x3 pattern library (``prune.pattern: fixed``) for ``keep`` kept weights, one row
    of 9 zeros/ones each.

    keep = 4: the 8 four-entry patterns that keep the centre and three weights forming a connected
    shape with it: the four 2x2 squares around the centre and the four T shapes (centre plus three
    of its four edge neighbours). Flat positions:
        0 1 2
        3 4 5
        6 7 8
    Other sizes: every pattern of ``keep`` weights that contains the centre (C(8, keep - 1)
    patterns), the centre being the weight Gaussian and Laplacian-of-Gaussian filters, which
    PatDNN's patterns imitate, never drop.
    """
    if keep == 4:
        squares = [(0, 1, 3, 4), (1, 2, 4, 5), (3, 4, 6, 7), (4, 5, 7, 8)]
        tees = [(1, 3, 4, 5), (1, 4, 5, 7), (3, 4, 5, 7), (1, 3, 4, 7)]
        return torch.tensor([_pattern(p) for p in squares + tees], dtype=torch.float32)
    others = [c for c in range(9) if c != CENTRE]
    rows = [_pattern((CENTRE,) + combo) for combo in itertools.combinations(others, keep - 1)]
    return torch.tensor(rows, dtype=torch.float32)


PATTERNS: Dict[int, torch.Tensor] = {k: _fixed_library(k) for k in range(1, 9)}

# a 3x3 pattern as a 9-bit code, position 0 the most significant bit: among patterns of one size
# a larger code is a row-major earlier set of kept positions
_BITS = 2 ** torch.arange(8, -1, -1)


def top_patterns(saliency: torch.Tensor, keep: int) -> torch.Tensor:
    """(N, 9) 0/1 rows: each 3x3 kernel's own top pattern, the centre plus its ``keep - 1`` most
    salient other weights (ties to the lower position). ``saliency``: (N, 9), row-major kernels."""
    others = saliency.clone()
    others[:, CENTRE] = -1.0  # below every saliency: the centre is added separately
    order = torch.sort(others, dim=1, descending=True, stable=True).indices[:, : keep - 1]
    rows = torch.zeros_like(saliency).scatter_(1, order, 1.0)
    rows[:, CENTRE] = 1.0
    return rows


def pattern_library(saliency: Sequence[torch.Tensor], keep: int, count: int) -> torch.Tensor:
    """PatDNN's library: the ``count`` most frequent top patterns (``top_patterns``) over every
    (N_i, 9) saliency tensor of ``saliency`` (all 3x3 kernels of a network), most frequent first,
    equal counts in row-major order of their kept positions; all-zero kernels are not counted.
    Returns (<= count, 9) 0/1 rows."""
    sal = torch.cat([s.reshape(-1, 9).float() for s in saliency])
    sal = sal[sal.amax(1) > 0]
    if not len(sal):
        raise ValueError("pattern library: every 3x3 kernel is zero, no pattern to count")
    codes = (top_patterns(sal, keep).long() * _BITS).sum(1)
    counts = torch.bincount(codes, minlength=512)
    seen = counts.nonzero().flatten()
    key = counts[seen] * 512 + seen  # by count, then by code (row-major earlier first)
    chosen = seen[torch.argsort(key, descending=True)][:count]
    return ((chosen[:, None] & _BITS) > 0).float()


def best_patterns(saliency: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
    """(N, 9) 0/1 rows: for each kernel the ``library`` row that keeps the most saliency (ties
    to the earlier row)."""
    return library[(saliency @ library.T).argmax(1)]


def kernel_saliency(weight: torch.Tensor, criterion) -> torch.Tensor:
    """(out, in/groups, k*k) per-weight saliency of a conv weight, on the CPU."""
    w = weight.detach().float().cpu()
    return criterion.weight_saliency(w, None).reshape(w.shape[0], w.shape[1], -1)


@register_method("kernel", unit="kernel", lamp=True, global_scores=True)
def kernel(model: nn.Module, ctx: PruneContext) -> PruningPlan:
    """Remove whole kernels by norm; masks applied to ``model`` in place."""
    p = ctx.cfg.prune
    criterion = CRITERIA[p.criterion]()
    layers = conv_layers(model, ctx)
    names = [n for n, _ in layers]
    # the mean saliency per weight: the norm's ranking inside a layer, and comparable across
    # layers whose kernels differ in size (1x1 against 3x3) for the global ranking
    scores = [kernel_saliency(m.weight, criterion).mean(2).flatten() for _, m in layers]
    shapes = [m.weight.shape for _, m in layers]

    def to_mask(i: int, removed: torch.Tensor) -> torch.Tensor:
        out, cin = shapes[i][:2]
        keep = torch.ones(out * cin)
        keep[removed] = 0
        return keep.reshape(out, cin, *[1] * (len(shapes[i]) - 2)).expand(shapes[i]).contiguous()

    share = [1.0 / max(s.numel(), 1) for s in scores]
    masks, ratio, stats = ranked_masks(ctx, names, scores, to_mask, EffectiveFlops(model, ctx), share)
    return PruningPlan("kernel", ratio=ratio, masks=apply_masks(model, masks), stats=stats)


@register_method("intra_kernel", unit="kernel", lamp=True, global_scores=True)
def intra_kernel(model: nn.Module, ctx: PruneContext) -> PruningPlan:
    """Kernel pattern pruning plus connectivity pruning; masks applied to ``model`` in place."""
    p = ctx.cfg.prune
    criterion = CRITERIA[p.criterion]()
    layers = conv_layers(model, ctx)
    if p.pattern == "magnitude":
        patterned = [math.prod(m.kernel_size) > 1 for _, m in layers]
    else:  # PatDNN's patterns are 3x3; other kernels get connectivity pruning only
        patterned = [tuple(m.kernel_size) == (3, 3) for _, m in layers]
    if not any(patterned):
        wanted = "k x k (k > 1)" if p.pattern == "magnitude" else "3x3"
        other = "" if p.pattern == "magnitude" else "magnitude (any k x k kernel, k > 1) or "
        raise ConfigError(f"prune.pattern={p.pattern!r}: model {ctx.cfg.model.name} has no {wanted} conv kernel; "
                          f"expected {other}another method for it")
    names = [n for n, _ in layers]
    sal = [kernel_saliency(m.weight, criterion) for _, m in layers]  # (out, in, area) each
    flat = [s.reshape(-1, s.shape[2]) for s in sal]
    library = None
    if p.pattern == "library":
        library = pattern_library([f for f, t in zip(flat, patterned) if t], p.pattern_keep, p.pattern_count)
    elif p.pattern == "fixed":
        library = PATTERNS[p.pattern_keep]
    kept = []  # per layer, (kernels, area) 0/1: what each kernel keeps unless connectivity removes it
    for f, takes in zip(flat, patterned):
        if not takes:
            kept.append(torch.ones_like(f))
        elif library is not None:
            kept.append(best_patterns(f, library))
        else:
            k = min(f.shape[1], max(1, int(math.floor(p.pattern_keep / 9 * f.shape[1] + 0.5))))
            kept.append(torch.zeros_like(f).scatter_(1, f.topk(k, dim=1).indices, 1.0))

    # connectivity: the kernel method's ranking, on the dense kernels (PatDNN's order)
    scores = [s.mean(2).flatten() for s in sal]
    kept_share = [float(k[0].mean()) for k in kept]  # every kernel of a layer keeps the same count
    share = [ks / k.shape[0] for ks, k in zip(kept_share, kept)]
    patterns_only = [1.0 - ks for ks in kept_share]  # removed at ratio 0

    def to_mask(i: int, removed: torch.Tensor) -> torch.Tensor:
        mask = kept[i].clone()
        mask[removed] = 0
        return mask.reshape(layers[i][1].weight.shape)

    masks, ratio, stats = ranked_masks(ctx, names, scores, to_mask, EffectiveFlops(model, ctx), share,
                                       base_removed=patterns_only)
    if library is not None:
        stats["patterns"] = [r.nonzero().flatten().tolist() for r in library]  # kept flat positions
    return PruningPlan("intra_kernel", ratio=ratio, masks=apply_masks(model, masks), stats=stats)
