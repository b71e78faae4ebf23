"""An experiment's configuration: ``ExperimentConfig``, the six sections of ``prune_core.sections``
with every registry name checked and every method default filled in when it is built.

>>> cfg = ExperimentConfig.from_dict({"prune.ratio": 0.3, "model.name": "resnet20"})
>>> cfg.prune.ratio, cfg.prune.criterion
(0.3, 'l1')

``flatten``, ``nest``, ``parse_overrides``, ``SMOKE``, ``BASE_KEYS`` and the section classes are
importable from here as well as from ``prune_core.sections``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Mapping

from .data import check_dataset, dataset_opener
from .errors import ConfigError
from . import zoo
from .models import builder_of, check_model, weights_key
from .plugins import code_digest, load_plugins, module_name
from .pruning import METHODS, post_prune_training, resolve_prune
from .sections import (BASE_KEYS, SECTIONS, SMOKE, DataConfig, FinetuneConfig, ModelConfig, PruneConfig,
                       RuntimeConfig, TrainConfig, coerce, digest, finetune_default, flatten, is_reference, nest,
                       mapping_entry, split_reference, parse_overrides, precision_name)
from .yamlfile import YamlError, load_yaml

__all__ = ["ExperimentConfig", "ConfigError", "BASE_KEYS", "SECTIONS", "SMOKE", "DataConfig",
           "FinetuneConfig", "ModelConfig", "PruneConfig", "RuntimeConfig", "TrainConfig", "digest", "flatten", "nest",
           "parse_overrides"]


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one experiment needs. Build it with ``from_dict``; it is immutable."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # base training
    prune: PruneConfig = field(default_factory=lambda: resolve_prune(PruneConfig()))
    finetune: FinetuneConfig = field(default_factory=finetune_default)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        self.runtime.validate()
        load_plugins(self.runtime.plugins)  # before any registry name is checked
        self.data.validate()
        check_dataset(self.data)
        self.model.validate()
        check_model(self.model)
        self.train.validate("train")
        self.finetune.validate("finetune")
        self.prune.validate()
        if resolve_prune(self.prune) != self.prune:  # also checks the names against the registries
            raise ConfigError(f"prune.criterion={self.prune.criterion!r}, prune.calib_batches="
                              f"{self.prune.calib_batches}: expected the method's defaults filled in; "
                              "build the config with ExperimentConfig.from_dict")
        post_prune_training(self)  # a budget (prune.budget_epochs) the method cannot keep is a ConfigError

    # ----------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, base: "ExperimentConfig | None" = None
                  ) -> "ExperimentConfig":
        """Build from nested (``{"prune": {"ratio": 0.5}}``) or dotted (``{"prune.ratio": 0.5}``) keys,
        starting from ``base`` (defaults when None)."""
        flat = flatten(values or {})
        current = (base or cls()).to_flat()
        if ("prune.method" in flat or "prune.lamp" in flat) and "prune.criterion" not in flat:
            current["prune.criterion"] = ""  # a new method (or LAMP) brings its own default criterion
        if "prune.method" in flat and "prune.calib_batches" not in flat:
            current["prune.calib_batches"] = 0  # ... and its own default number of calibration batches
        for key, value in flat.items():
            parent, name = mapping_entry(key)
            if parent:  # prune.stage_ratios.layer1: one entry of a mapping
                key, value = parent, {**dict(coerce(parent, current[parent], ())), name: value}
            if key not in current:
                section = key.split(".")[0]
                if section not in SECTIONS:
                    raise ConfigError(f"{key}: unknown section {section!r}; expected one of "
                                      + ", ".join(SECTIONS))
                known = ", ".join(f.name for f in fields(SECTIONS[section]))
                raise ConfigError(f"{key}: unknown key; {section} accepts {known}")
            current[key] = coerce(key, value, current[key])
        sections = {s: SECTIONS[s](**values) for s, values in nest(current).items()}
        sections["runtime"].validate()
        load_plugins(sections["runtime"].plugins)  # they may register the method, model or dataset named
        if sections["prune"].method in METHODS:  # an unknown one is named by __post_init__, in order
            sections["prune"] = resolve_prune(sections["prune"])
        return cls(**sections)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> "ExperimentConfig":
        try:
            values = load_yaml(path) or {}
        except (OSError, YamlError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(f"--config {path}: cannot read it ({reason})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"--config {path}: expected a mapping of config keys, got {type(values).__name__}")
        cfg = cls.from_dict(values)
        return cls.from_dict(overrides or {}, base=cfg)

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        out = dataclasses.asdict(self)
        out["runtime"]["plugins"] = list(self.runtime.plugins)  # YAML and JSON write lists
        out["data"]["mean"], out["data"]["std"] = list(self.data.mean), list(self.data.std)
        out["prune"]["stage_ratios"] = dict(self.prune.stage_ratios)
        return out

    def to_flat(self) -> Dict[str, Any]:
        return flatten(self.to_dict())

    def replace(self, **dotted: Any) -> "ExperimentConfig":
        """A copy with dotted keys changed: ``cfg.replace(**{"prune.ratio": 0.3})``."""
        return ExperimentConfig.from_dict(dotted, base=self)

    def device_type(self) -> str:
        """The device type this config trains on here: ``runtime.device``, with auto resolved the
        way ``prune_core.pipeline.resolve_device`` resolves it."""
        if self.runtime.device != "auto":
            return self.runtime.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def base_key(self) -> Dict[str, Any]:
        """Everything that determines the trained base's weights (ARCHITECTURE.md, contract 7): the
        ``BASE_KEYS`` values, the device type (``device_type()``), the numeric precision that device
        and ``runtime.amp``/``amp_dtype``/``cpu_bf16`` give, determinism, and the major versions of
        torch and torchvision. The data's contents are checked on load instead (``prune_core.pipeline``): a
        launcher hashes bases without reading the data. Keys added later (``model.weights``,
        ``data.resize``, ``data.mean``, ``data.std``, ``train.group_l1``) enter only when set, so
        earlier bases keep their hashes. A dataset read by reference (``imagefolder``,
        ``<module>:<callable>``) adds the folder it reads (``data.root``, resolved); a
        ``<module>:<callable>`` is keyed by its module's name and its source's digest, not by where
        the file lies."""
        flat = self.to_flat()
        device = self.device_type()
        key: Dict[str, Any] = {"data": {}, "model": {}, "train": {}, "seed": flat["runtime.seed"], "device": device,
                               "precision": precision_name(device, self.runtime.amp, self.runtime.cpu_bf16,
                                                            self.runtime.amp_dtype),
                               "deterministic": self.runtime.deterministic, "versions": major_versions()}
        for dotted in BASE_KEYS:
            section, name = dotted.split(".", 1)
            if dotted == "model.weights":  # absent when unset: the bases cached before it keep their hash
                if flat[dotted]:
                    key["model"]["weights"] = weights_key(self.model.name, flat[dotted])  # DEFAULT named
            elif dotted in LATER_KEYS:
                if flat[dotted]:
                    key[section][name] = flat[dotted]
            elif section != "runtime":
                key[section][name] = flat[dotted]
        if self.data.name == "imagefolder" or is_reference(self.data.name):
            key["data"]["root"] = str(Path(self.data.root).expanduser().resolve())
        for section, name in (("data", self.data.name), ("model", self.model.name)):
            if is_reference(name):  # a file by its module name: a moved checkout keeps its bases
                module, attr = split_reference(name)
                key[section]["name"] = f"{module_name(module)}:{attr}"
        # a plug-in's model or dataset: the code that builds it (absent for built-ins: their hashes stay)
        for section, builder in (("model", builder_of(self.model.name)), ("data", dataset_opener(self.data.name))):
            code = code_digest(builder)
            if code:
                key[section]["code"] = code
        timm = zoo.versions(self.model.name)  # timm's code builds a timm: model
        if timm:
            key["versions"]["timm"] = timm.split(".")[0] if not timm.startswith("0.") else ".".join(timm.split(".")[:2])
        return key

    def base_hash(self) -> str:
        return digest(self.base_key())

    def run_hash(self) -> str:
        return digest(self.to_dict())


# base keys added after bases were cached: in a base's key only when set (0, empty)
LATER_KEYS = ("data.resize", "data.mean", "data.std", "train.group_l1")


def major_versions() -> Dict[str, str]:
    """The version parts of torch and torchvision whose change may change a trained base: the major
    version, and the minor one while the major is 0 (semantic versioning's breaking part)."""
    from importlib import metadata

    out = {}
    for name in ("torch", "torchvision"):
        version = metadata.version(name)  # the distribution's, without importing it (torchvision: 1.6 s)
        parts = version.split("+")[0].split(".")
        out[name] = parts[0] if parts[0] != "0" else ".".join(parts[:2])
    return out
