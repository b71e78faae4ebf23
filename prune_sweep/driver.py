"""The driver's side of a sweep on Ray Tune: Ray itself, checks of the cluster and storage, the
experiment files, the searcher, scheduler, trainable and tuner, the stop on a full disk, the
progress table and the closing summary. Training each distinct base once is ``prune_sweep.bases``;
what runs on the workers is ``prune_sweep.trial``."""

from __future__ import annotations

import logging
import os
import re
import signal
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import ray
import yaml
from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from prune_core.errors import FULL_ERRNOS, FULL_FREE_BYTES, free_bytes
from prune_core.sections import nest
from prune_sweep import resumed, trusted_state
from prune_sweep.bases import PROGRESS_PERIOD_S, threads
from prune_sweep.expand import OptunaSpace, corner_configs, num_trials, trial_base, trial_epochs
from prune_sweep.latency_pass import run_quiet_pass
from prune_sweep.results import read_tune_state
from prune_sweep.spec import Sweep, SweepError
from prune_sweep.storage import Store, cache_dir, is_uri, node_cache
from prune_sweep.trackers import make_callbacks
from prune_sweep.trial import TrialSetup, run_trial, trial_dirname

# as an error's text reads: Python's OSError, pyarrow's ("[errno 28] No space left on device")
NO_SPACE = re.compile(r"\[errno (28|122)\]|No space left on device|Disk quota exceeded", re.IGNORECASE)
USER_ATTRS = ("acc_final", "latency_ms_final", "speedup")  # a finished trial's, shown by optuna-dashboard


class SweepOptunaSearch(OptunaSearch):
    """OptunaSearch whose trial configs hold exactly the swept keys, and which tells Optuna that a
    trial without a final report (stopped early by ASHA) was pruned: its early accuracy stays off
    the study's Pareto front. For optuna-dashboard, the study's objectives carry their metric names,
    and each trial its config, test accuracy and latency as user attributes."""

    def __init__(self, *args: Any, keys: Sequence[str] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._keys = tuple(keys)

    def suggest(self, trial_id: str) -> Optional[Dict]:
        params = super().suggest(trial_id)
        if not isinstance(params, dict):
            return params
        return {k: params[k] for k in self._keys}

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and result is not None:
            # Tune passes the result flattened: the config's keys as config/<key>
            config = {k: result.get(f"config/{k}", (result.get("config") or {}).get(k)) for k in self._keys}
            ot_trial.set_user_attr("config", config)
            for key in USER_ATTRS:
                if result.get(key) is not None and result.get("stage") == "done":
                    ot_trial.set_user_attr(key, result[key])
        if result is not None and result.get("stage") != "done":
            result = None  # no value + no error = PRUNED in Optuna
        super().on_trial_complete(trial_id, result, error)


class TrialTable(tune.CLIReporter):
    """One table of trials (status, swept values, epoch, accuracy, dense FLOPs kept), printed when a
    trial changes status or epoch, at most every ``PROGRESS_PERIOD_S``."""

    def __init__(self, params: Mapping[str, str], total: int):
        super().__init__(metric_columns={"epoch": "epoch", "val_acc": "val acc", "acc_final": "test acc",
                                         "flops_kept_dense": "FLOPs kept"},
                         parameter_columns=dict(params), total_samples=total, max_progress_rows=40,
                         max_error_rows=10, print_intermediate_tables=True)
        self._shown: Tuple = ()
        self._shown_at = 0.0

    def should_report(self, trials: List[Any], done: bool = False) -> bool:
        state = tuple((t.trial_id, t.status, (t.last_result or {}).get("epoch")) for t in trials)
        if done:
            return True
        if state == self._shown or time.time() - self._shown_at < PROGRESS_PERIOD_S:
            return False
        self._shown, self._shown_at = state, time.time()
        return True

    def report(self, trials: List[Any], done: bool, *sys_info: str) -> None:
        # Private CLIReporter methods, because no public one returns the table's text unprinted and
        # its "Result logdir:" line (Tune's local staging directory; results go to storage) must go;
        # tests/test_sweeps.py pins the Ray version they were checked against.
        text = self._progress_str(trials, done)
        self._print("\n".join(ln for ln in text.split("\n") if not ln.startswith("Result logdir:")))


def _short_name(key: str) -> str:
    return {"prune.method": "method", "prune.criterion": "criterion", "prune.ratio": "ratio",
            "prune.scope": "scope", "finetune.lr": "lr"}.get(key, key)


def quiet_environment(verbose: bool) -> None:
    """Ray's legacy reporter (our one table) instead of its new console output; no log spam."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ.setdefault("RAY_DEDUP_LOGS", "0" if verbose else "1")
    if not verbose:  # a trial's error is listed at the end, not dumped again when Ray drops a failed result
        os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    # a forced experiment-state save after every epoch checkpoint keeps --resume exact; not a problem
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # quiet: errored trials are listed, with their reasons, at the end
    level = logging.INFO if verbose else logging.CRITICAL
    for name in ("ray", "ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(level)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


def init_ray(address: Optional[str], verbose: bool, dashboard: bool, plugins: Sequence[str] = ()) -> bool:
    """Start (or join) Ray; returns whether this call started it. Prints the dashboard's address.

    Joining a cluster, the job carries the sweep's plug-in files to every node (``runtime_env``'s
    ``py_modules``; ``prune_core.plugins.shipped_paths``), where each trial's config imports them.
    A local Ray's workers read them where they are: a job-level runtime_env would slow every
    worker's start (ARCHITECTURE.md, facts)."""
    if ray.is_initialized():
        return False
    level = logging.INFO if verbose else logging.ERROR
    if address:
        from prune_core.plugins import shipped_paths

        shipped = shipped_paths(plugins)
        ctx = ray.init(address=address, log_to_driver=verbose, logging_level=level,
                       runtime_env={"py_modules": shipped} if shipped else None)
    else:
        # "local": a Ray of its own, never one another program started on this machine (without
        # it ray.init joins the cluster named in /tmp/ray/ray_current_cluster, even a dead one)
        ctx = ray.init(address="local", include_dashboard=dashboard, dashboard_host="127.0.0.1",
                       log_to_driver=verbose, logging_level=level)
    url = getattr(ctx, "dashboard_url", None)
    if url:
        token = Path.home() / ".ray" / "auth_token"
        note = f" (it asks for the token in {token})" if token.exists() else ""
        print(f"dashboard: http://{url}{note}")
    return True


