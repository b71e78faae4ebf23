"""The quiet latency pass's task, called directly (no Ray): what it builds and with how many threads."""

import json

import torch
import yaml

import prune_core.pruning as pruning
from prune_core.metrics import layer_channels
from prune_core.models import build_model
from prune_sweep.latency_pass import time_trials


def test_models_are_built_with_the_trials_threads_and_the_workers_count_is_restored(tmp_path, monkeypatch):
    """Building traces every model on the CPU: with the node's threads on a shared 2-core machine that
    took 15-25 s for 8 resnet20s, with the trials' one 0.6 s. The worker's count is put back after."""
    base = layer_channels(build_model("resnet20", 10, 1, 28, 0.5))
    final = dict(base, **{"layer1.0.conv1": base["layer1.0.conv1"] // 2})  # an uncoupled conv, halved
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"model": {"name": "resnet20", "width": 0.5},
                                                        "runtime": {"latency_repeats": 2, "latency_batch": 2}}))
    for i in range(2):
        trial = tmp_path / f"t{i}"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps({"prune.ratio": 0.1 * (i + 1)}))
        (trial / "result.json").write_text(json.dumps(
            {"stage": "done", "trial_id": f"t{i}", "num_classes": 10, "input_shape": [1, 28, 28],
             "layer_channels_base": base, "layer_channels_final": final}) + "\n")
    seen = []
    build = pruning.build_architecture
    monkeypatch.setattr(pruning, "build_architecture", lambda *a: seen.append(torch.get_num_threads()) or build(*a))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = time_trials(str(tmp_path), threads=1, device_name="cpu")
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    assert seen == [1, 1]  # the base and the one distinct pruned architecture
    assert after == 2
    assert (out["trials"], out["models"], out["device"]) == (2, 2, "cpu x1 threads")
    assert out["latency"]["t0"] == out["latency"]["t1"] and out["latency"]["t0"]["latency_pass"] == "quiet"
    assert out["latency"]["t0"]["latency_ms_final"] > 0
