"""What ``prune_core.run`` emits: the only keys launch.py and analyze.py read.

``METRICS``: the flat metrics dict every experiment returns (and reports once more with
``stage == "done"``). ``DETAIL_KEYS``: the other keys of that dict, present when they apply.
``EPOCH_KEYS``: every per-epoch report (``stage == "finetune"``).

Accuracies are percentages. FLOPs are per image at the dataset's input size and count
2 x multiply-accumulates of convolutions and linear layers (``torch.utils.flop_counter``);
``macs_*`` are the same counts halved, the unit many papers call "FLOPs". Effective (``_nz``)
FLOPs of a layer are its dense FLOPs times the fraction of its weights that are non-zero.
"""

from __future__ import annotations

from typing import Dict

METRICS: Dict[str, str] = {
    "acc_base": "top-1 test accuracy (%) of the unpruned base model",
    "acc_pruned": "top-1 test accuracy (%) after pruning, rebuild and BN re-estimation, before fine-tuning",
    "acc_pruned_raw": "top-1 test accuracy (%) after pruning and rebuild, with the base model's BN statistics",
    "acc_final": "top-1 test accuracy (%) after fine-tuning; the accuracy Pareto fronts use",
    "acc5_base": "top-5 test accuracy (%) of the base model; null below 100 classes",
    "acc5_final": "top-5 test accuracy (%) after fine-tuning; null below 100 classes",
    "val_acc_final": "validation accuracy (%) after fine-tuning; what searchers and schedulers see",
    "num_classes": "number of classes; chance-level accuracy is 100 / num_classes %",
    "flops_base": "dense FLOPs per image of the base model (2 x conv+linear MACs)",
    "flops_final": "dense FLOPs per image of the pruned, rebuilt model",
    "flops_nz_base": "effective FLOPs per image of the base model (dense x weight density per layer)",
    "flops_nz_final": "effective FLOPs per image of the pruned model (dense x weight density per layer)",
    "macs_base": "multiply-accumulates per image of the base model (flops_base / 2)",
    "macs_final": "multiply-accumulates per image of the pruned model (flops_final / 2)",
    "flops_kept_dense": "flops_final / flops_base: the fraction of FLOPs a dense kernel still runs (realisable)",
    "flops_kept_effective": "flops_nz_final / flops_base: the fraction of FLOPs on non-zero weights (theoretical)",
    "params_base": "parameters of the base model",
    "params_final": "parameters of the pruned, rebuilt model",
    "params_nz_base": "non-zero parameters of the base model",
    "params_nz_final": "non-zero parameters of the pruned model",
    "prune_ranking": "how units were compared: local, global_mean, global_raw or global_lamp",
    "sparsity": "fraction of conv and linear weights of the pruned model that are zero",
    "latency_ms_base": "median latency (ms) of the base model at batch 1",
    "latency_ms_final": "median latency (ms) of the pruned model at batch 1",
    "latency_ms_base_batch": "median latency (ms) of the base model at runtime.latency_batch",
    "latency_ms_final_batch": "median latency (ms) of the pruned model at runtime.latency_batch",
    "latency_ms_base_iqr": "interquartile range (q75 - q25, ms) of the base model's batch-1 latency",
    "latency_ms_final_iqr": "interquartile range (q75 - q25, ms) of the pruned model's batch-1 latency",
    "latency_ms_base_batch_iqr": "interquartile range (q75 - q25, ms) of the base model's latency at runtime.latency_batch",
    "latency_ms_final_batch_iqr": "interquartile range (q75 - q25, ms) of the pruned model's latency at runtime.latency_batch",
    "speedup": "latency_ms_base / latency_ms_final at batch 1 (measured, not theoretical)",
    "speedup_batch": "latency_ms_base_batch / latency_ms_final_batch",
    "latency_device": "where latency was measured (cpu with its thread count, or the CUDA device)",
    "latency_ms_base_ort": "median latency (ms) of the base model exported to ONNX, under ONNX Runtime on the CPU at batch 1; null unless runtime.export is onnx",
    "latency_ms_final_ort": "median latency (ms) of the pruned model exported to ONNX, under ONNX Runtime on the CPU at batch 1; null unless runtime.export is onnx",
    "latency_ms_base_batch_ort": "the same as latency_ms_base_ort at runtime.latency_batch",
    "latency_ms_final_batch_ort": "the same as latency_ms_final_ort at runtime.latency_batch",
    "latency_ms_final_iqr_ort": "interquartile range (q75 - q25, ms) of latency_ms_final_ort",
    "latency_ms_final_batch_iqr_ort": "interquartile range (q75 - q25, ms) of latency_ms_final_batch_ort",
    "onnx_max_abs_diff": "largest |logit| difference between ONNX Runtime and PyTorch on a batch of test images and on one image (at most 1e-4 × max(1, largest |logit|)); null unless runtime.export is onnx",
    "latency_pass": "how latency was measured: trial (inside the run, base and pruned model interleaved) or quiet (a sweep's pass alone on a node)",
    "rebuild_max_abs_diff": "largest |logit| difference between the rebuilt and the masked model",
    "base_cached": "1 when the base model came from the cache, 0 when this run trained it",
    "finetune_epochs": "epochs trained after pruning: the fine-tune (early stopping may end it sooner), SNIP's training from scratch, IMP's last retraining",
    "epochs_base": "epochs the base model this trial prunes was trained (0 for a given model and for methods that prune at initialisation); shared by every trial of that base",
    "epochs_prune": "epochs trained inside the pruning step (IMP: the retraining of every level but the last)",
    "epochs_trial": "epochs this trial trained after the base: epochs_prune + finetune_epochs",
    "epochs_teacher": "fine-tune epochs in which the dense base ran forward as a distillation teacher (finetune.kd_alpha > 0; else 0); training compute counts each as a third of an epoch",
    "time_base_s": "seconds spent training (or loading) the base model",
    "time_prune_s": "seconds spent scoring and pruning (IMP: its rounds of retraining included)",
    "time_rebuild_s": "seconds spent physically rebuilding the smaller model and checking it",
    "time_finetune_s": "seconds spent fine-tuning",
    "time_eval_s": "seconds spent measuring accuracy, FLOPs, parameters and latency",
    "time_total_s": "seconds for the whole experiment (in a sweep's result.json Ray Tune writes its own trial time here)",
}