def kill_started_processes() -> None:
    """SIGKILL every process this driver started, at any depth, for a second Ctrl-C: a local Ray's
    gcs_server and raylet die with the driver anyway (Ray starts them to share its fate), but the
    raylet's agents (ray::DashboardAgent, ray::RuntimeEnvAgent) outlived a killed raylet by more
    than 15 s. A joined cluster's processes are not the driver's children and are left alone."""
    import psutil  # shipped inside Ray (ray/thirdparty_files), which is imported by now

    for proc in psutil.Process().children(recursive=True):
        try:
            proc.kill()
        except psutil.Error:  # gone already
            pass


def alive_nodes() -> int:
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def check_resources(sweep: Sweep) -> None:
    """On a Ray this launch started (no autoscaler), a trial must fit, or it would wait forever."""
    have = ray.cluster_resources()
    cpu, gpu = have.get("CPU", 0), have.get("GPU", 0)
    if sweep.resources.cpu > cpu or sweep.resources.gpu > gpu:
        raise SweepError(f"resources: a trial needs {sweep.resources.cpu:g} CPU and {sweep.resources.gpu:g} GPU; "
                         f"this machine has {cpu:g} CPU and {gpu:g} GPU (run it on a cluster with --address)")


def check_shared_storage(storage: Store, shared: bool) -> None:
    nodes = alive_nodes()
    if storage.local and nodes > 1 and not shared:
        raise SweepError(f"storage {storage.location} is a local path but the cluster has {nodes} nodes; "
                         "use s3://... or gs://..., or pass --shared-storage if every node mounts it (NFS)")


def write_experiment_files(sweep: Sweep, exp: Store) -> None:
    """``sweep.yaml`` (the resolved sweep), the sweep file's text (``resumed.SOURCE_FILE``, what
    ``--resume`` compares an edited file with) and ``base.yaml`` (what the sweep fixes, for
    ``python -m prune_core --config base.yaml``), before any trial starts."""
    exp.write_text("sweep.yaml", yaml.safe_dump(sweep.to_yaml(), sort_keys=False))
    resumed.save_source(sweep, exp)
    base = dict(sweep.base)
    if exp.local:
        base["runtime.cache_dir"] = cache_dir(exp.location)  # the CLI reuses the sweep's bases
    exp.write_text("base.yaml", yaml.safe_dump(nest(base), sort_keys=False))


