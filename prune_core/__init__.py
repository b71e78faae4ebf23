"""prune_core: one pruning experiment, from base training to measured Pareto coordinates.

>>> from prune_core import ExperimentConfig, run
>>> cfg = ExperimentConfig.from_dict({"prune.method": "channel", "prune.ratio": 0.5})
>>> metrics = run(cfg)  # doctest: +SKIP

What a launcher (prune_sweep, launch.py, analyze.py) may use, and nothing else
(``tests/test_architecture.py`` checks it):

- the names of this package, in ``_PUBLIC``: ``run``, ``ensure_base`` (-> ``BaseInfo``),
  ``base_path``, ``LEASE_S`` (the lease on a base being trained), ``SMOKE``,
  ``post_prune_training``, ``controllable`` (a method whose trials get control twins),
  ``BASE_KEYS``, ``NotRetryable`` (the base of errors a retry repeats),
  the registries, ``open_dataset`` (a dataset's images before the split, as ``data.*`` configures
  them), the schema's key lists, and for the quiet latency pass ``time_interleaved``,
  ``latency_metrics``, ``build_architecture`` and ``architecture_key``;
- the public (not underscored) names of the modules in ``LAUNCHER_MODULES``: the config and its
  dotted keys (``config``, ``sections``), ``errors``, ``schema``, the command lines' shared
  conventions (``cliargs``), ``provenance``, ``plugins`` (loading and shipping plug-ins) and
  ``yamlfile`` (the bounded YAML reader every sweep, config and stored file goes through).

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
    "LEASE_S": "pipeline",
    "ExperimentConfig": "config",
    "ConfigError": "errors",
    "NotRetryable": "errors",
    "BASE_KEYS": "config",
    "SMOKE": "config",
    "post_prune_training": "pruning",
    "controllable": "controls",
    "METRICS": "schema",
    "METRIC_KEYS": "schema",
    "EPOCH_KEYS": "schema",
    "DETAIL_KEYS": "schema",
    "DATASETS": "data",
    "open_dataset": "data",
    "MODELS": "models",
    "METHODS": "pruning",
    "CRITERIA": "pruning",
    "time_interleaved": "metrics",
    "latency_metrics": "metrics",
    "build_architecture": "pruning",
    "architecture_key": "pruning",
    "ArchitectureMismatch": "pruning",
    # plug-ins (prune_core.plugins) register through the doors the built-ins use
    "accepted_criteria": "pruning",
    "register_method": "pruning",
    "register_criterion": "pruning",
    "register_model": "models",
    "register_dataset": "data",
    "load_plugins": "plugins",
    "PluginError": "plugins",
}
# modules a launcher may import from directly (their public names); the rest only through _PUBLIC
LAUNCHER_MODULES = ("config", "sections", "errors", "schema", "cliargs", "provenance", "plugins", "yamlfile")

__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'prune_core' has no attribute {name!r}")
