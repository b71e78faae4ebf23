"""Saving a pruned model so that a fresh registry model can take its shape again.

The file holds the state dict (masks folded into their weights) and, per layer, the attributes
that a pruned layer changes (channel counts, groups, features; an attention layer's head count and
head dimension). Loading reshapes a fresh model of
the same registry name to those shapes and loads the weights with ``weights_only=True``: nothing
but tensors, numbers and strings is unpickled. (``tp.state_dict`` pickles whole module
``__dict__``s, which ``weights_only`` refuses.)

>>> save_pruned(small, "pruned.pt")  # doctest: +SKIP
>>> again = load_pruned("pruned.pt", build_model("resnet20", 10, 3, 32))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

import torch
from torch import nn

from ..checkpoints import load_checked, save_atomic
from .heads import attention_modules, head_count, head_width, set_heads

FORMAT = 1
SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features")


def _dense_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The state dict with ``torch.nn.utils.prune`` masks folded in: ``x_orig * x_mask`` as ``x``."""
    state = model.state_dict()
    out = {}
    for key, value in state.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state:
            continue
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in state:
            base = key[: -len("_orig")]
            out[base] = (value * state[base + "_mask"]).detach().clone()
        else:
            out[key] = value.detach().clone()
    return {k: v.cpu().contiguous() for k, v in out.items()}


def save_pruned(model: nn.Module, path: Union[str, Path]) -> None:
    """Write ``model``'s weights and the per-layer shapes needed to re-create it."""
    shapes = {name: {a: int(getattr(m, a)) for a in SHAPE_ATTRS if isinstance(getattr(m, a, None), int)}
              for name, m in model.named_modules()}
    shapes = {k: v for k, v in shapes.items() if v}
    heads = {name: [head_count(m), head_width(m)] for name, m in attention_modules(model).items()}
    save_atomic({"format": FORMAT, "state_dict": _dense_state(model), "shapes": shapes, "heads": heads}, Path(path))


def load_pruned(path: Union[str, Path], base_model: nn.Module) -> nn.Module:
    """Reshape ``base_model`` (a fresh registry model of the same name and settings) to the saved
    pruned shapes and load the saved weights into it. A plain state dict loads as it is. Raises
    ``prune_core.checkpoints.CorruptFile`` for a file that fails its checksum or is no torch file."""
    blob = load_checked(Path(path))
    if "state_dict" not in blob:  # an unpruned model's state dict
        base_model.load_state_dict(blob)
        return base_model
    state, shapes = blob["state_dict"], blob["shapes"]
    for name, attrs in shapes.items():
        try:
            module = base_model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{path}: layer {name!r} is not in the model it is loaded into") from None
        for attr, value in attrs.items():
            setattr(module, attr, value)
    attention = attention_modules(base_model)
    for name, (heads, head_dim) in blob.get("heads", {}).items():  # files written before heads were saved lack it
        if name not in attention:
            raise ValueError(f"{path}: attention layer {name!r} is not in the model it is loaded into")
        set_heads(attention[name], heads, head_dim)
    for key, value in state.items():
        owner, _, leaf = key.rpartition(".")
        module = base_model.get_submodule(owner)
        current = getattr(module, leaf, None)
        if current is None or current.shape == value.shape:
            continue
        if isinstance(current, nn.Parameter):
            setattr(module, leaf, nn.Parameter(torch.empty_like(value), requires_grad=current.requires_grad))
        else:
            module.register_buffer(leaf, torch.empty_like(value))
    base_model.load_state_dict(state)
    return base_model