def picklable_nsga2(**kwargs: Any) -> Any:
    """Optuna's NSGAIISampler as Tune can pickle it, with ``tuner.pkl`` and each experiment
    checkpoint (``prune_sweep.samplers``)."""
    from prune_sweep.samplers import PicklableNSGAII

    return PicklableNSGAII(**kwargs)


def make_searcher(sweep: Sweep, configs: List[Dict[str, Any]], exp: Store, local_dir: Path) -> Any:
    s = sweep.search
    if s.algorithm != "optuna":
        return BasicVariantGenerator(points_to_evaluate=configs, max_concurrent=s.max_concurrent)
    import optuna

    if s.sampler == "nsga2":
        sampler = picklable_nsga2(seed=s.seed, **({"population_size": s.population_size} if s.population_size else {}))
    else:
        sampler = optuna.samplers.TPESampler(seed=s.seed)
    db = (Path(exp.path()) if exp.local else local_dir) / "optuna.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    metrics, modes = [m for m, _ in s.objectives], [m for _, m in s.objectives]
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")  # one engine for the searcher and the names
    searcher = SweepOptunaSearch(OptunaSpace(sweep), keys=sweep.keys,
                                 metric=metrics if len(metrics) > 1 else metrics[0],
                                 mode=modes if len(modes) > 1 else modes[0], sampler=sampler, study_name=sweep.name,
                                 storage=storage, points_to_evaluate=[dict(p) for p in s.points_to_evaluate] or None)
    # the searcher has created the study: name its objectives (optuna-dashboard shows "Objective 0" otherwise)
    with warnings.catch_warnings():  # experimental since Optuna 3.2, and what optuna-dashboard reads
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.load_study(study_name=sweep.name, storage=storage).set_metric_names(metrics)
    return searcher


def make_scheduler(sweep: Sweep, configs: Sequence[Mapping[str, Any]]) -> Any:
    sch = sweep.scheduler
    if sch.name == "fifo":
        return tune.schedulers.FIFOScheduler()
    epochs = sch.max_t or trial_epochs(sweep, configs)
    if sch.name == "mo_asha":  # on every search objective, rungs strictly below the last epoch as ASHA's
        from prune_sweep.moasha import MOASHAScheduler

        return MOASHAScheduler(sweep.search.objectives, time_attr="epoch", max_t=max(sch.grace_period, epochs - 1),
                               grace_period=sch.grace_period, reduction_factor=sch.reduction_factor)
    # Rungs strictly below the last epoch, and no stop at max_t: a trial that survives every rung
    # always reaches its final report (Ray's ASHA stops trials *at* max_t otherwise).
    return tune.schedulers.ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max",
                                         max_t=max(sch.grace_period, epochs - 1), grace_period=sch.grace_period,
                                         reduction_factor=sch.reduction_factor, stop_last_trials=False)


def make_trainable(sweep: Sweep, exp: Store) -> Any:
    setup = TrialSetup(base=trial_base(sweep), exp=exp.location, threads=threads(sweep))
    trainable = tune.with_parameters(run_trial, setup=setup)
    return tune.with_resources(trainable, {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu})


def no_space(error: Any) -> Optional[str]:
    """The line of ``error`` (an exception, or an error's text) saying a disk is full (ENOSPC) or
    a quota is used up (EDQUOT); None when it says nothing of the kind. Follows Ray's ``cause``
    and Python's exception chain."""
    seen, exc = set(), error
    while isinstance(exc, BaseException) and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
            return " ".join(str(exc).split())
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    text = error if isinstance(error, str) else str(error or "")
    lines = [" ".join(ln.split()) for ln in text.splitlines() if NO_SPACE.search(ln)]
    return lines[-1] if lines else None


