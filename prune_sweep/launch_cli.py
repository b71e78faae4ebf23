"""The ``prune-sweep`` command line (``launch.py``): read and validate a sweep file, print its plan
(``--dry-run``), or run (and resume) it on Ray Tune.

Ray is imported only once a sweep is about to run: ``--dry-run``, a bad flag or a bad sweep file
never import it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from prune_core.cliargs import HelpFormatter, add_version
from prune_core.errors import UNWRITABLE_ERRNOS, ConfigError
from prune_core.sections import parse_overrides
from prune_sweep import resumed
from prune_sweep.checks import check_name
from prune_sweep.expand import MAX_TRIALS, corner_configs, load_sweep, num_trials, trial_configs
from prune_sweep.liveness import driver_marker, exclusive
from prune_sweep.plan import print_plan
from prune_sweep.loggers import LOGGERS, check_logger_packages, installed, with_loggers
from prune_sweep.spec import DEFAULT_SWEEP, PLUGINS_KEY, Sweep, SweepError
from prune_sweep.storage import Store, node_cache


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage block
        raise SweepError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prune-sweep", description="Run a pruning sweep (a YAML file) with Ray Tune.",
                formatter_class=HelpFormatter)
    a = p.add_argument
    add_version(p, "prune_sweep")
    a("sweep", nargs="?", help="sweep file (default: sweeps/quickstart.yaml)")
    a("--address", help="an existing Ray cluster, or auto: the one this machine belongs to (default: none, "
      "a local Ray started for this sweep)")
    a("--storage", help="where experiments go: a path, NFS mount, s3:// or gs:// URI (default: the sweep's)")
    a("--shared-storage", action="store_true", help="the local --storage path is mounted on every node (NFS)")
    a("--name", help="experiment name (default: the sweep's; smoke tests add -smoke)")
    a("--resume", action="store_true", help="continue the interrupted sweep <storage>/<name> as it was stored at "
      "launch; a sweep file edited since is shown as a difference and refused")
    a("--stored", action="store_true", help="with --resume: continue the stored sweep although the sweep file was "
      "edited since launch (Tune cannot change a started sweep's trials: launch an edited one with --name)")
    a("--set", action="append", default=[], metavar="KEY=VALUE",
      help="change a base key, repeatable, e.g. finetune.epochs=5 (default: none)")
    a("--plugin", action="append", default=[], metavar="MODULE|FILE.py",
      help="import a module or .py file that registers methods, criteria, models or datasets, here and in every "
      "Ray worker; repeatable, added to the sweep's plugins: (default: none)")
    a("--seeds", type=int, metavar="N", help="run every configuration with N seeds (default: the sweep's "
      "seeds, else 1); the analysis reports their mean and standard deviation")
    a("--logger", action="append", metavar="NAME", help="send results to this tracker, repeatable: "
      f"{', '.join(LOGGERS)}, or none; replaces the sweep's loggers (default: the sweep's, else tensorboard)")
    a("--dry-run", action="store_true", help="print the trials and their count; start nothing")
    a("--max-trials", type=_positive, default=MAX_TRIALS, metavar="N",
      help=f"refuse a sweep of more than N trials, counted before they are built (default: {MAX_TRIALS:,})")
    a("--smoke-test", action="store_true", help="tiny epochs and few trials (prune_core.SMOKE), for CI")
    a("--strict", action="store_true", help="exit 1 when any trial errored (otherwise only when trials errored "
      "and none finished)")
    a("--no-quiet-latency", action="store_true",
      help="skip timing every finished trial's base and pruned model again, alone on one node, into latency.json")
    a("--no-dashboard", action="store_true", help="start the local Ray without its dashboard")
    a("-v", "--verbose", action="store_true", help="Ray's and every trial's full output")
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


def _overrides(items: Sequence[str]) -> Dict[str, Any]:
    try:
        return parse_overrides(items, example="finetune.epochs=5")
    except ConfigError as exc:
        raise SweepError(str(exc)) from None


def _experiment(args: argparse.Namespace) -> Tuple[Sweep, Store, Store]:
    """The sweep and its storage; with --resume, the sweep stored in the experiment directory."""
    given, args.sweep = args.sweep, args.sweep or str(DEFAULT_SWEEP)  # given: None when left at the default
    sweep = load_sweep(args.sweep, _overrides(args.set), args.smoke_test, args.seeds, args.plugin, args.max_trials)
    name = check_name(args.name, "--name") if args.name is not None else (
        f"{sweep.name}-smoke" if args.smoke_test else sweep.name)
    storage = Store(args.storage or sweep.storage)
    exp = Store(storage.uri(name))
    if args.stored and not args.resume:
        raise SweepError("--stored: expected with --resume (it continues the stored sweep of an edited file)")
    if args.resume:  # --dry-run too: it shows what --resume would run
        if args.set or args.seeds is not None or args.logger or args.plugin:
            flag = ("--set" if args.set else "--seeds" if args.seeds is not None else "--logger" if args.logger
                    else "--plugin")
            raise SweepError(f"{flag} cannot change a sweep that is resumed; start a new one with --name")
        sweep = resumed.stored_sweep(exp, args.max_trials)
        edited = resumed.check_unchanged(given, exp, args.stored)
        print(resumed.describe(exp, edited, given))
    elif args.logger:
        sweep = with_loggers(sweep, args.logger)
    if not args.dry_run:
        check_logger_packages(sweep)  # before Ray starts
        _check_export_packages(sweep)
    if not args.resume and not args.dry_run and _can_restore(exp):
        raise SweepError(f"{exp.location} already holds a sweep; continue it with --resume or choose another --name")
    sweep = dataclasses.replace(sweep, name=name, storage=storage.location)
    return sweep, storage, exp


def _check_export_packages(sweep: Sweep) -> None:
    """A sweep whose trials export to ONNX (``runtime.export: onnx`` in its base or its space)
    needs onnx and onnxruntime: a missing one is one line before Ray starts, not a failure in
    every trial."""
    values = [sweep.base_flat.get("runtime.export")]
    values += [v for e in sweep.space.get("runtime.export", ()) for v in e.dist.args]
    missing = [m for m in ("onnx", "onnxruntime") if not installed(m)]
    if "onnx" in values and missing:
        raise SweepError(f"runtime.export: onnx needs {' and '.join(missing)}, not installed; "
                         'pip install -e ".[onnx]"')


def _can_restore(exp: Store) -> bool:
    """Whether ``exp`` holds a sweep Tune can continue (Ray is imported here: a sweep will run)."""
    from prune_sweep import driver

    return driver.can_restore(exp)


class CtrlC:
    """Ctrl-C for a running sweep: the first SIGINT stops it so that ``--resume`` continues it, a
    second one exits at once. Ray's processes die with the driver either way: Ray starts them to
    share its fate (``PR_SET_PDEATHSIG``), and with SIGINT blocked, so a terminal's Ctrl-C reaches
    only the driver. Outside the main thread (no signal handlers there) it changes nothing."""

    def __init__(self, at_second: Callable[[], None] = lambda: None) -> None:
        self.caught = False
        self._at_second = at_second  # run before the immediate exit: ends what the sweep started
        self.hint = ""  # how to continue, once the sweep's files exist
        self._previous: Any = None
        self._armed = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> "CtrlC":
        if self._armed:
            self._previous = signal.signal(signal.SIGINT, self._first)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._armed:
            signal.signal(signal.SIGINT, self._previous)

    def _first(self, signum: int, frame: Any) -> None:
        self.caught = True
        signal.signal(signal.SIGINT, self._second)
        raise KeyboardInterrupt

    def _second(self, signum: int, frame: Any) -> None:
        # When Tune caught the first SIGINT, no line said how to continue yet
        line = "interrupted again: exiting at once" if self.caught else (
            "interrupted: exiting at once" + (f"; continue with: {self.hint}" if self.hint else ""))
        os.write(2, f"{line}\n".encode())  # not print(): it may be mid-write, and is not reentrant
        try:
            self._at_second()
        finally:
            os._exit(130)

    def hand_to_tune(self) -> None:
        """Let ``Tuner.fit`` catch the first SIGINT: its handler (``ray.tune.tune._setup_signal_catching``)
        stops the trials, saves the experiment state and makes ``fit`` return normally, after putting
        back the handler it found: this one's second, which then exits at once. Until fit installs
        its handler (well under a second) a SIGINT exits at once too."""
        if self._armed and not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0")):
            signal.signal(signal.SIGINT, self._second)

    def take_back(self) -> None:
        """After ``fit``: Tune's handler stays installed when no SIGINT came; when one came, Tune has
        put back this one's second."""
        if self._armed:
            self.caught = self.caught or signal.getsignal(signal.SIGINT) == self._second
            signal.signal(signal.SIGINT, self._second if self.caught else self._first)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``prune-sweep``: validate a sweep file, train its bases, run (or resume) its trials."""
    try:
        args = build_parser().parse_args(argv)
        sweep, storage, exp = _experiment(args)
    except SweepError as exc:
        print(f"prune-sweep: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the storage cannot be read: a path too long, a folder it may not enter
        if exc.errno not in UNWRITABLE:
            raise
        print(f"prune-sweep: error: {_unwritable(exc, args.storage or '')}", file=sys.stderr)
        return 2
    if args.dry_run:
        print_plan(sweep, exp)
        return 0
    import ray  # a sweep runs: from here on Ray is needed

    from prune_sweep import driver

    driver.quiet_environment(args.verbose)
    with CtrlC(at_second=driver.kill_started_processes) as ctrl_c:
        try:
            started = driver.init_ray(args.address, args.verbose, dashboard=not args.no_dashboard,
                                      plugins=sweep.base.get(PLUGINS_KEY, ()))
        except ConnectionError as exc:
            print(f"prune-sweep: error: --address {args.address}: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            ray.shutdown()  # whatever part of a local Ray had started
            print("interrupted while Ray started; nothing ran", file=sys.stderr)
            return 130
        try:
            if started and not args.address:
                driver.check_resources(sweep)
            driver.check_shared_storage(storage, args.shared_storage)
            with exclusive(exp):  # one launch per experiment directory
                return _run(args, sweep, storage, exp, ctrl_c)
        except SweepError as exc:
            print(f"prune-sweep: error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # the storage cannot be written: full, read-only, a path too long
            full = driver.no_space(exc)
            if full is None and exc.errno not in UNWRITABLE:
                raise
            line = _stopped_full(full, args, sweep, storage, exp) if full else _unwritable(exc, storage.location)
            print(f"prune-sweep: error: {line}", file=sys.stderr)
            return 1 if full else 2
        except ray.exceptions.RayTaskError as exc:  # a base task failed: e.g. the dataset is missing
            cause = str(exc.cause if getattr(exc, "cause", None) else exc).strip().splitlines()
            print(f"prune-sweep: error: base training failed: {cause[-1] if cause else exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # before the sweep was announced
            print("interrupted; nothing ran", file=sys.stderr)
            return 130
        finally:
            if started:
                ray.shutdown()


def _run(args: argparse.Namespace, sweep: Sweep, storage: Store, exp: Store, ctrl_c: CtrlC) -> int:
    from prune_sweep import bases, driver

    configs = trial_configs(sweep) if sweep.search.algorithm != "optuna" else []
    expected = num_trials(sweep)
    hint = _resume_hint(args, sweep, storage)
    ctrl_c.hint = hint
    results, full, tuner = None, None, None
    try:
        restored = args.resume and driver.can_restore(exp)
        if restored:  # first: Tune's saved state is checked (trusted_state) before anything runs
            tuner = driver.restore_tuner(sweep, exp)
        if not args.resume:
            driver.write_experiment_files(sweep, exp)
        bases.record_provenance(sweep, exp, resumed=args.resume)
        print(f"sweep {sweep.name}: {expected} trials, {sweep.search.algorithm} search, "
              f"{sweep.scheduler.name} scheduler -> {exp.location}")
        # bases are checkpointed every epoch: one stopped here continues from its last on --resume
        bases.prepare_bases(sweep, configs or corner_configs(sweep), storage, exp, quiet=not args.verbose)
        if not restored:  # a new sweep, or one stopped while its bases trained, before Tune saved any state
            tuner = driver.make_tuner(sweep, configs, storage, exp, args.verbose)
        ctrl_c.hand_to_tune()
        with driver_marker(exp):  # <exp>/.driver.json: analyze.py tells running trials from interrupted ones
            results = driver.fit(tuner, exp)  # a resumed state is read through the allowlist
        ctrl_c.take_back()
        full = driver.storage_full()  # a trial failed for want of space: the sweep stopped, resumably
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # the driver's write failed, or a base task's (a RayTaskError): a full disk?
        # after a stop for want of space, Tune's result grid can fail on what the full disk left
        full = (driver.storage_full() if tuner is not None else None) or driver.full_disk(exc, storage.location)
        if full is None:
            raise
    if full is not None:
        print(f"prune-sweep: error: {_stopped_full(full, args, sweep, storage, exp)}", file=sys.stderr)
        return 1
    if ctrl_c.caught or results is None:
        print(f"interrupted: {_counts(exp, expected)}; continue with: {hint}", file=sys.stderr)
        return 130
    if not exp.local and sweep.search.algorithm == "optuna":
        db = node_cache(exp.location).parent / "optuna.db"
        if db.exists():
            exp.put(db, "optuna.db")
    if not args.no_quiet_latency:
        try:
            driver.quiet_latency(sweep, exp)
        except KeyboardInterrupt:  # every trial is done: the summary still follows
            print("latency: quiet pass interrupted; latency.json not written")
    return driver.summarize(results, exp, expected, hint, strict=args.strict)


UNWRITABLE = UNWRITABLE_ERRNOS  # a missing storage folder is no error: it is created


def _resume_hint(args: argparse.Namespace, sweep: Sweep, storage: Store) -> str:
    return f"python launch.py {args.sweep} --resume" + (f" --name {sweep.name}" if args.name else "") + (
        " --smoke-test" if args.smoke_test else "") + (f" --storage {storage.location}" if args.storage else "")


def _counts(exp: Store, expected: int) -> str:
    from prune_sweep import driver

    finished = driver.finished_trials(exp)
    return "trial counts unknown" if finished is None else f"{finished} trials finished, {expected - finished} unfinished"


def _stopped_full(full: str, args: argparse.Namespace, sweep: Sweep, storage: Store, exp: Store) -> str:
    """The line a full disk ends a launch with (README, "Reliability"). Before ``sweep.yaml`` was
    written (files go through a temporary name: it is whole or absent) there is nothing to resume:
    the same command starts again."""
    hint = _resume_hint(args, sweep, storage)
    try:
        if not exp.exists("sweep.yaml"):
            hint = hint.replace(" --resume", "", 1)
    except OSError:
        pass
    return (f"storage full ({full}); stopped: {_counts(exp, num_trials(sweep))} (each continues from its last "
            f"checkpoint); free space in {storage.location}, then continue with: {hint}")


def _unwritable(exc: OSError, location: str) -> str:
    """One line for storage this user cannot use: a path too long (ENAMETOOLONG), read-only, not a
    folder. pyarrow's message repeats the whole path: the line names it once, shortened."""
    path = exc.filename or location or "?"
    shown = path if len(path) <= 160 else f"{path[:100]}...{path[-40:]} ({len(path):,} characters)"
    return f"storage {shown}: {os.strerror(exc.errno)}; choose another --storage or --name"
