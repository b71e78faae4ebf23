"""The ``prune-sweep`` command line (``launch.py``): read and validate a sweep file, print its plan
(``--dry-run``), or run (and resume) it on Ray Tune.

Ray is imported only once a sweep is about to run: ``--dry-run``, a bad flag or a bad sweep file
never import it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

import yaml

from prune_core.errors import ConfigError
from prune_core.sections import parse_overrides
from prune_sweep.expand import corner_configs, load_sweep, num_trials, trial_configs, validate
from prune_sweep.liveness import driver_marker
from prune_sweep.plan import print_plan
from prune_sweep.spec import DEFAULT_SWEEP, Sweep, SweepError, parse_sweep
from prune_sweep.storage import Store, node_cache


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage block
        raise SweepError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prune-sweep", description="Run a pruning sweep (a YAML file) with Ray Tune.")
    a = p.add_argument
    a("sweep", nargs="?", default=str(DEFAULT_SWEEP), help="sweep file (default: sweeps/quickstart.yaml)")
    a("--address", help="an existing Ray cluster (auto: the one this machine belongs to)")
    a("--storage", help="where experiments go: a path, NFS mount, s3:// or gs:// URI (default: the sweep's)")
    a("--shared-storage", action="store_true", help="the local --storage path is mounted on every node (NFS)")
    a("--name", help="experiment name (default: the sweep's; smoke tests add -smoke)")
    a("--resume", action="store_true", help="continue the interrupted sweep <storage>/<name>")
    a("--set", action="append", default=[], metavar="KEY=VALUE", help="change a base key, e.g. finetune.epochs=5")
    a("--seeds", type=int, metavar="N", help="run every configuration with N seeds (default: the sweep's "
      "seeds, else 1); the analysis reports their mean and standard deviation")
    a("--dry-run", action="store_true", help="print the trials and their count; start nothing")
    a("--smoke-test", action="store_true", help="tiny epochs and few trials (prune_core.SMOKE), for CI")
    a("--no-quiet-latency", action="store_true",
      help="skip timing every finished trial's base and pruned model again, alone on one node, into latency.json")
    a("--no-dashboard", action="store_true", help="start the local Ray without its dashboard")
    a("-v", "--verbose", action="store_true", help="Ray's and every trial's full output")
    return p


def _overrides(items: Sequence[str]) -> Dict[str, Any]:
    try:
        return parse_overrides(items, example="finetune.epochs=5")
    except ConfigError as exc:
        raise SweepError(str(exc)) from None


def _experiment(args: argparse.Namespace) -> Tuple[Sweep, Store, Store]:
    """The sweep and its storage; with --resume, the sweep stored in the experiment directory."""
    sweep = load_sweep(args.sweep, _overrides(args.set), args.smoke_test, args.seeds)
    name = args.name or (f"{sweep.name}-smoke" if args.smoke_test else sweep.name)
    storage = Store(args.storage or sweep.storage)
    exp = Store(storage.uri(name))
    if args.resume and not args.dry_run:
        if args.set or args.seeds is not None:
            raise SweepError(f"{'--set' if args.set else '--seeds'} cannot change a sweep that is resumed; "
                             "start a new one with --name")
        text = exp.read_text("sweep.yaml")
        if text is None or not _can_restore(exp):
            raise SweepError(f"--resume: {exp.location} holds no interrupted sweep to continue")
        stored = parse_sweep(yaml.safe_load(text), exp.uri("sweep.yaml"))
        validate(stored)
        sweep = stored
    elif not args.dry_run and _can_restore(exp):
        raise SweepError(f"{exp.location} already holds a sweep; continue it with --resume or choose another --name")
    sweep = dataclasses.replace(sweep, name=name, storage=storage.location)
    return sweep, storage, exp


def _can_restore(exp: Store) -> bool:
    """Whether ``exp`` holds a sweep Tune can continue (Ray is imported here: a sweep will run)."""
    from prune_sweep import driver

    return driver.can_restore(exp)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``prune-sweep``: validate a sweep file, train its bases, run (or resume) its trials."""
    try:
        args = build_parser().parse_args(argv)
        sweep, storage, exp = _experiment(args)
    except SweepError as exc:
        print(f"prune-sweep: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print_plan(sweep, exp)
        return 0
    import ray  # a sweep runs: from here on Ray is needed

    from prune_sweep import driver

    driver.quiet_environment(args.verbose)
    try:
        started = driver.init_ray(args.address, args.verbose, dashboard=not args.no_dashboard)
    except ConnectionError as exc:
        print(f"prune-sweep: error: --address {args.address}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    try:
        if started and not args.address:
            driver.check_resources(sweep)
        return _run(args, sweep, storage, exp)
    except SweepError as exc:
        print(f"prune-sweep: error: {exc}", file=sys.stderr)
        return 2
    except ray.exceptions.RayTaskError as exc:  # a base task failed: e.g. the dataset is missing
        cause = str(exc.cause if getattr(exc, "cause", None) else exc).strip().splitlines()
        print(f"prune-sweep: error: base training failed: {cause[-1] if cause else exc}", file=sys.stderr)
        return 1
    finally:
        if started:
            ray.shutdown()


def _run(args: argparse.Namespace, sweep: Sweep, storage: Store, exp: Store) -> int:
    from prune_sweep import driver

    driver.check_shared_storage(storage, args.shared_storage)
    configs = trial_configs(sweep) if sweep.search.algorithm != "optuna" else []
    expected = num_trials(sweep)
    if not args.resume:
        driver.write_experiment_files(sweep, exp)
    print(f"sweep {sweep.name}: {expected} trials, {sweep.search.algorithm} search, "
          f"{sweep.scheduler.name} scheduler -> {exp.location}")
    driver.prepare_bases(sweep, configs or corner_configs(sweep), storage, exp)
    if args.resume:
        tuner = driver.restore_tuner(sweep, exp)
    else:
        tuner = driver.make_tuner(sweep, configs, storage, exp, args.verbose)
    hint = f"python launch.py {args.sweep} --resume" + (f" --name {sweep.name}" if args.name else "") + (
        " --smoke-test" if args.smoke_test else "") + (f" --storage {storage.location}" if args.storage else "")
    try:
        with driver_marker(exp):  # <exp>/.driver.json: analyze.py tells running trials from interrupted ones
            results = tuner.fit()
    except KeyboardInterrupt:
        print(f"interrupted; continue with: {hint}", file=sys.stderr)
        return 130
    if not exp.local and sweep.search.algorithm == "optuna":
        db = node_cache(exp.location).parent / "optuna.db"
        if db.exists():
            exp.put(db, "optuna.db")
    if not args.no_quiet_latency:
        driver.quiet_latency(sweep, exp)
    return driver.summarize(results, exp, expected, hint)