def full_disk(error: Any, location: str) -> Optional[str]:
    """``no_space(error)``; else, when the local storage at ``location`` is full (less than
    ``prune_core.errors.FULL_FREE_BYTES`` free), the error's last line and the space left. On a
    full disk not every failure says so: torch's zip writer says "unexpected pos", and Tune's
    result grid, unpickling a trial's error file that the full disk left empty, raised
    ``EOFError: Ran out of input`` (ARCHITECTURE.md, facts)."""
    line = no_space(error)
    if line is not None or is_uri(location):
        return line
    free = free_bytes(location)
    if free is None or free >= FULL_FREE_BYTES:
        return None
    lines = [" ".join(ln.split()) for ln in str(error or "").splitlines() if ln.strip()]
    what = lines[-1] if lines else ""
    if isinstance(error, BaseException):
        what = f"{type(error).__name__}: {what}" if what else type(error).__name__
    return f"{what}; {free // 1024} KiB left in {location}"


class StopWhenStorageFull(tune.Callback):
    """Stops the sweep at the first trial that fails for want of space: every trial after it would
    fail the same way, each after redoing its pruning. It stops as Ctrl-C does, through Tune's own
    interrupt (SIGUSR1, which ``Tuner.fit`` catches in the main thread): the experiment state is
    saved with the running trials unfinished, so ``--resume`` continues each from its last
    checkpoint once there is space. ``storage_full()`` tells the launcher why it stopped."""

    reason: Optional[str] = None  # class-wide: a restored tuner holds an unpickled copy of this callback

    def __init__(self, location: str = ""):
        self.location = location  # the storage, whose free space tells when an error file is empty

    def on_trial_error(self, iteration: int, trials: List[Any], trial: Any, **info: Any) -> None:
        self._check(trial)

    def on_trial_recover(self, iteration: int, trials: List[Any], trial: Any, **info: Any) -> None:
        self._check(trial)

    def _check(self, trial: Any) -> None:
        path = trial.error_file  # on the driver; error.txt appends each failure: read the latest
        try:
            latest = Path(path).read_text().rsplit("Failure # ", 1)[-1] if path else ""
        except OSError:
            latest = ""
        location = getattr(self, "location", "")  # "" in a tuner pickled before callbacks had it
        # a full disk can leave the error file empty, or the failure's header alone: then the
        # storage's free space tells
        empty = not latest.partition("\n")[2].strip() and location
        line = full_disk(f"its error file {path} is empty", location) if empty else no_space(latest)
        if line is None or StopWhenStorageFull.reason is not None:
            return
        StopWhenStorageFull.reason = f"trial {trial.trial_id}: {line}"
        if callable(signal.getsignal(signal.SIGUSR1)):  # Tune's handler; never the default, which kills
            signal.raise_signal(signal.SIGUSR1)


def storage_full() -> Optional[str]:
    """Why the last ``fit`` stopped for want of space (``StopWhenStorageFull``), or None."""
    return StopWhenStorageFull.reason


def make_tuner(sweep: Sweep, configs: List[Dict[str, Any]], storage: Store, exp: Store, verbose: bool,
               filesystem: Any = None) -> Any:
    total = num_trials(sweep)
    optuna = sweep.search.algorithm == "optuna"
    tune_config = tune.TuneConfig(
        search_alg=make_searcher(sweep, configs, exp, node_cache(exp.location).parent),
        scheduler=make_scheduler(sweep, configs if not optuna else corner_configs(sweep)),
        num_samples=total,
        max_concurrent_trials=(sweep.search.max_concurrent or None) if optuna else None,
        reuse_actors=True,  # same resources for every trial: 8 short trials 8.2 s -> 1.9 s (ARCHITECTURE.md)
        trial_dirname_creator=trial_dirname)
    params = {k: _short_name(k) for k in sweep.keys}
    StopWhenStorageFull.reason = None
    run_config = tune.RunConfig(
        name=sweep.name, storage_path=storage.location if filesystem is None else storage.path(),
        storage_filesystem=filesystem, callbacks=[StopWhenStorageFull(storage.location), *make_callbacks(sweep, exp)],
        failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # the last epoch is all a restart needs
        progress_reporter=TrialTable(params, total), verbose=2 if verbose else 1)
    # grid and random trials are preset points; Tune checks each preset key against the space
    space = {k: tune.choice(list(dict.fromkeys(c[k] for c in configs))) for k in sweep.keys} if configs else {}
    return tune.Tuner(make_trainable(sweep, exp), param_space=space, tune_config=tune_config, run_config=run_config)


