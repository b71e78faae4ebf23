"""Attention heads: what ``channel`` removes from an attention layer.

``channel`` removes whole heads, never a dimension inside a head: a head's query, key and value
rows and its columns of the output projection go together, the head dimension stays, and so does
the scale ``head_dim ** -0.5`` of its dot products. The masked model (those rows and columns
zeroed) then computes what the smaller one does: a zeroed head attends uniformly to values that are
all zero, and its output projection reads none of it. Removing dimensions inside heads would change
the scale (Michel et al. 2019, "Are Sixteen Heads Really Better than One?", prune whole heads; so
does Torch-Pruning's ``MetaPruner(prune_num_heads=True)``). The embedding width (the residual
stream) is not pruned: every block's LayerNorm normalises over it (``graph.Graph.mixing``).

Each attention type has one record, ``HeadKind``, looked up by the module's type: torch's
``nn.MultiheadAttention`` (torchvision's ViT), torchvision's Swin (v1, v2) window attention and
MaxViT's relative-position attention, and timm's ``Attention`` (whose forward already reads its
``attn_dim``). A head-pruned torch or torchvision module becomes a subclass whose forward reads
``head_dim`` instead of deriving it from the embedding width.

>>> kinds = attention_modules(model)  # doctest: +SKIP
>>> remove_heads(model, "encoder.layers.encoder_layer_0.self_attention", [1])  # doctest: +SKIP
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

Slot = Tuple[Callable[[nn.Module], nn.Module], str, int]  # (owner of the tensor, its attribute, head axis)


@dataclass(frozen=True)
class HeadKind:
    """Where one attention type keeps its heads (q, k, v rows laid out as ``[3, heads, head_dim]``)."""

    count: str  # attribute holding the number of heads
    qkv: Callable[[nn.Module], Tuple[nn.Module, str, str]]  # (owner, weight attribute, bias attribute)
    out: Callable[[nn.Module], nn.Linear]  # output projection: reads ``heads * head_dim`` columns
    head_dim: Callable[[nn.Module], int]
    per_head: Tuple[Slot, ...] = ()  # other tensors with one slice per head (position bias tables)
    width: str = ""  # attribute holding heads x head_dim, where the module keeps one (timm's attn_dim)
    accepts: Callable[[nn.Module], bool] = lambda m: True  # this instance's heads can go (no norm over them)


class _HeadPrunedMHA(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose heads span ``num_heads * head_dim`` < ``embed_dim``."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if need_weights or key_padding_mask is not None or attn_mask is not None or is_causal:
            raise NotImplementedError("head-pruned MultiheadAttention: only need_weights=False without masks")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        h, d = self.num_heads, self.head_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        q, k, v = (F.linear(t, w[i * h * d:(i + 1) * h * d], None if b is None else b[i * h * d:(i + 1) * h * d])
                   .unflatten(-1, (h, d)).transpose(1, 2) for i, t in enumerate((query, key, value)))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                             scale=d ** -0.5)
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _window_attention(m: nn.Module, x: torch.Tensor, logit_scale: Optional[torch.Tensor]) -> torch.Tensor:
    """torchvision's ``swin_transformer.shifted_window_attention`` (0.29) with the head dimension
    read from ``m.head_dim`` instead of ``C // num_heads``; otherwise line for line."""
    ws, heads, d = m.window_size, m.num_heads, m.head_dim
    B, H, W, C = x.shape
    pad_r, pad_b = (ws[1] - W % ws[1]) % ws[1], (ws[0] - H % ws[0]) % ws[0]
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, pad_H, pad_W, _ = x.shape
    shift = list(m.shift_size)
    shift[0] = 0 if ws[0] >= pad_H else shift[0]
    shift[1] = 0 if ws[1] >= pad_W else shift[1]
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    n_win = (pad_H // ws[0]) * (pad_W // ws[1])
    x = x.view(B, pad_H // ws[0], ws[0], pad_W // ws[1], ws[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * n_win, ws[0] * ws[1], C)
    qkv_bias = m.qkv.bias
    if logit_scale is not None and qkv_bias is not None:
        qkv_bias = qkv_bias.clone()
        length = qkv_bias.numel() // 3
        qkv_bias[length:2 * length].zero_()
    qkv = F.linear(x, m.qkv.weight, qkv_bias).reshape(x.size(0), x.size(1), 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * d ** -0.5).matmul(k.transpose(-2, -1))
    attn = attn + m.get_relative_position_bias()
    if sum(shift) > 0:
        mask = x.new_zeros((pad_H, pad_W))
        h_slices = ((0, -ws[0]), (-ws[0], -shift[0]), (-shift[0], None))
        w_slices = ((0, -ws[1]), (-ws[1], -shift[1]), (-shift[1], None))
        count = 0
        for hs in h_slices:
            for wsl in w_slices:
                mask[hs[0]:hs[1], wsl[0]:wsl[1]] = count
                count += 1
        mask = mask.view(pad_H // ws[0], ws[0], pad_W // ws[1], ws[1]).permute(0, 2, 1, 3).reshape(n_win, -1)
        mask = mask.unsqueeze(1) - mask.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, float(-100.0)).masked_fill(mask == 0, float(0.0))
        attn = attn.view(x.size(0) // n_win, n_win, heads, x.size(1), x.size(1)) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, x.size(1), x.size(1))
    attn = F.dropout(F.softmax(attn, dim=-1), p=m.attention_dropout, training=m.training)
    x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), heads * d)
    x = F.dropout(F.linear(x, m.proj.weight, m.proj.bias), p=m.dropout, training=m.training)
    x = x.view(B, pad_H // ws[0], pad_W // ws[1], ws[0], ws[1], C).permute(0, 1, 3, 2, 4, 5).reshape(B, pad_H, pad_W, C)
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :H, :W, :].contiguous()


def _maxvit_attention(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``RelativePositionalMultiHeadAttention.forward`` with the merged width
    ``n_heads * head_dim`` instead of the input's."""
    B, G, P, _ = x.shape
    h, d = m.n_heads, m.head_dim
    q, k, v = (t.reshape(B, G, P, h, d).permute(0, 1, 3, 2, 4) for t in torch.chunk(m.to_qkv(x), 3, dim=-1))
    dot = torch.einsum("B G H I D, B G H J D -> B G H I J", q, k * m.scale_factor)
    dot = F.softmax(dot + m.get_relative_positional_bias(), dim=-1)
    out = torch.einsum("B G H I J, B G H J D -> B G H I D", dot, v)
    return m.merge(out.permute(0, 1, 3, 2, 4).reshape(B, G, P, h * d))


_MHA = HeadKind(count="num_heads", qkv=lambda m: (m, "in_proj_weight", "in_proj_bias"), out=lambda m: m.out_proj,
                head_dim=lambda m: m.head_dim)
_KINDS: Dict[type, Tuple[HeadKind, type]] = {nn.MultiheadAttention: (_MHA, _HeadPrunedMHA),
                                            _HeadPrunedMHA: (_MHA, _HeadPrunedMHA)}


def _torchvision_kinds() -> None:
    """Swin and MaxViT records, added once torchvision is imported (a model of theirs cannot exist
    before; importing it costs seconds in every Ray worker, ARCHITECTURE.md)."""
    from torchvision.models.maxvit import RelativePositionalMultiHeadAttention as Rel
    from torchvision.models.swin_transformer import ShiftedWindowAttention as Win, ShiftedWindowAttentionV2 as Win2

    class HeadPrunedWindowAttention(Win):
        def forward(self, x):
            return _window_attention(self, x, None)

    class HeadPrunedWindowAttentionV2(Win2):
        def forward(self, x):
            return _window_attention(self, x, self.logit_scale)

    class HeadPrunedRelativeAttention(Rel):
        def forward(self, x):
            return _maxvit_attention(self, x)

    def win_dim(m):
        return getattr(m, "head_dim", m.qkv.in_features // m.num_heads)

    table: Slot = (lambda m: m, "relative_position_bias_table", 1)
    win = HeadKind("num_heads", lambda m: (m.qkv, "weight", "bias"), lambda m: m.proj, win_dim, (table,))
    win2 = HeadKind("num_heads", lambda m: (m.qkv, "weight", "bias"), lambda m: m.proj, win_dim,
                    ((lambda m: m, "logit_scale", 0), (lambda m: m.cpb_mlp[2], "weight", 0)))
    rel = HeadKind("n_heads", lambda m: (m.to_qkv, "weight", "bias"), lambda m: m.merge, lambda m: m.head_dim, (table,))
    for kind, base, pruned in ((win, Win, HeadPrunedWindowAttention), (win2, Win2, HeadPrunedWindowAttentionV2),
                               (rel, Rel, HeadPrunedRelativeAttention)):
        _KINDS[base] = _KINDS[pruned] = (kind, pruned)


def _timm_kinds() -> None:
    """timm's ``Attention`` (its ViT, DeiT and relatives): heads x head_dim is ``attn_dim``, which
    its forward reads, so a head-pruned one keeps its class. One with a norm over the heads'
    output (``scale_norm``) or a gate is left alone: zeroing a head would change the others."""
    try:
        from timm.layers import Attention
    except ImportError:  # a timm without it: its models keep their attention unpruned
        return

    def plain(m: nn.Module) -> bool:
        return hasattr(m, "attn_dim") and isinstance(getattr(m, "norm", nn.Identity()), nn.Identity) \
            and getattr(m, "gate", None) is None

    kind = HeadKind("num_heads", lambda m: (m.qkv, "weight", "bias"), lambda m: m.proj, lambda m: m.head_dim,
                    width="attn_dim", accepts=plain)
    _KINDS[Attention] = (kind, Attention)


_LOADERS = {"torchvision": _torchvision_kinds, "timm": _timm_kinds}


def _kind(module: nn.Module) -> Optional[HeadKind]:
    for lib in [lib for lib in _LOADERS if lib in sys.modules]:  # a library's models exist once it is imported
        _LOADERS.pop(lib)()
    entry = _KINDS.get(type(module))
    return entry[0] if entry and entry[0].accepts(module) else None


def attention_modules(model: nn.Module) -> Dict[str, nn.Module]:
    """{name: module} of every attention layer whose heads ``channel`` prunes."""
    return {n: m for n, m in model.named_modules() if _kind(m) is not None}


def head_count(module: nn.Module) -> int:
    return int(getattr(module, _kind(module).count))


def head_width(module: nn.Module) -> int:
    """The dimension of one head."""
    return int(_kind(module).head_dim(module))


def head_widths(model: nn.Module) -> Dict[str, int]:
    """{name: heads x head dimension} of every attention layer: the width its heads span, recorded
    beside the conv/linear widths (``metrics.layer_channels``) because torch's packed
    ``MultiheadAttention`` has no linear layer whose width would say how many heads it kept."""
    return {n: head_count(m) * head_width(m) for n, m in attention_modules(model).items()}


def set_heads(module: nn.Module, heads: int, head_dim: int) -> None:
    """Give an unpruned attention layer the head count of a pruned one (its tensors are reshaped
    by whoever loads the weights: ``serialize.load_pruned``)."""
    kind = _kind(module)
    if int(head_dim) != head_width(module):
        raise ValueError(f"{type(module).__name__}: head dimension {head_dim}; expected {head_width(module)} "
                         "(whole heads are pruned, never a dimension inside one)")
    if int(heads) == head_count(module):
        return
    if not 1 <= int(heads) < head_count(module):
        raise ValueError(f"{type(module).__name__}: {heads} heads; expected 1..{head_count(module) - 1}")
    _set_count(module, kind, int(heads), int(head_dim))


def _set_count(module: nn.Module, kind: HeadKind, heads: int, head_dim: int) -> None:
    """The attributes a head-pruned layer's forward reads: its head count, head dimension and (where
    it keeps one) their product; its class becomes the head-pruned one."""
    setattr(module, kind.count, heads)
    module.head_dim = head_dim
    if kind.width:
        setattr(module, kind.width, heads * head_dim)
    module.__class__ = _KINDS[type(module)][1]


def _rows(kind: HeadKind, m: nn.Module, heads: List[int]) -> torch.Tensor:
    """Indices of the q, k and v rows of ``heads``."""
    n, d = head_count(m), kind.head_dim(m)
    return torch.tensor([s * n * d + h * d + i for s in range(3) for h in heads for i in range(d)], dtype=torch.long)


def _cols(kind: HeadKind, m: nn.Module, heads: List[int]) -> torch.Tensor:
    d = kind.head_dim(m)
    return torch.tensor([h * d + i for h in heads for i in range(d)], dtype=torch.long)


def _tensors(kind: HeadKind, m: nn.Module, heads: List[int]):
    """(tensor owner, attribute, axis, indices) of everything that belongs to ``heads``."""
    owner, w, b = kind.qkv(m)
    rows = _rows(kind, m, heads)
    yield owner, w, 0, rows
    if getattr(owner, b, None) is not None:
        yield owner, b, 0, rows
    yield kind.out(m), "weight", 1, _cols(kind, m, heads)
    for get, attr, axis in kind.per_head:
        yield get(m), attr, axis, torch.tensor(heads, dtype=torch.long)


def projection_channels(module: nn.Module, heads: List[int]) -> List[Tuple[nn.Module, int, List[int]]]:
    """(linear layer, axis: 0 outputs / 1 inputs, indices) that removing ``heads`` takes from the
    attention layer's projections: its q, k, v rows where they are a linear layer of their own (Swin,
    MaxViT; torch's packed ``MultiheadAttention`` holds them in itself) and its output projection's
    columns."""
    return [(owner, axis, idx.tolist()) for owner, attr, axis, idx in _tensors(_kind(module), module, heads)
            if isinstance(owner, nn.Linear) and attr == "weight"]


def _square(w: torch.Tensor) -> torch.Tensor:
    return w.pow(2)


@torch.no_grad()
def head_scores(module: nn.Module, saliency: Callable[[torch.Tensor], torch.Tensor] = _square) -> torch.Tensor:
    """Each head's score: ``saliency`` of its weights (its q, k and v rows and its output-projection
    columns) summed, divided by 2 x head_dim. With ``|w|`` or ``w**2`` this is Torch-Pruning's head
    importance (``MetaPruner(prune_num_heads=True)`` with ``MagnitudeImportance(p=1 or 2)``: the
    group's per-channel importance, the mean over its two layers, then averaged over the head's
    channels; ``tests/test_heads_reference.py`` pins it)."""
    kind = _kind(module)
    owner, w, _ = kind.qkv(module)
    qkv, out = getattr(owner, w).detach().float(), kind.out(module).weight.detach().float()
    n, d = head_count(module), kind.head_dim(module)
    rows = saliency(qkv).reshape(3, n, d, -1).sum((0, 2, 3))
    cols = saliency(out).reshape(out.shape[0], n, d).sum((0, 2))
    return ((rows + cols) / (2 * d)).cpu()


@torch.no_grad()
def zero_heads(module: nn.Module, heads: List[int]) -> None:
    """The masked reference: zero exactly what ``remove_heads`` removes."""
    for owner, attr, axis, idx in _tensors(_kind(module), module, heads):
        t = getattr(owner, attr)
        t.index_fill_(axis, idx.to(t.device), 0.0)


@torch.no_grad()
def remove_heads(module: nn.Module, heads: List[int]) -> None:
    """Remove ``heads`` from ``module`` in place; its head count and class follow."""
    kind = _kind(module)
    heads = sorted(set(int(h) for h in heads))
    if not heads:
        return
    n, d = head_count(module), kind.head_dim(module)
    if len(heads) >= n or heads[0] < 0 or heads[-1] >= n:
        raise ValueError(f"{type(module).__name__}: cannot remove heads {heads} of {n}")
    for owner, attr, axis, idx in list(_tensors(kind, module, heads)):
        t = getattr(owner, attr)
        keep = torch.ones(t.shape[axis], dtype=torch.bool)
        keep[idx] = False
        setattr(owner, attr, nn.Parameter(t.detach()[(slice(None),) * axis + (keep.to(t.device),)].clone(),
                                          requires_grad=t.requires_grad))
    owner = kind.qkv(module)[0]
    if isinstance(owner, nn.Linear):
        owner.out_features = 3 * (n - len(heads)) * d
    kind.out(module).in_features = (n - len(heads)) * d
    _set_count(module, kind, n - len(heads), d)
