"""Run a pruning sweep with Ray Tune: one YAML file in, one experiment directory out.

    python launch.py                                  # sweeps/quickstart.yaml on this machine
    python launch.py sweeps/cifar10_resnet18.yaml --dry-run
    python launch.py sweeps/cifar10_resnet18.yaml --set finetune.epochs=10 --name c10_long
    python launch.py sweeps/quickstart.yaml --resume  # continue an interrupted sweep
    python launch.py sweeps/imagenet_resnet50.yaml --address auto   # on a Ray cluster's head node
    python launch.py --smoke-test                     # tiny epochs and trials, for CI

The sweep file is validated completely before Ray starts: every trial configuration the space can
produce (grid, random) or every corner of it (optuna) is built as a ``prune_core.ExperimentConfig``;
a bad key, value or combination exits with code 2 and one line naming the key.

Before the trials, each distinct base model of the sweep is trained once, as a Ray task with a
trial's resources, into ``<experiment dir>/base_cache`` (``prune_core`` contract 7); every trial,
a resumed sweep and a later sweep in the same storage load it. Trials report every fine-tune epoch
with a checkpoint, so ASHA can stop weak ones and a trial whose node dies resumes from its last
epoch elsewhere. The experiment directory ``<storage>/<name>`` holds ``sweep.yaml`` (the resolved
sweep), ``base.yaml`` (usable as ``python -m prune_core --config base.yaml``), Ray Tune's trial
folders (``params.json`` = the swept keys, ``result.json``, ``error.txt``), ``optuna.db`` for an
Optuna search (``optuna-dashboard sqlite:///<dir>/optuna.db``), and is what ``analyze.py`` reads.

From Python (returns the exit code)::

    import launch
    assert launch.main(["sweeps/quickstart.yaml", "--smoke-test", "--storage", "/tmp/runs"]) == 0
"""

from prune_sweep.launch_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