def can_restore(exp: Store) -> bool:
    """Whether ``exp`` holds a sweep Tune can continue."""
    return tune.Tuner.can_restore(exp.location)


def finished_trials(exp: Store) -> Optional[int]:
    """Trials of the saved experiment state that ``--resume`` will not run again (done, or stopped
    early by the scheduler); None when that state cannot be read. After an interrupted ``fit`` the
    result grid cannot tell: Tune marks the trials it stopped for the interruption terminated, after
    saving them as pending."""
    try:
        if not can_restore(exp):
            return 0  # stopped before Tune saved anything
        state = read_tune_state(Path(exp.location)) if exp.local else None  # its JSON alone: no pickle
        if state is not None:
            return sum(t.status == "TERMINATED" for t in state.trials.values())
        with trusted_state.guarded(exp):  # the experiment state's pickles, through the allowlist
            trials = tune.ExperimentAnalysis(exp.location).trials
        return sum(t.status == "TERMINATED" for t in trials)
    except Exception:  # after Ctrl-C the count is a courtesy; the line saying how to continue is not
        return None


def restore_tuner(sweep: Sweep, exp: Store) -> Any:
    """The interrupted sweep in ``exp``: its unfinished and errored trials run again. ``tuner.pkl``
    and the experiment state are read through the allowlist (``trusted_state``); a refused file is a
    ``SweepError`` naming it."""
    StopWhenStorageFull.reason = None
    trainable = make_trainable(sweep, exp)
    with trusted_state.guarded(exp):
        return tune.Tuner.restore(exp.location, trainable=trainable, resume_unfinished=True, resume_errored=True)


def fit(tuner: Any, exp: Store) -> Any:
    """``tuner.fit()``; a restored tuner's controller reads the saved state (experiment state,
    searcher, callbacks) through the allowlist (``trusted_state.guarded_resume``)."""
    with trusted_state.guarded_resume(exp):
        return tuner.fit()


def quiet_latency(sweep: Sweep, exp: Store) -> Optional[Dict[str, Any]]:
    """Time every finished trial's base and pruned model again, alone on one node
    (``prune_sweep.latency_pass``), with the trials' thread count; a failure is reported in one line
    and leaves the sweep's results as they are."""
    try:
        return run_quiet_pass(exp, gpu=sweep.resources.gpu > 0, threads=threads(sweep),
                              device=trial_base(sweep)["runtime.device"])
    except (ray.exceptions.RayError, ValueError, OSError) as exc:
        lines = [ln for ln in str(getattr(exc, "cause", None) or exc).strip().splitlines() if ln.strip()]
        print(f"latency: quiet pass failed: {lines[-1] if lines else type(exc).__name__}")
        return None


def summarize(results: Any, exp: Store, expected: int, resume_hint: str, strict: bool = False) -> int:
    """Counts, the reasons of errored trials, where the results are and what to run next.
    Exit code 0 when any trial finished (or none errored), else 1; with ``strict`` (``--strict``)
    1 when any trial errored."""
    done = stopped = 0
    errors = []
    for r in results:
        metrics = r.metrics or {}
        if r.error is not None:
            lines = [ln.strip() for ln in str(r.error).strip().splitlines() if ln.strip()]
            tid = metrics.get("trial_id") or Path(str(r.path)).name
            errors.append(f"  {tid}: {lines[-1] if lines else type(r.error).__name__}")
        elif metrics.get("stage") == "done":
            done += 1
        else:
            stopped += 1
    unfinished = len(results) - results.num_terminated - results.num_errors + max(0, expected - len(results))
    print(f"trials: {done} finished, {stopped - min(stopped, unfinished)} stopped early by the scheduler, "
          f"{len(errors)} errored" + (f", {unfinished} unfinished" if unfinished else ""))
    for line in errors[:20]:
        print(line)
    if unfinished:
        print(f"continue with: {resume_hint}")
    print(f"results: {exp.location}")
    where = exp.location if exp.local else f"<a local copy of {exp.location}>"
    print(f"next:    python analyze.py {where}")
    return 1 if errors and (strict or not done) else 0
