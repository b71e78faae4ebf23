"""Models by reference: ``torchvision:<builder>``, ``timm:<name>`` and ``<module>:<callable>``.

``model.name`` takes, beside a registry name (``prune_core.models.MODELS``):

- ``torchvision:<builder>``: any name ``torchvision.models.list_models(module=torchvision.models)``
  returns, built as torchvision defines it (random weights; ``model.weights`` loads torchvision's
  through its weights API). Only the classes, the first convolution's input channels and the
  input-size arguments (``image_size`` of the ViTs, ``input_size`` of MaxViT) change. No stem is
  rewritten: a family too deep for a small input needs a bigger one, ``data.resize`` (``MIN_SIZE``).
- ``timm:<name>``: a model of the optional ``timm`` package (``pip install -e ".[timm]"``), built
  with ``timm.create_model(name, num_classes=, in_chans=)`` (and ``img_size=`` where its input size
  is fixed). Pretrained weights come only from a local file (``model.weights: path/to/file``) or
  timm's cache (``model.weights: DEFAULT``), never from the network.
- ``<module>:<callable>``: the user's builder, ``callable(num_classes, in_channels, image_size,
  width) -> nn.Module``; ``<module>`` is an importable module or a ``.py`` file, loaded as a
  plug-in (``prune_core.plugins``). The file's content is part of the base key, so an edited
  builder never reuses a stale base.

>>> net = reference_builder("torchvision:resnet18")(10, 1, 32, 1.0)  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from torch import nn

from .errors import ConfigError
from .sections import is_reference, split_reference as split

Builder = Callable[[int, int, int, float], nn.Module]
TORCHVISION, TIMM = "torchvision", "timm"

# The smallest square input (px) each torchvision family runs at with random weights, found by a
# forward pass at 16, 28, 32, 48, 64, 75, 96, 128, 160 and 224 px (torchvision 0.29): the spatial
# size reaches zero, or a window or partition no longer divides it. Families absent run at 16 px.
# The ViTs also need a multiple of their patch size, MaxViT of 224 (its partition of 7 at stride 32).
MIN_SIZE: Dict[str, int] = {"alexnet": 64, "convnext": 32, "densenet": 32, "inception_v3": 75, "maxvit": 224,
                            "squeezenet": 28, "vgg": 32}


def closest(name: str, options: List[str], n: int = 5) -> str:
    """The ``n`` options nearest to ``name`` (difflib), comma-separated, for a one-line error."""
    near = difflib.get_close_matches(name, options, n=n, cutoff=0.4)
    return ", ".join(near or sorted(options)[:n])


def reference_builder(name: str) -> Builder:
    """The builder ``name`` refers to; ``ConfigError`` in one line when it refers to nothing."""
    head, tail = split(name)
    if not head or not tail:
        raise ConfigError(f"model.name={name!r}: expected torchvision:<builder>, timm:<name> or "
                          "<module or file.py>:<callable>")
    if head == TORCHVISION:
        return _torchvision(tail)
    if head == TIMM:
        return _timm(tail)
    return user_callable("model.name", name)


def user_callable(key: str, name: str) -> Callable:
    """The callable ``<module or file.py>:<attribute>`` names, its module imported as a plug-in."""
    from .plugins import reference_target

    head, tail = split(name)
    module, obj = reference_target(key, name)
    if not callable(obj):
        public = [a for a in dir(module) if not a.startswith("_") and callable(getattr(module, a))]
        raise ConfigError(f"{key}={name!r}: {head} has no callable {tail!r}; closest: {closest(tail, public)}")
    return obj


# ---------------------------------------------------------------------------------------------
# torchvision


@lru_cache(maxsize=1)
def torchvision_names() -> Tuple[str, ...]:
    from torchvision import models as tvm

    return tuple(tvm.list_models(module=tvm))


def family(builder: str) -> str:
    """``resnet18`` -> ``resnet``, ``vit_b_16`` -> ``vit``, ``efficientnet_v2_s`` -> ``efficientnet``."""
    if builder == "inception_v3":
        return builder
    return re.match(r"[a-z]+", builder).group(0).rstrip("_")


def min_size(builder: str) -> int:
    """The smallest input side torchvision's ``builder`` runs at (``MIN_SIZE``; 16 otherwise)."""
    return MIN_SIZE.get(family(builder), 16)


def _patch(builder: str) -> int:
    return int(builder.rsplit("_", 1)[1]) if family(builder) == "vit" else 1


