"""A sweep on a two-node Ray cluster survives losing the node that runs its trial.

Its own module: it needs its own Ray (``ray.cluster_utils.Cluster``: a head with no CPUs and two
1-CPU nodes, so every task and trial runs on a node that can be removed).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import ray
from _sweeps import trial_rows, write_sweep
from ray.cluster_utils import Cluster

from prune_sweep.launch_cli import main

EPOCHS = 6


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        c.add_node(num_cpus=1)
    ray.init(address=c.address)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def sweep_file(tmp_path: Path) -> Path:
    # one trial, fine-tune epochs of about a second each: time to remove its node mid-fine-tune
    return write_sweep(tmp_path, "ft", [0.3], finetune=(EPOCHS, 8), limit_train=512, max_failures=3)


def rows(exp: Path) -> list:
    return [r for trial in trial_rows(exp).values() for r in trial]


def test_local_storage_is_refused_on_a_multi_node_cluster(cluster, tmp_path, capsys):
    assert main([str(sweep_file(tmp_path)), "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 nodes" in err and "--shared-storage" in err
    assert not (tmp_path / "ft").exists()


def test_trial_resumes_from_its_checkpoint_on_another_node(cluster, tmp_path):
    exp = tmp_path / "ft"
    removed = {}

    def remove_the_trials_node():
        deadline = time.time() + 240
        while time.time() < deadline:
            epochs = [r for r in rows(exp) if r.get("stage") == "finetune"]
            if any(r["epoch"] >= 2 for r in epochs):
                node_id = epochs[-1]["node_id"]
                node = next(n for n in cluster.list_all_nodes() if n.node_id == node_id)
                removed.update(node_id=node_id, after_epoch=max(r["epoch"] for r in epochs))
                cluster.remove_node(node)
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=remove_the_trials_node, daemon=True)
    watcher.start()
    code = main([str(sweep_file(tmp_path)), "--storage", str(tmp_path), "--shared-storage"])
    watcher.join(timeout=5)
    assert code == 0
    assert removed, "the trial finished before its node could be removed"
    reports = rows(exp)
    epochs = [r["epoch"] for r in reports if r.get("stage") == "finetune"]
    final = [r for r in reports if r.get("stage") == "done"]
    assert len(final) == 1 and final[0]["finetune_epochs"] == EPOCHS
    assert final[0]["node_id"] != removed["node_id"]  # finished on the other node
    assert epochs.count(1) == 1, epochs  # not restarted from epoch 0
    restart = next(r["epoch"] for r in reports if r.get("node_id") != removed["node_id"] and r.get("stage") == "finetune")
    assert 1 < restart <= removed["after_epoch"] + 1, epochs  # the epoch after its last checkpoint
    assert sorted(set(epochs)) == list(range(1, EPOCHS + 1))
    error = next(exp.glob("*/error.txt")).read_text()
    assert "Failure # 1" in error  # Tune saw the node die and retried the trial
