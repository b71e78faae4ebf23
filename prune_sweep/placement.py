"""Where a Ray task or trial runs, and the check that it can use the GPU Ray gave it.

Ray gives a trial a share of a GPU (``resources.gpu``: 0.5 packs two trials on one) and the base
task and the quiet latency pass a whole one; it sets ``CUDA_VISIBLE_DEVICES`` to the GPU's id
before the worker's first CUDA call, so ``cuda`` (``cuda:0``) inside the worker is that GPU. Ray's
GPUs are declared, not probed: a node started with ``--num-gpus`` that has no working CUDA still
hands them out. A worker whose config computes on CUDA (``runtime.device: cuda``, which
``expand.trial_base`` makes of ``auto`` when ``resources.gpu > 0``) therefore checks, before any
work, that CUDA answers, and fails with one line that names the node and the GPU id otherwise. It
never falls back to the CPU: the base's hash, the precision and every timing would then silently
be a CPU's. Whether a worker needs CUDA is its ``runtime.device``: with ``cpu`` it holds its GPU
share and computes on the CPU (``tests/test_gpu_placement.py`` runs Ray with logical GPUs so).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import ray


class GPUUnusable(RuntimeError):
    """Ray gave this worker a GPU that CUDA cannot use. A retry may land on another node, so the
    failure is Tune's to retry (``max_failures``), not a trial error recorded once for good."""


def where() -> Dict[str, Any]:
    """This worker's node and GPUs: ``node_ip``, ``node_id`` and ``gpu_ids`` (Ray's ids joined by
    commas; empty without a GPU)."""
    return {"node_ip": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id(),
            "gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids())}


def cuda_problem() -> Optional[str]:
    """Why CUDA cannot run here, or None when a tensor can be put on ``cuda``."""
    import torch

    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    try:
        torch.zeros(1, device="cuda")
    except (RuntimeError, AssertionError) as exc:  # a driver or CUDA-version mismatch
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return lines[0] if lines else type(exc).__name__
    return None


def claim_device(device: str, what: str) -> Dict[str, Any]:
    """Before ``what`` (e.g. ``trial 3f2a_00001``) works on ``device`` (``cuda`` or ``cpu``): on
    CUDA with a GPU from Ray, CUDA must answer, else ``GPUUnusable`` in one line. Returns
    ``where()``."""
    place = where()
    if device == "cuda" and place["gpu_ids"]:
        problem = cuda_problem()
        if problem is not None:
            s = "s" * ("," in place["gpu_ids"])
            raise GPUUnusable(
                f"{what} on node {place['node_ip']} ({place['node_id'][:12]}): Ray gave it GPU{s} {place['gpu_ids']} "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}) but CUDA cannot use it: "
                f"{problem}; check that node's driver and its ray start --num-gpus, or run on CPUs with "
                "resources.gpu: 0")
    return place
