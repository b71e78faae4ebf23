"""The ``loggers:`` section of a sweep file (and ``--logger``): which trackers a sweep's results
go to, with their options, checked without Ray; ``prune_sweep.trackers`` turns them into Tune
callbacks."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Mapping, Sequence, Tuple

from prune_sweep.checks import SweepError, as_mapping, fail

if TYPE_CHECKING:
    from prune_sweep.spec import Sweep

# trackers every trial's results go to, and the options each takes (prune_sweep.trackers builds them)
LOGGERS: Dict[str, Tuple[str, ...]] = {"tensorboard": ("per_layer",),
                                       "mlflow": ("tracking_uri", "experiment", "per_layer"),
                                       "wandb": ("project", "group", "mode", "dir", "per_layer")}
DEFAULT_LOGGERS = ("tensorboard",)


@dataclass(frozen=True)
class Logger:
    """One tracker of ``loggers:``: its name and options (``{mlflow: {tracking_uri: ...}}``)."""

    name: str
    options: Tuple[Tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def to_yaml(self) -> Any:
        return {self.name: dict(self.options)} if self.options else self.name


LOGGER_PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}  # optional extras: logger -> its module, named as its extra


def parse_loggers(raw: Any, source: str, where: str = "loggers") -> Tuple[Logger, ...]:
    """``loggers:``: a list of tracker names, each optionally a one-key mapping to its options
    (``[tensorboard, {mlflow: {tracking_uri: file:./mlruns}}]``); ``[]`` turns every tracker off."""
    items = raw if isinstance(raw, list) else [raw]
    out: Dict[str, Logger] = {}
    accepted = ", ".join(LOGGERS)
    for i, item in enumerate(items):
        at = f"{where}[{i}]" if isinstance(raw, list) else where
        if isinstance(item, Mapping) and len(item) == 1:
            name, options = next(iter(item.items()))
        else:
            name, options = item, None
        if not isinstance(name, str) or name not in LOGGERS:
            raise fail(source, at, f"{name!r}: unknown logger; expected one of {accepted}")
        options = as_mapping(options, source, f"{at}.{name}", LOGGERS[name])
        for key, value in options.items():
            if key == "per_layer" and not isinstance(value, bool):
                raise fail(source, f"{at}.{name}.per_layer", f"{value!r}: expected true or false")
            if key != "per_layer" and not isinstance(value, str):
                raise fail(source, f"{at}.{name}.{key}", f"{value!r}: expected a text value")
        if name == "wandb" and options.get("mode", "online") not in ("online", "offline", "disabled"):
            raise fail(source, f"{at}.wandb.mode", f"{options['mode']!r}: expected online, offline or disabled")
        uri = options.get("tracking_uri")
        if isinstance(uri, str) and uri.startswith("file:") and not uri.startswith("file:/"):
            options["tracking_uri"] = "file:" + os.path.abspath(uri[len("file:"):])  # from the launch folder
        if isinstance(options.get("dir"), str):
            options["dir"] = os.path.abspath(options["dir"])
        if name in out:
            raise fail(source, at, f"{name}: named twice; give each logger once")
        out[name] = Logger(name, tuple(options.items()))
    return tuple(out.values())


def with_loggers(sweep: Sweep, names: Sequence[str]) -> Sweep:
    """``--logger``: ``names`` replace the sweep's trackers (``none``: no tracker); a name the
    sweep file lists keeps the options it gives there."""
    if list(names) == ["none"]:
        return dataclasses.replace(sweep, loggers=())
    for name in names:
        if name not in LOGGERS:
            raise SweepError(f"--logger: {name!r}: unknown logger; expected one of {', '.join(LOGGERS)} or none")
    known = {lg.name: lg for lg in sweep.loggers}
    return dataclasses.replace(sweep, loggers=tuple(known.get(n, Logger(n)) for n in dict.fromkeys(names)))


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it; a module blocked in
    ``sys.modules`` or a broken install is not."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_logger_packages(sweep: Sweep) -> None:
    """Every tracker's package is installed (before Ray starts): a missing one is one line naming
    the extra that installs it."""
    for lg in sweep.loggers:
        module = LOGGER_PACKAGES.get(lg.name)
        if module and not installed(module):
            raise SweepError(f"loggers: {lg.name} needs the {module} package, which is not installed; "
                             f"pip install 'prune-sweep[{lg.name}]'")
