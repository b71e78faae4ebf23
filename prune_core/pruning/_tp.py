"""Torch-Pruning, imported without timm.

Torch-Pruning's op counter (``torch_pruning.utils.op_counter``, unused here: FLOPs are counted by
``prune_core.metrics``) imports timm whenever it is installed, and timm imports torchvision: 1.8 s
at the start of every Ray worker, even one that prunes a CIFAR ResNet. The package imports this
module first, so every later ``import torch_pruning`` finds it loaded; timm stays importable.
"""

import sys

_hide = "timm" not in sys.modules
if _hide:
    sys.modules["timm"] = None  # type: ignore[assignment]  # an ImportError for Torch-Pruning's optional import
try:
    import torch_pruning  # noqa: F401
finally:
    if _hide:
        del sys.modules["timm"]
