"""``nm``: N:M semi-structured sparsity (Mishra et al. 2021, "Accelerating Sparse Deep Neural
Networks"; NVIDIA's Automatic SParsity, ASP).

Every group of M consecutive input weights of a layer keeps its N largest magnitudes (``prune.nm``,
"2:4" by default: the pattern NVIDIA's sparse tensor cores run). The reference is ASP
(NVIDIA/apex ``apex/contrib/sparsity``):

- ``sparse_masklib.create_mask``: a linear weight ``(K, C)`` is grouped along C; a 2-D conv's
  ``(K, C, R, S)`` is permuted to ``(R, S, K, C)`` and grouped along C, the input channels (a 1-D
  conv's ``(K, C, R)`` to ``(K, R, C)``); ``mn_1d_best`` keeps the pattern of N of M with the largest
  sum of magnitudes: the N largest. Ties go to the lower position here (ASP's go to whichever
  pattern its ``set(permutations(...))`` lists first).
- ``asp.ASP.init_model_for_pruning``: the layers it sparsifies are linear and conv layers whose
  weight has ``size(0) % 8 == 0`` and ``size(1) % 16 == 0`` (tensor-core shapes); the others (a
  first conv on 3 channels, a 10-class classifier, a depthwise conv) stay dense. Here also
  ``size(1) % M == 0``, and groups of one (ungrouped) convs only.
- ``asp.ASP.prune_trained_model``: masks computed once on the trained weights, then fine-tuning
  with the masks fixed: the pipeline's fine-tune of every mask method.

``prune.ratio`` must equal ``1 - N/M`` (the fraction of a sparsified layer's weights removed);
``target: flops`` is not offered (the pattern fixes the sparsity). Effective FLOPs count the masked
layers at their density. Deviation: ASP's channel permutation search
(``allow_permutation=True``, Pool et al. 2021), which reorders input channels so that the kept
weights carry more magnitude, is not done.

On a CPU the masked layers run dense: the measured latency is what it is (about the dense
model's). On CUDA, ``semi_structured`` gives the model with its sparsified linear layers stored as
``torch.sparse.to_sparse_semi_structured`` (2:4, fp16 or bf16), the kernels that can run faster
(``tests/test_gpu.py``).

>>> nm_mask(torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 1.0, -1.0, 0.0]]), 2, 4).tolist()
[[0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]]
"""

from __future__ import annotations

import copy
from typing import List, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from ._base import PruneContext, PruningPlan, register_method
from .masks import apply_masks, current_masks, weight_layers

TENSOR_CORE = (8, 16)  # ASP's shape check: size(0) % 8 and size(1) % 16
# to_sparse_semi_structured's fp16/bf16 weight shapes: multiples of (32, 64) (CUTLASS; cuSPARSELt (16, 16))
SEMI_STRUCTURED = (32, 64)


def parse_nm(text) -> Tuple[int, int]:
    """(N, M) of ``prune.nm`` ("2:4"); ``ConfigError`` in one line where it is not ``N:M`` with 0 < N < M."""
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or not 0 < int(parts[0]) < int(parts[1]):
        raise ConfigError(f"prune.nm={text!r}: expected 'N:M' with 0 < N < M, e.g. '2:4' (N of every M kept)")
    return int(parts[0]), int(parts[1])