METRIC_KEYS = tuple(METRICS)


def flops_kept(metrics: Dict[str, float]) -> Dict[str, float]:
    """``flops_kept_dense`` and ``flops_kept_effective`` of a metrics dict or an epoch report (both
    carry the three counts): the realisable and the theoretical cost, never one for the other."""
    return {"flops_kept_dense": metrics["flops_final"] / metrics["flops_base"],
            "flops_kept_effective": metrics["flops_nz_final"] / metrics["flops_base"]}
TEXT_METRICS = frozenset({"latency_device", "latency_pass", "prune_ranking"})  # every other key holds a number (or null)

# keys of the final dict besides METRICS, present only where they apply
DETAIL_KEYS: Dict[str, str] = {
    "layer_channels_base": "{layer name: output channels} of the base model's conv and linear layers",
    "layer_channels_final": "{layer name: output channels} of the pruned, rebuilt model",
    "input_shape": "[C, H, W] of one input image as the model sees it (what rebuilding the architecture needs)",
    "layer_params_base": "{layer name: non-zero weights} of the base model's conv and linear layers",
    "layer_params_final": "{layer name: non-zero weights} of the pruned model",
    "prune_round_to": "channel multiple prune.round_to: auto chose on the device (pruning.devicecost)",
    "latency_kept_estimate": "prune.target latency: the latency table's estimate of the fraction of dense latency kept",
    "latency_kept_measured": "prune.target latency: that fraction as timed while pruning (median, latency batch)",
    "imp_levels": "IMP: pruning levels run (each removes prune.imp_fraction of the remaining weights)",
    "imp_epochs": "IMP: epochs trained across all levels, T + L x (T - k)",
    "control_width": "prune.control narrow: the multiple of model.width trained, whose dense FLOPs came closest to the pruned network's",
}

# one report per fine-tune (or retraining) epoch; the cost keys repeat the ones known since pruning,
# so a trial a scheduler stops early can still be placed on a plot
EPOCH_KEYS: Dict[str, str] = {
    "stage": "finetune for every epoch report; done for the final metrics",
    "epoch": "epochs trained since pruning (1, 2, ...)",
    "train_loss": "mean training loss of the epoch",
    "train_acc": "training accuracy (%) of the epoch, on augmented batches",
    "val_acc": "validation accuracy (%) after the epoch",
    "val_loss": "validation loss after the epoch",
    "lr": "learning rate at the end of the epoch",
    "epoch_s": "seconds the epoch took",
    "acc_base": METRICS["acc_base"],
    "flops_base": METRICS["flops_base"],
    "flops_final": METRICS["flops_final"],
    "flops_nz_final": METRICS["flops_nz_final"],
    "params_base": METRICS["params_base"],
    "params_nz_final": METRICS["params_nz_final"],
    "num_classes": METRICS["num_classes"],
}
EPOCH_COSTS = tuple(k for k in EPOCH_KEYS if k in METRICS)
