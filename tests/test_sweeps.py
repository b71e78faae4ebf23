"""Sweep files, their validation and the trials they produce: no Ray is started here."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import ray
import yaml

from prune_core import ExperimentConfig
from prune_core.sections import parse_overrides
from prune_core.pruning import accepted_criteria
from prune_sweep.driver import SweepOptunaSearch, make_scheduler, make_searcher
from prune_sweep.expand import OptunaSpace, base_configs, load_sweep, num_trials, trial_configs, trial_epochs
from prune_sweep.launch_cli import main
from prune_sweep.spec import DEFAULT_SWEEP, SWEEPS_DIR, SweepError, parse_sweep
from prune_sweep.storage import Store, base_rel, is_uri

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted(SWEEPS_DIR.glob("*.yaml"))
FAMILIES = {"channel", "kernel", "intra_kernel", "imp", "snip"}

GOOD = {
    "name": "t",
    "base": {"data": {"name": "mnist5k"}, "model.name": "resnet20"},
    "space": {"prune.method": {"grid": ["channel", "imp"]},
              "prune.ratio": {"grid": [0.3, 0.5]},
              "prune.criterion": [{"grid": ["l1", "taylor"], "when": {"prune.method": ["channel"]}}]},
}


def write(tmp_path: Path, sweep: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def with_(**changes) -> dict:
    """GOOD with top-level keys replaced; ``space__KEY`` / ``base__KEY`` replace one entry."""
    sweep = copy.deepcopy(GOOD)
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            sweep.setdefault(section, {})[sub.replace("_", ".", 1)] = value
        else:
            sweep[section] = value
    return sweep


# ---------------------------------------------------------------------------------------------
# the shipped sweeps


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_shipped_sweep_validates_and_dry_runs(path, capsys):
    assert main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    sweep = load_sweep(path)
    assert out.rstrip().endswith(f"{num_trials(sweep)} trials")
    assert (sweep.storage if is_uri(sweep.storage) else str(Path(sweep.storage).resolve())) in out
    assert not ray.is_initialized()


def test_dry_run_names_the_trackers_the_sweep_would_log_to(capsys):
    assert main([str(DEFAULT_SWEEP), "--dry-run"]) == 0
    assert "results logged by Tune (CSV, JSON) and tensorboard\n" in capsys.readouterr().out
    assert main([str(DEFAULT_SWEEP), "--dry-run", "--logger", "none"]) == 0
    assert "results logged by Tune (CSV, JSON)\n" in capsys.readouterr().out
    assert main([str(DEFAULT_SWEEP), "--dry-run", "--logger", "mlflow", "--logger", "tensorboard"]) == 0
    assert "results logged by Tune (CSV, JSON) and mlflow, tensorboard\n" in capsys.readouterr().out


def test_the_four_required_sweeps_are_shipped():
    assert {"quickstart", "cifar10_resnet18", "flowers102_imp_snip", "imagenet_resnet50"} <= {p.stem for p in SWEEPS}


def test_quickstart_covers_every_method_family_on_mnist5k_cpu():
    sweep = load_sweep(DEFAULT_SWEEP)
    cfg = sweep.base_config()
    assert (cfg.data.name, cfg.model.name, cfg.runtime.device, sweep.resources.gpu) == ("mnist5k", "resnet20", "cpu", 0)
    configs = trial_configs(sweep)
    assert {c["prune.method"] for c in configs} == FAMILIES
    assert len({tuple(c.items()) for c in configs}) == len(configs)  # conditions leave no duplicates
    for c in configs:
        assert c["prune.criterion"] in accepted_criteria(c["prune.method"])
    smoke = trial_configs(load_sweep(DEFAULT_SWEEP, smoke_test=True))
    assert sorted(c["prune.method"] for c in smoke) == sorted(FAMILIES)


def test_headline_sweeps_sweep_what_the_seed_studies_compared():
    c10 = load_sweep(SWEEPS_DIR / "cifar10_resnet18.yaml")
    configs = trial_configs(c10)
    assert {c["prune.method"] for c in configs} == {"channel", "kernel", "intra_kernel"}
    assert {c["prune.scope"] for c in configs} == {"local", "global"}
    assert len({c["finetune.lr"] for c in configs}) > 1 and len({c["prune.ratio"] for c in configs}) > 2
    assert c10.resources.gpu > 0
    flowers = load_sweep(SWEEPS_DIR / "flowers102_imp_snip.yaml")
    assert {c["prune.method"] for c in trial_configs(flowers)} == {"imp", "snip"}
    assert flowers.base_config().model.name == "resnet18"
    imagenet = load_sweep(SWEEPS_DIR / "imagenet_resnet50.yaml")
    assert imagenet.search.algorithm == "optuna" and len(imagenet.search.objectives) == 2
    assert is_uri(imagenet.storage)


def test_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    assert config["provider"]["type"] == "aws"
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert workers and all(t["node_config"]["InstanceType"].startswith("g5.") for t in workers)
    assert any("pip install" in c and "prune-sweep" in c for c in config["setup_commands"])
    assert any(Path(local).resolve() == ROOT for local in raw["file_mounts"].values())  # sweeps/ go along
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu_worker"]["min_worker"] = 1  # a typo Ray must refuse
    from jsonschema import ValidationError  # what Ray's validator raises

    with pytest.raises(ValidationError, match="min_worker"):
        validate_config(prepare_config(broken))


NO_RAY = "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray was imported'"


def run_python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter at the repository root, as ``python launch.py`` runs."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_dry_run_never_imports_ray():
    done = run_python("import runpy, sys\n"
                      "sys.argv = ['launch.py', 'sweeps/quickstart.yaml', '--dry-run']\n"
                      "try:\n    runpy.run_path('launch.py', run_name='__main__')\n"
                      "except SystemExit as exc:\n    code = exc.code\n"
                      f"{NO_RAY}\n"
                      "assert code == 0, code\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("trials")


def test_help_and_argument_errors_load_neither_ray_nor_torch():
    for args, expected in ((["--help"], 0), (["--no-such-flag"], 2)):
        done = run_python("import sys\n"
                          "from prune_sweep.launch_cli import main\n"
                          f"try:\n    code = main({args!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
                          "heavy = [m for m in ('ray', 'torch', 'optuna') if m in sys.modules]\n"
                          "assert not heavy, heavy\n"
                          f"assert code == {expected}, code\n")
        assert done.returncode == 0, done.stderr


def test_reading_and_validating_every_shipped_sweep_never_imports_ray():
    done = run_python("import sys\n"
                      "from prune_sweep.expand import load_sweep, validate\n"
                      "from prune_sweep.spec import SWEEPS_DIR\n"
                      "for path in sorted(SWEEPS_DIR.glob('*.yaml')):\n    validate(load_sweep(path))\n"
                      f"{NO_RAY}\n")
    assert done.returncode == 0, done.stderr


def test_the_progress_table_was_checked_against_this_ray():
    assert ".".join(ray.__version__.split(".")[:2]) == "2.60", (
        f"ray {ray.__version__}: prune_sweep.driver.TrialTable.report calls CLIReporter's private "
        "_progress_str and _print (and drops its 'Result logdir:' line); check they still exist and "
        "behave the same in this Ray, then update the version here")


def test_a_cloud_store_names_paths_without_its_scheme(tmp_path):
    store = Store(f"file://{tmp_path}/exp")  # a fresh store: its filesystem not opened yet
    assert store.path(base_rel("abc")) == f"{tmp_path}/exp/base_cache/abc/base.pt"
    assert store.uri("sweep.yaml") == f"file://{tmp_path}/exp/sweep.yaml"


def test_base_cache_layout_is_prune_cores(tmp_path):
    from prune_core import base_path

    cfg = ExperimentConfig.from_dict({"runtime.cache_dir": str(tmp_path / "exp" / "base_cache")})
    assert base_path(cfg) == tmp_path / "exp" / base_rel(cfg.base_hash())


# ---------------------------------------------------------------------------------------------
# trials


def test_grid_expands_conditions_and_fills_inactive_keys(tmp_path):
    sweep = load_sweep(write(tmp_path, GOOD))
    configs = trial_configs(sweep)
    assert len(configs) == 2 * 2 + 2  # channel x 2 criteria x 2 ratios, imp x 2 ratios
    assert all(list(c) == ["prune.method", "prune.ratio", "prune.criterion"] for c in configs)
    assert {c["prune.criterion"] for c in configs if c["prune.method"] == "imp"} == {"l1"}  # imp's default


def test_seeds_repeat_every_configuration_with_consecutive_seeds(tmp_path):
    path = write(tmp_path, with_(base={"runtime.seed": 5, "model.name": "resnet20"}, seeds=3))
    sweep = load_sweep(path)
    configs = trial_configs(sweep)
    assert len(configs) == 3 * (2 * 2 + 2) and sweep.keys[-1] == "runtime.seed"
    assert [c["runtime.seed"] for c in configs[:6]] == [5, 6, 7, 5, 6, 7]
    assert configs[0] == {**configs[1], "runtime.seed": 5}  # one configuration, side by side
    assert len(base_configs(sweep, configs)) == 3  # each seed trains its own base
    assert len(trial_configs(load_sweep(path, seeds=1))) == 6  # --seeds replaces the file's value
    assert parse_sweep(sweep.to_yaml(), "stored").seeds == 3  # the stored sweep resumes with its seeds


@pytest.mark.parametrize("raw,cli,message", [
    (with_(seeds=0), None, r"seeds: 0: expected an integer >= 1"),
    (with_(seeds=2, space__runtime_seed={"grid": [0, 1]}), None, r"seeds: 2: runtime.seed is already swept"),
    (with_(search={"algorithm": "optuna", "num_samples": 2}, space={"prune.ratio": {"uniform": [0.1, 0.5]}}), 2,
     r"--seeds: 2: .*grid or random"),
])
def test_bad_seeds_are_one_line_errors(tmp_path, raw, cli, message):
    with pytest.raises(SweepError, match=message):
        load_sweep(write(tmp_path, raw), seeds=cli)


def test_an_equal_budget_sets_every_trials_total_epochs(tmp_path):
    raw = with_(base={"model.name": "resnet20", "train.epochs": 4, "prune.rewind_epoch": 1}, budget={"epochs": 20},
                space={"prune.method": {"grid": ["channel", "snip", "imp"]}, "prune.ratio": {"grid": [0.5]}})
    sweep = load_sweep(write(tmp_path, raw))
    assert sweep.base["prune.budget_epochs"] == 20
    assert parse_sweep(sweep.to_yaml(), "stored").base["prune.budget_epochs"] == 20
    # most epochs after pruning: SNIP's 20 from scratch (channel fine-tunes 16, IMP 4 x 4 levels)
    assert trial_epochs(sweep, trial_configs(sweep)) == 20
    with pytest.raises(SweepError, match=r"budget.epochs: 0: expected a whole number of epochs >= 1"):
        load_sweep(write(tmp_path, {**raw, "budget": {"epochs": 0}}))
    with pytest.raises(SweepError, match=r"budget.steps: unknown key; expected one of epochs"):
        load_sweep(write(tmp_path, {**raw, "budget": {"steps": 3}}))
    with pytest.raises(SweepError, match=r"budget.epochs=3: expected more than the base's 4 epochs"):
        load_sweep(write(tmp_path, {**raw, "budget": {"epochs": 3}}))


def test_controls_add_a_twin_of_each_channel_trial_once_per_architecture(tmp_path):
    raw = with_(controls=["scratch", "narrow"], space__finetune_kd_alpha=[{"grid": [0.0, 0.5],
                                                                           "when": {"prune.method": ["channel"]}}])
    sweep = load_sweep(write(tmp_path, raw))
    assert sweep.controls == ("scratch_e", "scratch_b", "narrow")
    configs = trial_configs(sweep)
    pruned = [c for c in configs if not c["prune.control"]]
    twins = [c for c in configs if c["prune.control"]]
    assert len(pruned) == 2 * 2 * 2 + 2  # channel x 2 criteria x 2 ratios x 2 kd_alpha, imp x 2 ratios
    # one twin per arm and channel architecture: kd_alpha (a fine-tune key) is not part of it
    assert len(twins) == 3 * 2 * 2 and all(c["prune.method"] == "channel" for c in twins)
    assert {c["finetune.kd_alpha"] for c in twins} == {0.0}
    assert configs[:len(pruned)] == pruned  # the planned trials first, their controls after
    assert len(base_configs(sweep, configs)) == 1  # controls prune the same base
    assert parse_sweep(sweep.to_yaml(), "stored").controls == sweep.controls  # a resume keeps them
    with pytest.raises(SweepError, match=r"controls: 'thin': expected a list of scratch, scratch_e, scratch_b, narrow"):
        load_sweep(write(tmp_path, with_(controls=["thin"])))
    with pytest.raises(SweepError, match=r"controls: .*scheduler fifo"):
        load_sweep(write(tmp_path, with_(controls=["narrow"], scheduler={"name": "asha"})))
    with pytest.raises(SweepError, match=r"controls: prune.control is set too"):
        load_sweep(write(tmp_path, with_(controls=["narrow"], space__prune_control={"grid": ["narrow"]})))
    with pytest.raises(SweepError, match=r"controls: no trial removes channels"):
        load_sweep(write(tmp_path, with_(controls=["narrow"], space__prune_method={"grid": ["imp"]},
                                         space__prune_criterion={"grid": ["l1", "l2"]})))


def test_a_search_must_name_which_flops_it_minimises(tmp_path):
    raw = with_(search={"algorithm": "optuna", "num_samples": 2, "objectives": {"val_acc": "max", "flops_kept": "min"}},
                space={"prune.ratio": {"uniform": [0.1, 0.5]}})
    with pytest.raises(SweepError, match=r"objectives.flops_kept: ambiguous; .*flops_kept_dense.*flops_kept_effective"):
        load_sweep(write(tmp_path, raw))
    raw["search"]["objectives"] = {"val_acc": "max", "flops_kept_effective": "min"}
    assert dict(load_sweep(write(tmp_path, raw)).search.objectives) == {"val_acc": "max", "flops_kept_effective": "min"}
    assert dict(load_sweep(write(tmp_path, with_())).search.objectives) == {"val_acc": "max", "flops_kept_dense": "min"}


def test_random_search_is_reproducible_and_draws_num_samples(tmp_path):
    raw = with_(search={"algorithm": "random", "num_samples": 7, "seed": 3},
                space__prune_ratio={"uniform": [0.1, 0.6]})
    a = trial_configs(load_sweep(write(tmp_path, raw)))
    b = trial_configs(load_sweep(write(tmp_path, raw)))
    assert a == b and len(a) == 7
    assert all(0.1 <= c["prune.ratio"] < 0.6 for c in a)


def test_bases_are_counted_by_base_hash(tmp_path):
    raw = with_(space__runtime_seed={"grid": [0, 1, 2]})
    sweep = load_sweep(write(tmp_path, raw))
    configs = trial_configs(sweep)
    assert len(configs) == 18 and len(base_configs(sweep, configs)) == 3


def test_resolved_sweep_round_trips(tmp_path):
    sweep = load_sweep(write(tmp_path, GOOD), overrides={"finetune.epochs": 4}, smoke_test=True)
    again = parse_sweep(yaml.safe_load(yaml.safe_dump(sweep.to_yaml())), "sweep.yaml")
    assert again.base == sweep.base and again.smoke_test
    assert trial_configs(again) == trial_configs(sweep)


def test_sweep_files_and_set_accept_the_seed_spellings(tmp_path):
    raw = with_(space={"prune.method": {"grid": ["channel", "intra-kernel"]},
                       "prune.pattern": [{"grid": ["fixed", "magnitude"], "when": {"prune.method": ["intra-kernel"]}}]})
    sweep = load_sweep(write(tmp_path, raw), overrides=parse_overrides(["model.name=vgg16_bn"]))
    assert sweep.base["model.name"] == "vgg16"
    configs = trial_configs(sweep)
    assert [(c["prune.method"], c["prune.pattern"]) for c in configs] == [
        ("channel", "library"), ("intra_kernel", "fixed"), ("intra_kernel", "magnitude")]


def test_a_yaml_boolean_a_base_key_cannot_take_is_one_line(tmp_path):
    text = yaml.safe_dump(with_(base={"data.name": "mnist5k", "prune.pattern": "WORD"})).replace("WORD", "off")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    assert "base: prune.pattern=False: expected one of fixed, library, magnitude" in str(err.value)
    assert "\n" not in str(err.value)


def test_overrides_and_smoke_change_the_base(tmp_path):
    from prune_core import SMOKE

    sweep = load_sweep(write(tmp_path, GOOD), overrides={"finetune.epochs": 4}, smoke_test=True)
    assert sweep.base["finetune.epochs"] == 4
    assert all(sweep.base[k] == v for k, v in SMOKE.items() if k != "finetune.epochs")
    assert [c["prune.method"] for c in trial_configs(sweep)] == ["channel", "imp"]


def test_optuna_space_draws_only_valid_conditional_trials(tmp_path):
    raw = with_(search={"algorithm": "optuna", "num_samples": 30},
                space={"prune.method": {"choice": ["channel", "kernel", "imp"]},
                       "prune.criterion": [{"choice": ["l1", "l2", "taylor", "bn_scale"],
                                            "when": {"prune.method": ["channel"]}},
                                           {"choice": ["l1", "l2"], "when": {"prune.method": ["kernel"]}}],
                       "prune.ratio": {"uniform": [0.2, 0.7]},
                       "prune.scope": {"choice": ["local", "global"]},
                       # LAMP ranks squared magnitudes globally: two conditions at once
                       "prune.lamp": [{"choice": [False, True],
                                       "when": {"prune.scope": ["global"], "prune.criterion": ["l2"]}}],
                       "finetune.lr": {"loguniform": [0.001, 0.1]}})
    sweep = load_sweep(write(tmp_path, raw))
    space = OptunaSpace(sweep)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.NSGAIISampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        config = space(trial)
        assert list(config) == list(sweep.keys)
        assert config["prune.criterion"] in accepted_criteria(config["prune.method"])
        assert not (config["prune.lamp"] and (config["prune.scope"] == "local" or config["prune.criterion"] != "l2"))
        ExperimentConfig.from_dict({**sweep.base, **config})
        study.tell(trial, [config["prune.ratio"], config["finetune.lr"]])
    names = {n for t in study.trials for n in t.params}
    assert "prune.criterion[prune.method=channel]" in names and "prune.criterion" not in names


def test_searcher_hands_tune_the_swept_keys_only(tmp_path):
    raw = with_(search={"algorithm": "optuna", "num_samples": 3},
                space={"prune.method": {"choice": ["channel", "kernel"]},
                       "prune.criterion": [{"choice": ["l1", "taylor"], "when": {"prune.method": ["channel"]}},
                                           {"choice": ["l1", "l2"], "when": {"prune.method": ["kernel"]}}]})
    sweep = load_sweep(write(tmp_path, raw))
    search = SweepOptunaSearch(OptunaSpace(sweep), keys=sweep.keys, metric=["val_acc", "flops_kept_dense"],
                                      mode=["max", "min"])
    for i in range(4):
        assert set(search.suggest(f"t{i}")) == {"prune.method", "prune.criterion"}
    search.on_trial_complete("t0", {"stage": "done", "val_acc": 90.0, "flops_kept_dense": 0.5})
    search.on_trial_complete("t1", {"stage": "finetune", "val_acc": 50.0, "flops_kept_dense": 0.5})  # stopped early
    states = [t.state for t in search._ot_study.trials[:2]]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]


POINTS_SPACE = {"prune.ratio": {"uniform": [0.2, 0.8]}, "prune.scope": {"choice": ["local", "global"]},
                "prune.criterion": [{"choice": ["l1", "taylor"], "when": {"prune.scope": ["local"]}},
                                    {"choice": ["l1"], "when": {"prune.scope": ["global"]}}]}


def test_points_to_evaluate_are_the_searchs_first_trials_and_the_sampler_draws_the_rest(tmp_path):
    raw = with_(search={"algorithm": "optuna", "num_samples": 4,
                        "points_to_evaluate": [{"prune.ratio": 0.8}, {"prune.ratio": 0.2, "prune.scope": "global"}]},
                space=POINTS_SPACE)
    sweep = load_sweep(write(tmp_path, raw))
    assert parse_sweep(sweep.to_yaml(), "stored").search.points_to_evaluate == sweep.search.points_to_evaluate
    search = make_searcher(sweep, [], Store(str(tmp_path / "exp")), tmp_path)
    first, second, third = (search.suggest(f"t{i}") for i in range(3))
    assert first["prune.ratio"] == 0.8 and first["prune.scope"] in ("local", "global")
    assert (second["prune.ratio"], second["prune.scope"], second["prune.criterion"]) == (0.2, "global", "l1")
    assert 0.2 <= third["prune.ratio"] <= 0.8 and third["prune.ratio"] not in (0.2, 0.8)


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_the_searcher_pickles_as_tune_stores_it_and_draws_after_loading(tmp_path, sampler):
    """Tune pickles the searcher with the tuner (tuner.pkl) before the first trial: Optuna 5's
    NSGAIISampler holds a threading.Lock, and every nsga2 sweep failed there."""
    from ray import cloudpickle

    raw = with_(search={"algorithm": "optuna", "num_samples": 4, "sampler": sampler}, space=POINTS_SPACE)
    sweep = load_sweep(write(tmp_path, raw))
    search = make_searcher(sweep, [], Store(str(tmp_path / "exp")), tmp_path)
    again = cloudpickle.loads(cloudpickle.dumps(search))
    assert 0.2 <= again.suggest("t0")["prune.ratio"] <= 0.8
    assert 0.2 <= search.suggest("t1")["prune.ratio"] <= 0.8
    search.save(str(tmp_path / "searcher.pkl"))  # what each experiment checkpoint does, with plain pickle
    assert (tmp_path / "searcher.pkl").stat().st_size > 0


@pytest.mark.parametrize("search,message", [
    ({"algorithm": "random", "points_to_evaluate": [{"prune.ratio": 0.5}]},
     r"search.points_to_evaluate\[0\]: needs search.algorithm optuna"),
    ({"algorithm": "optuna", "points_to_evaluate": [{"prune.ratio": 0.9}]},
     r"search.points_to_evaluate\[0\].prune.ratio: 0.9: outside its space \{'uniform': \[0.2, 0.8\]\}"),
    ({"algorithm": "optuna", "points_to_evaluate": [{"prune.scope": "half"}]},
     r"search.points_to_evaluate\[0\].prune.scope: 'half': outside its space"),
    ({"algorithm": "optuna", "points_to_evaluate": [{"finetune.lr": 0.1}]},
     r"search.points_to_evaluate\[0\].finetune.lr: not a swept key; expected one of prune.ratio"),
    ({"algorithm": "optuna", "points_to_evaluate": [{"prune.criterion": "l1"}]},
     r"search.points_to_evaluate\[0\].prune.criterion: swept under a condition"),
    ({"algorithm": "optuna", "points_to_evaluate": {"prune.ratio": 0.5}},
     r"search.points_to_evaluate: .*expected a list of mappings"),
])
def test_bad_points_to_evaluate_are_one_line_errors(tmp_path, search, message):
    with pytest.raises(SweepError, match=message):
        load_sweep(write(tmp_path, with_(search=search, space=POINTS_SPACE)))


def test_asha_counts_fine_tune_epochs_and_lets_trials_finish(tmp_path):
    sweep = load_sweep(write(tmp_path, with_(scheduler={"name": "asha", "grace_period": 1},
                                                    base__finetune_epochs=4)))
    scheduler = make_scheduler(sweep, trial_configs(sweep))
    assert (scheduler._time_attr, scheduler._metric, scheduler._mode) == ("epoch", "val_acc", "max")
    milestones = [m for m, _ in scheduler._brackets[0]._rungs]
    assert max(milestones) < 4  # no rung at the last epoch: a surviving trial reaches its final report


def test_trial_epochs_count_what_trains_after_pruning(tmp_path):
    sweep = load_sweep(write(tmp_path, with_(base__train_epochs=9, base__finetune_epochs=2)))
    assert trial_epochs(sweep, [{"prune.method": "channel"}]) == 2  # the fine-tune
    assert trial_epochs(sweep, [{"prune.method": "snip"}]) == 9  # the base budget from scratch
    # IMP's last level retrains with the base schedule from its rewind epoch: 9 - 3
    assert trial_epochs(sweep, [{"prune.method": "imp", "prune.rewind_epoch": 3}]) == 6
    assert trial_epochs(sweep, [{"prune.method": "channel"}, {"prune.method": "imp"}]) == 8


# ---------------------------------------------------------------------------------------------
# bad sweep files: exit 2, one line naming the key, before Ray starts

BAD = {
    "unknown_space_key": (with_(space__prune_ratios={"grid": [0.5]}), "prune.ratios"),
    "unknown_base_key": (with_(base__finetune_lrate=0.1), "finetune.lrate"),
    "unknown_top_level_key": (with_(scheduller="fifo"), "scheduller"),
    "unknown_method": (with_(space__prune_method={"grid": ["channel", "prune_all"]}), "prune.method"),
    "unknown_criterion": (with_(space__prune_criterion={"grid": ["l1", "magic"]}), "prune.criterion"),
    "unknown_dataset": (with_(base={"data.name": "cifar11"}), "data.name"),
    "unknown_model": (with_(base={"model.name": "resnet19"}), "model.name"),
    "ratio_one": (with_(space__prune_ratio={"grid": [0.5, 1.0]}), "prune.ratio"),
    "ratio_range_reaches_one": (with_(space__prune_ratio={"uniform": [0.5, 1.0]}), "prune.ratio"),
    "ratio_negative": (with_(space__prune_ratio={"choice": [-0.1, 0.5]}), "prune.ratio"),
    "imp_with_bn_scale": (with_(space__prune_criterion={"grid": ["l1", "bn_scale"]}), "prune.criterion"),
    "lamp_with_local_scope": (with_(space__prune_lamp={"grid": [True]}), "prune.lamp"),
    "distribution_one_bound": (with_(space__finetune_lr={"uniform": [0.5]}), "finetune.lr"),
    "distribution_reversed": (with_(space__finetune_lr={"loguniform": [0.1, 0.001]}), "finetune.lr"),
    "distribution_log_of_zero": (with_(space__finetune_lr={"loguniform": [0, 0.1]}), "finetune.lr"),
    "distribution_unknown": (with_(space__finetune_lr={"normal": [0.01, 0.001]}), "finetune.lr"),
    "distribution_empty_grid": (with_(space__prune_ratio={"grid": []}), "prune.ratio"),
    "distribution_fixed_value": (with_(space__prune_ratio=0.5), "prune.ratio"),
    "randint_of_floats": (with_(space__finetune_epochs={"randint": [1.5, 4]}), "finetune.epochs"),
    "grid_with_optuna": (with_(search={"algorithm": "optuna"}), "prune.method"),
    "overlapping_conditions": (with_(space__prune_criterion=[{"grid": ["l1"], "when": {"prune.method": ["channel"]}},
                                                              {"grid": ["l2"], "when": {"prune.method": ["channel"]}}]),
                               "prune.criterion"),
    "condition_on_unknown_key": (with_(space__prune_criterion=[{"grid": ["l1"], "when": {"prune.methd": ["imp"]}}]),
                                 "prune.methd"),
    "conditions_in_a_cycle": (with_(space={"prune.method": {"grid": ["channel"], "when": {"prune.scope": ["local"]}},
                                           "prune.scope": {"grid": ["local"], "when": {"prune.method": ["channel"]}}}),
                              "space."),
    "swept_reserved_key": (with_(space__runtime_workdir={"grid": ["/tmp/x"]}), "runtime.workdir"),
    "bad_algorithm": (with_(search={"algorithm": "bayes"}), "search.algorithm"),
    "bad_objective": (with_(search={"algorithm": "optuna", "objectives": {"acc_final": "max"}}), "search.objectives"),
    "bad_scheduler": (with_(scheduler={"name": "pbt"}), "scheduler.name"),
    "bad_resources": (with_(resources={"cpu": 1, "gpus": 1}), "resources.gpus"),
    "bad_max_failures": (with_(max_failures="twice"), "max_failures"),
    "bad_name": (with_(name="my sweep/1"), "name"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sweep_exits_2_with_one_line_naming_the_key(case, tmp_path, capsys):
    raw, key = BAD[case]
    if case == "unknown_criterion":
        raw["space"]["prune.method"] = {"grid": ["channel"]}
    assert main([str(write(tmp_path, raw)), "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prune-sweep: error: ") and err.count("\n") == 1, err
    assert key in err
    assert not ray.is_initialized()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, key", [
    (["--set", "prune.ratio=0.5"], "prune.ratio"),  # swept keys are not base keys
    (["--set", "finetune.lrate=0.1"], "finetune.lrate"),
    (["--set", "finetune.epochs"], "KEY=VALUE"),
    (["--set", "data.name=cifar11"], "data.name"),
    (["--bogus-flag"], "--bogus-flag"),
])
def test_bad_flags_exit_2_with_one_line(argv, key, tmp_path, capsys):
    assert main([str(write(tmp_path, GOOD)), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err
    assert not ray.is_initialized()


def test_unreadable_and_malformed_files_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing.yaml")]) == 2
    (tmp_path / "broken.yaml").write_text("name: t\nspace: {prune.ratio: {grid: [0.5}\n")
    assert main([str(tmp_path / "broken.yaml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "missing.yaml" in err[0] and "not YAML" in err[1]


def test_resume_without_a_sweep_to_continue_exits_2(tmp_path, capsys):
    assert main([str(write(tmp_path, GOOD)), "--resume", "--storage", str(tmp_path / "runs")]) == 2
    assert "no interrupted sweep" in capsys.readouterr().err
    assert not ray.is_initialized()