def check_size(name: str, size: int) -> None:
    """``ConfigError`` naming ``data.resize`` when torchvision's ``name`` cannot take ``size`` px."""
    builder = split(name)[1]
    need, patch = min_size(builder), _patch(builder)
    if family(builder) == "maxvit":
        patch = 224
    ok = max(need, patch) if size < max(need, patch) else -(-size // patch) * patch
    if size < need or size % patch:
        why = f"whose side is a multiple of {patch} px" if size >= need else f"of at least {need} px"
        raise ConfigError(f"model.name={name}: needs inputs {why}, the data gives {size} px; set data.resize: {ok}")


def _torchvision(builder: str) -> Builder:
    names = torchvision_names()
    if builder not in names:
        raise ConfigError(f"model.name='torchvision:{builder}': torchvision has no classifier {builder!r}; "
                          f"closest: {closest(builder, list(names))}")

    def build(nc: int, cin: int, size: int, width: float) -> nn.Module:
        from torchvision import models as tvm

        check_size(f"torchvision:{builder}", size)
        kwargs: Dict[str, object] = {}
        fam = family(builder)
        if fam == "vit":
            kwargs["image_size"] = size
        elif fam == "maxvit":
            kwargs["input_size"] = (size, size)
        elif fam in ("googlenet", "inception_v3"):
            # one output in training too (no auxiliary heads); init_weights: torchvision's own default
            kwargs.update(aux_logits=False, init_weights=True)
        net = tvm.get_model(builder, weights=None, num_classes=nc, **kwargs)
        if cin != 3:
            first_conv(net, cin)
        return net

    build.__qualname__ = build.__name__ = f"torchvision_{builder}"
    return build


def first_conv(net: nn.Module, cin: int) -> None:
    """Replace the first convolution of ``net`` (its stem or patch embedding) by one reading ``cin``
    channels, all else equal (freshly initialised)."""
    for path, child in net.named_modules():  # depth first, in definition order: the stem comes first
        if isinstance(child, nn.Conv2d):
            parent, _, attr = path.rpartition(".")
            new = nn.Conv2d(cin, child.out_channels, child.kernel_size, child.stride, child.padding,
                            child.dilation, 1, child.bias is not None, child.padding_mode)
            setattr(net.get_submodule(parent), attr, new)
            return
    raise ConfigError(f"{type(net).__name__}: no convolution reads the input; cannot take {cin} channels")


def torchvision_weights(name: str, weights: str):
    """torchvision's weights ``weights`` (``DEFAULT``, a member name such as ``IMAGENET1K_V1`` or
    its full spelling ``ResNet50_Weights.IMAGENET1K_V2``) of its builder ``name``."""
    from torchvision import models as tvm

    enum = tvm.get_model_weights(name)
    member = weights.split(".")[-1]
    if weights.count(".") > 1 or (weights.count(".") == 1 and weights.split(".")[0] != enum.__name__):
        member = ""  # another model's weights
    if member == "DEFAULT":
        return enum.DEFAULT
    if member not in enum.__members__:
        raise ConfigError(f"model.weights={weights!r}: expected DEFAULT or one of "
                          f"{', '.join(enum.__members__)} (torchvision's {enum.__name__})")
    return enum[member]


# ---------------------------------------------------------------------------------------------
# timm


def _timm_module():
    try:
        import timm
    except ImportError:
        raise ConfigError("model.name=timm:...: the timm package is not installed; pip install -e \".[timm]\"") from None
    return timm


def _timm(name: str) -> Builder:
    timm = _timm_module()
    if not timm.is_model(name):
        raise ConfigError(f"model.name='timm:{name}': timm has no model {name!r}; closest: "
                          f"{closest(name, timm.list_models())}")

    def build(nc: int, cin: int, size: int, width: float) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=nc, in_chans=cin, **_timm_size(name, size))

    build.__qualname__ = build.__name__ = f"timm_{name}"
    return build


def _timm_size(name: str, size: int) -> Dict[str, object]:
    """``img_size`` for the timm models whose input size is fixed at build (ViTs and kin)."""
    cfg = _timm_module().models.get_pretrained_cfg(name)
    return {"img_size": size} if cfg is not None and cfg.fixed_input_size else {}


def timm_state(name: str, weights: str) -> Dict[str, "object"]:
    """The pretrained state dict of timm's ``name``: from the file ``weights``, or for ``DEFAULT``
    (or a pretrained tag such as ``a1_in1k``) from timm's local cache, offline. ``DatasetMissing``
    in one line when it is not there."""
    import torch

    from .data import DatasetMissing

    path = Path(weights).expanduser()
    if weights != "DEFAULT" and ("/" in weights or path.suffix in (".pth", ".pt", ".bin", ".safetensors")):
        if not path.is_file():
            raise DatasetMissing(f"model.weights={weights}: no such file; expected a state dict of timm:{name}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        state = torch.load(path, map_location="cpu", weights_only=True)
        return dict(state.get("state_dict", state.get("model", state)))
    timm = _timm_module()
    tagged = name if weights == "DEFAULT" else f"{name}.{weights}"
    cfg = timm.models.get_pretrained_cfg(tagged)
    if cfg is None:
        raise ConfigError(f"model.weights={weights!r}: timm:{name} has no pretrained tag {weights!r}; expected DEFAULT, "
                          "a tag of timm.list_pretrained() or a file")
    cached, where = _timm_cached(cfg)
    if cached is None:
        raise DatasetMissing(f"model.weights={weights}: timm:{name}'s pretrained weights are not in the local cache "
                             f"({where}); download them on a connected machine or give a file")
    return timm.create_model(tagged, pretrained=True, pretrained_cfg_overlay={"file": cached}).state_dict()


def _timm_cached(cfg) -> Tuple[Optional[str], str]:
    """(the cached file of a timm pretrained config, or None; where it was looked for): the
    Hugging Face hub cache for a hub id, torch.hub's checkpoints for a URL. Nothing is downloaded."""
    import os

    import torch

    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin"):
            if filename:
                found = try_to_load_from_cache(cfg.hf_hub_id, filename)
                if isinstance(found, str):
                    return found, ""
        return None, f"Hugging Face cache, {cfg.hf_hub_id}"
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        return (str(path), "") if path.is_file() else (None, str(path))
    return None, "no source"


def versions(name: str) -> Optional[str]:
    """timm's version for a ``timm:`` model (its code builds the network), else None."""
    if split(name)[0] != TIMM:
        return None
    from importlib import metadata

    return metadata.version("timm")