def _rows(weight: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, ...]]:
    """ASP's layout: (rows, input channels) and the permuted shape to undo it."""
    w = weight.detach().float()
    if w.dim() == 2:
        return w, tuple(w.shape)
    if w.dim() == 3:
        p = w.permute(0, 2, 1).contiguous()
    else:
        p = w.permute(2, 3, 0, 1).contiguous()
    return p.reshape(-1, w.shape[1]), tuple(p.shape)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The N:M mask of ``weight`` (1 keeps): in every M consecutive input weights of a row, the N
    largest magnitudes."""
    rows, permuted = _rows(weight)
    groups = rows.abs().reshape(-1, m)
    keep = torch.argsort(groups, dim=1, descending=True, stable=True)[:, :n]
    mask = torch.zeros_like(groups).scatter_(1, keep, 1.0).reshape(permuted)
    if weight.dim() == 3:
        mask = mask.permute(0, 2, 1)
    elif weight.dim() == 4:
        mask = mask.permute(2, 3, 0, 1)
    return mask.contiguous().reshape(weight.shape).to(weight.dtype)


def eligible(module: nn.Module, m: int) -> bool:
    """Whether ASP would sparsify ``module`` (and its input channels group by ``m``)."""
    conv = isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups == 1
    if not (conv or isinstance(module, nn.Linear)):
        return False
    k, c = module.weight.shape[:2]
    return k % TENSOR_CORE[0] == 0 and c % TENSOR_CORE[1] == 0 and c % m == 0


def nm_layers(model: nn.Module, m: int) -> List[Tuple[str, nn.Module]]:
    return [(name, layer) for name, layer in weight_layers(model) if eligible(layer, m)]


def _check(p) -> None:
    n, m = parse_nm(p.nm)
    if abs(p.ratio - (1 - n / m)) > 1e-9:
        raise ConfigError(f"prune.ratio={p.ratio}: expected {1 - n / m:g} for method nm with prune.nm={p.nm!r} "
                          f"(N:M removes 1 - N/M of each sparsified layer's weights); set prune.nm to change it")


# magnitude, as ASP ranks; the pattern fixes the sparsity, so only the unit ratio is offered
@register_method("nm", unit="weight", criteria=("l1",), targets=("unit",), check=_check)
def nm(model: nn.Module, ctx: PruneContext) -> PruningPlan:
    """Mask every ASP-eligible layer of ``model`` in place to N:M."""
    p = ctx.cfg.prune
    n, m = parse_nm(p.nm)
    layers = nm_layers(model, m)
    if not layers:
        raise ConfigError(f"prune.method='nm': model {ctx.cfg.model.name} has no layer N:M can sparsify; expected "
                          f"conv or linear layers with output channels a multiple of {TENSOR_CORE[0]} and input "
                          f"channels a multiple of {TENSOR_CORE[1]} and of M={m} (NVIDIA ASP's rule)")
    masks = {name: nm_mask(layer.weight, n, m) for name, layer in layers}
    apply_masks(model, masks)
    total = sum(layer.weight.numel() for _, layer in weight_layers(model))
    share = sum(layer.weight.numel() for _, layer in layers) / total
    removed = sum(int((mk == 0).sum()) for mk in masks.values())
    stats = {"unit_ratio": removed / sum(mk.numel() for mk in masks.values()), "ranking": "local", "nm": p.nm,
             "nm_layers": len(layers), "metrics": {"nm_layers": len(layers), "nm_weight_share": share}}
    return PruningPlan("nm", ratio=p.ratio, masks=current_masks(model), stats=stats)


def semi_structured(model: nn.Module, dtype: torch.dtype = torch.float16) -> nn.Module:
    """A copy of ``model`` (masks made permanent, on CUDA, in ``dtype``) whose 2:4 linear layers of
    ``SEMI_STRUCTURED`` shapes hold their weights as ``torch.sparse.to_sparse_semi_structured``: what
    NVIDIA's sparse tensor cores run. Other layers stay dense. Needs a GPU of compute capability 8.0
    or more."""
    from torch.nn.utils import prune as torch_prune
    from torch.sparse import to_sparse_semi_structured

    out = copy.deepcopy(model)
    for _, layer in weight_layers(out):
        if torch_prune.is_pruned(layer):
            torch_prune.remove(layer, "weight")
    out = out.to("cuda", dtype).eval()
    for _, layer in nm_layers(out, 4):
        rows, cols = layer.weight.shape[:2]
        if (isinstance(layer, nn.Linear) and rows % SEMI_STRUCTURED[0] == 0 and cols % SEMI_STRUCTURED[1] == 0
                and bool((nm_mask(layer.weight, 2, 4) >= (layer.weight != 0)).all())):
            layer.weight = nn.Parameter(to_sparse_semi_structured(layer.weight.detach()), requires_grad=False)
    return out
