"""prune_core: one pruning experiment, from base training to measured Pareto coordinates.

>>> from prune_core import ExperimentConfig, run
>>> cfg = ExperimentConfig.from_dict({"prune.method": "channel", "prune.ratio": 0.5})
>>> metrics = run(cfg)  # doctest: +SKIP

What a launcher uses: ``run``, ``ensure_base`` (-> ``BaseInfo``), ``base_path``, ``SMOKE``,
``post_prune_training``, ``BASE_KEYS``, and ``NotRetryable`` (the base of errors a retry repeats).
Plug-ins register a method, criterion, model or dataset through ``register_method``,
``register_criterion``, ``register_model`` and ``register_dataset``, the doors the built-ins use;
``runtime.plugins`` (``load_plugins``) imports them wherever a config is built.
Attributes load lazily, so ``import prune_core.schema`` (what analyze.py needs) stays light.
"""

from importlib import import_module

_PUBLIC = {
    "run": "pipeline",
    "ensure_base": "pipeline",
    "BaseInfo": "pipeline",
    "base_path": "pipeline",
    "ExperimentConfig": "config",
    "ConfigError": "errors",
    "NotRetryable": "errors",
    "BASE_KEYS": "config",
    "SMOKE": "config",
    "post_prune_training": "pruning",
    "METRICS": "schema",
    "METRIC_KEYS": "schema",
    "EPOCH_KEYS": "schema",
    "DETAIL_KEYS": "schema",
    "DATASETS": "data",
    "MODELS": "models",
    "METHODS": "pruning",
    "CRITERIA": "pruning",
    # plug-ins (prune_core.plugins) register through the doors the built-ins use
    "register_method": "pruning",
    "register_criterion": "pruning",
    "register_model": "models",
    "register_dataset": "data",
    "load_plugins": "plugins",
    "PluginError": "plugins",
}

__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'prune_core' has no attribute {name!r}")
