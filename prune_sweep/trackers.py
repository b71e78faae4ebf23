"""The trackers a sweep's results go to (``loggers:`` of the sweep file): TensorBoard, MLflow and
Weights & Biases, as Ray Tune's own logger callbacks, next to the CSV and JSON files Tune always
writes (``prune_sweep.results`` reads ``result.json`` and ``params.json``). They are the tuner's
callbacks, so a restored tuner (``--resume``) keeps them.

Each tracker records every trial's swept keys as its hyperparameters and every report as its
metrics, without the per-layer dicts of the final report (``layer_channels_*``,
``layer_params_*``: a hundred scalars per trial) unless the tracker's ``per_layer`` is true.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import numpy as np
# Ray 2.60's only (and documented) home of its MLflow and W&B logger callbacks; nothing else here
# uses ray.air: reports and checkpoints go through ray.tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune.logger.tensorboardx import VALID_SUMMARY_TYPES, TBXLoggerCallback
from ray.tune.utils import flatten_dict
from tensorboardX.summary import hparams as tbx_hparams

from prune_core.schema import DETAIL_KEYS
from prune_sweep.loggers import Logger
from prune_sweep.spec import Sweep
from prune_sweep.storage import Store

PER_LAYER_KEYS = tuple(k for k in DETAIL_KEYS if k.startswith("layer_"))  # {layer name: count} dicts


def without_per_layer(result: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in result.items() if k not in PER_LAYER_KEYS}


class TensorBoardCallback(TBXLoggerCallback):
    """Ray's TensorBoard logger, with the HParams of every trial. Ray records as hyperparameters
    only what a searcher drew (``trial.evaluated_params``), which is empty for the preset points of
    a grid or random sweep; this records the trial's config, which holds exactly the swept keys."""

    def __init__(self, per_layer: bool = False):
        super().__init__()
        self.per_layer = per_layer

    def log_trial_result(self, iteration: int, trial: Any, result: Dict) -> None:
        super().log_trial_result(iteration, trial, result if self.per_layer else without_per_layer(result))

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        # Ray's own method skips the HParams when trial.evaluated_params is empty; the rest is as there
        writer = self._trial_writer.pop(trial, None)
        last = self._trial_result.pop(trial, None)
        if writer is None:
            return
        if last:
            metrics = {k: v for k, v in flatten_dict(last, delimiter="/").items()
                       if isinstance(v, tuple(VALID_SUMMARY_TYPES))}
            hparams = {k: v.item() if isinstance(v, np.generic) else v
                       for k, v in flatten_dict(dict(trial.config)).items()}
            hparams = {k: v for k, v in hparams.items() if isinstance(v, (str, bool, int, float))}
            for summary in tbx_hparams(hparam_dict=hparams, metric_dict=metrics):
                writer.file_writer.add_summary(summary)
        writer.close()


class MLflowCallback(MLflowLoggerCallback):
    """Ray's MLflow logger: one run per trial, its swept keys as params, each report as metrics."""

    def __init__(self, per_layer: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.per_layer = per_layer

    def setup(self, *args: Any, **kwargs: Any) -> None:
        if str(self.tracking_uri).startswith("file:"):
            # MLflow 3 keeps its file store in maintenance mode and refuses it unless told; a file:
            # URI in the sweep (or the default mlruns folder) asks for it
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        super().setup(*args, **kwargs)

    def log_trial_result(self, iteration: int, trial: Any, result: Dict) -> None:
        super().log_trial_result(iteration, trial, result if self.per_layer else without_per_layer(result))


class WandbCallback(WandbLoggerCallback):
    """Ray's W&B logger: one run per trial (a Ray actor each), without the per-layer dicts unless
    ``per_layer``; ``mode`` offline writes the run files only (``wandb sync`` uploads them later)."""

    def __init__(self, per_layer: bool = False, mode: str = "online", **kwargs: Any):
        excludes = [] if per_layer else list(PER_LAYER_KEYS)
        super().__init__(excludes=excludes, mode=mode, **kwargs)
        self.mode = mode

    def setup(self, *args: Any, **kwargs: Any) -> None:
        if self.mode != "online":
            os.environ["WANDB_MODE"] = self.mode  # else Ray asks for an API key
        super().setup(*args, **kwargs)


class TensorBoardOff(TBXLoggerCallback):
    """No TensorBoard files (``loggers`` without tensorboard): Tune adds its own TensorBoard logger
    to a run whose callbacks hold none, so this one stands in for it and writes nothing."""

    def log_trial_start(self, trial: Any) -> None:
        pass

    def log_trial_result(self, iteration: int, trial: Any, result: Dict) -> None:
        pass

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        pass


def make_callbacks(sweep: Sweep, exp: Store) -> List[Any]:
    """Tune's callbacks for the sweep's trackers. Tune adds its CSV and JSON loggers (the files
    ``prune_sweep.results`` reads) itself, and its TensorBoard logger only to a run without one."""
    callbacks = [make_callback(lg, sweep, exp) for lg in sweep.loggers]
    if not any(lg.name == "tensorboard" for lg in sweep.loggers):
        callbacks.append(TensorBoardOff())
    return callbacks


def make_callback(lg: Logger, sweep: Sweep, exp: Store) -> Any:
    per_layer = bool(lg.get("per_layer", False))
    if lg.name == "tensorboard":
        return TensorBoardCallback(per_layer=per_layer)
    if lg.name == "mlflow":
        uri = lg.get("tracking_uri") or default_mlflow_uri(exp)
        return MLflowCallback(per_layer, tracking_uri=uri, experiment_name=lg.get("experiment") or sweep.name,
                              tags={"sweep": sweep.name})
    if lg.name == "wandb":
        kwargs: Dict[str, Any] = {}
        folder = lg.get("dir") or default_wandb_dir(exp)
        if folder:
            os.makedirs(folder, exist_ok=True)
            kwargs["dir"] = folder
        return WandbCallback(per_layer, mode=lg.get("mode", "online"), project=lg.get("project") or sweep.name,
                             group=lg.get("group"), **kwargs)
    raise ValueError(f"unknown logger {lg.name!r}")  # parse_loggers accepts only the names above


def default_mlflow_uri(exp: Store) -> str:
    """``mlruns`` in the experiment directory; with cloud storage, ``mlruns`` where launch.py runs."""
    return "file:" + (exp.path("mlruns") if exp.local else os.path.abspath("mlruns"))


def default_wandb_dir(exp: Store) -> Optional[str]:
    """W&B's run files in the experiment directory (with cloud storage: the trial's own folder)."""
    return exp.path() if exp.local else None
