"""``python -m prune_core``: one experiment from the command line, with the first seed project's flags.

    python -m prune_core --dataset mnist5k --model resnet20 --pruning-method channel \\
        --pruning-ratio 0.5 --global-pruning --finetune-epochs 3
    python -m prune_core --config base.yaml --set prune.method=kernel --set prune.ratio=0.3

Results go to ``<output-dir>/<dataset>/<model>_<method>_<dataset>_<timestamp>/``: config.yaml,
provenance.json (versions, device, commit: ``prune_core.provenance``), metrics.json, flops.txt, training curves, per-layer parameter and channel plots, and with
``--save-model`` the base and rebuilt models.

Exit codes (README, "Exit codes"): 0 done; 1 an unexpected error, a bug (its traceback is printed,
then one line); 2 a bad config or usage, including ``runtime.device=cuda`` with no CUDA device and a
``--model-path`` that is not a saved model; 3 a dataset's files are missing; 4 the loss diverged;
5 the rebuilt model does not compute what the pruned one does; 6 ONNX Runtime's outputs of the
exported model (``--export onnx``) differ from PyTorch's; 7 a file of the run cannot be written (a
full disk or used-up quota anywhere; a path under ``--output-dir`` or the base cache that is
missing, read-only or too long); 130 interrupted. Every code but 1
is one line on stderr, ``prune-core: error: ...``. A run directory that holds anything computed
stays, and the line says where it is; one holding only its config.yaml and provenance.json is
removed.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import yaml

from . import checkpoints, provenance
from .cliargs import HelpFormatter, add_version
from .config import SMOKE, ConfigError, ExperimentConfig, parse_overrides
from .data import DATASETS
from .errors import FULL_ERRNOS, UNWRITABLE_ERRNOS, Diverged, ExportMismatch, RebuildMismatch
from .models import MODELS
from .plugins import load_plugins
from .pruning import CRITERIA, METHODS
from .sections import canonical, name_label

# exit codes (README, "Exit codes"); 2 and 130 are argparse's and the shell's conventions
EXIT_UNEXPECTED, EXIT_CONFIG, EXIT_DATA, EXIT_DIVERGED, EXIT_REBUILD, EXIT_INTERRUPTED = 1, 2, 3, 4, 5, 130
EXIT_EXPORT = 6
EXIT_STORAGE = 7
# a path the run cannot write: missing, read-only, not a folder, too long (ENOSPC, EDQUOT: errors.FULL_ERRNOS)
UNWRITABLE = (errno.ENOENT, *UNWRITABLE_ERRNOS)
NOT_COMPUTED = ("config.yaml", provenance.FILE)  # what a run directory holds before any work
LR_FLAGS = {"train.lr": "--learning-rate", "finetune.lr": "--finetune-lr"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage block
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prune-core", description="Train, prune, rebuild, fine-tune and measure one network.",
                formatter_class=HelpFormatter)
    a = p.add_argument
    add_version(p, "prune_core")
    a("--config", metavar="FILE.yaml", help="settings as a YAML file (nested or dotted keys); flags override it "
      "(default: none, the config's defaults)")
    a("--set", action="append", default=[], metavar="KEY=VALUE",
      help="any config key, repeatable, e.g. prune.lamp=true; overrides --config and the flags (default: none)")
    a("--plugin", dest="runtime.plugins", action="append", metavar="MODULE|FILE.py",
      help="import a module or .py file that registers methods, criteria, models or datasets, repeatable; "
      "its names are then accepted by the flags below")
    g = p.add_argument_group("basic")
    g.add_argument("--dataset", dest="data.name", type=partial(canonical, "data.name"), choices=sorted(DATASETS), metavar="NAME",
                   help="dataset: %(choices)s (your own function: --set data.name=MODULE:CALLABLE)")
    g.add_argument("--data-root", dest="data.root", metavar="DIR",
                   help="directory holding the dataset (torchvision's files, an imagefolder tree)")
    g.add_argument("--download", dest="data.download", action="store_const", const=True,
                   help="let torchvision download a missing dataset (needs the internet)")
    g.add_argument("--model", dest="model.name", type=_model_name, metavar="NAME",
                   help=f"model: {', '.join(sorted(MODELS))} (vgg16 has batch norm; vgg16_bn is read as vgg16), "
                   "or torchvision:<builder>, timm:<name>, <module or file.py>:<callable>")
    g.add_argument("--weights", dest="model.weights", metavar="NAME",
                   help="start base training from torchvision's weights: DEFAULT, IMAGENET1K_V1, ... (resnet18, "
                   "resnet50, vgg16, mobilenet_v3_large and every torchvision: model; the file in torch hub's cache, "
                   "or --download), or a timm: model's (DEFAULT from timm's cache, or a file)")
    g.add_argument("--output-dir", dest="runtime.output_dir", metavar="DIR",
                   help="results go to DIR/<dataset>/<model>_<method>_<dataset>_<timestamp>/")
    g.add_argument("--seed", dest="runtime.seed", type=int, metavar="N",
                   help="seed of initialisation, data order and pruning")
    g = p.add_argument_group("training")
    g.add_argument("--base-train-epochs", dest="train.epochs", type=int, metavar="N", help="epochs of base training")
    g.add_argument("--learning-rate", dest="train.lr", type=float, metavar="LR", help="base training's learning rate")
    g.add_argument("--batch-size", dest="data.batch_size", type=int, metavar="N", help="training batch size")
    g.add_argument("--weight-decay", dest="train.weight_decay", type=float, metavar="WD",
                   help="base training's weight decay (never on norm and bias parameters)")
    g.add_argument("--patience", dest="train.patience", type=int, metavar="N",
                   help="early-stopping patience in epochs (0 = off)")
    g = p.add_argument_group("pruning")
    g.add_argument("--pruning-method", dest="prune.method", type=partial(canonical, "prune.method"), choices=sorted(METHODS),
                   metavar="METHOD", help="pruning method: %(choices)s (a hyphen reads as an underscore: intra-kernel)")
    g.add_argument("--criterion", dest="prune.criterion", type=partial(canonical, "prune.criterion"), choices=sorted(CRITERIA),
                   metavar="NAME", help="importance criterion: %(choices)s; the method must allow it (default: the "
                   "method's first, l2 with LAMP)")
    g.add_argument("--pruning-ratio", dest="prune.ratio", type=float, metavar="R",
                   help="fraction of the method's unit removed, in [0, 1)")
    g.add_argument("--global-pruning", dest="prune.scope", action="store_const", const="global",
                   help="one ranking across layers instead of the same ratio per layer")
    g.add_argument("--finetune-epochs", dest="finetune.epochs", type=int, metavar="N",
                   help="epochs of fine-tuning after the rebuild")
    g.add_argument("--finetune-lr", dest="finetune.lr", type=float, metavar="LR", help="fine-tuning's learning rate")
    g = p.add_argument_group("execution")
    g.add_argument("--no-cuda", dest="runtime.device", action="store_const", const="cpu",
                   help="run on the CPU even where CUDA is available")
    g.add_argument("--no-fp16", dest="runtime.amp", action="store_const", const=False,
                   help="no mixed precision on CUDA: train in fp32")
    g.add_argument("--num-workers", dest="data.num_workers", type=int, metavar="N",
                   help="DataLoader workers, for datasets too big for memory")
    g.add_argument("--resume", dest="runtime.resume", action="store_const", const=True,
                   help="continue the latest unfinished run of this configuration from its last epoch")
    g.add_argument("--skip-base-training", action="store_true", help="start from --model-path instead of training")
    g.add_argument("--skip-pruning", action="store_true", help="no pruning: the dense baseline")
    g.add_argument("--eval-only", action="store_true", help="only evaluate the model at --model-path")
    g.add_argument("--save-model", dest="runtime.save_model", action="store_const", const=True,
                   help="also keep the base model's state dict in the run directory")
    g.add_argument("--model-path", dest="model.pretrained_path", metavar="FILE",
                   help="a saved state dict (or, with --eval-only, a rebuilt model) to start from")
    g.add_argument("--export", dest="runtime.export", choices=["onnx"],
                   help="also export the rebuilt model to <run dir>/<model>_rebuilt.onnx (with --eval-only: beside "
                   "--model-path, as <file>.onnx), check ONNX Runtime against PyTorch and time it on the CPU (needs "
                   "pip install -e \".[onnx]\")")
    g.add_argument("--smoke-test", action="store_true", help="a few steps of everything, for CI")
    g.add_argument("--list-groups", action="store_true",
                   help="list the model's dependency groups and stages (prune.stage_ratios names them) with their "
                   "FLOPs share, and stop")
    return p


def _model_name(value: str) -> str:
    """A registry model (its spellings canonical) or a reference, checked when the config is built."""
    value = canonical("model.name", value)
    if ":" not in value and value not in MODELS:
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(map(repr, sorted(MODELS)))}; "
                                         "or torchvision:<builder>, timm:<name>, <module or file.py>:<callable>)")
    return value


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    values: Dict[str, Any] = dict(SMOKE) if args.smoke_test else {}
    values.update({k: v for k, v in vars(args).items() if "." in k and v is not None})
    values.update(parse_overrides(args.set))
    if args.skip_pruning:
        values["prune.method"] = "none"
    if (args.skip_base_training or args.eval_only) and not values.get("model.pretrained_path"):
        flag = "--eval-only" if args.eval_only else "--skip-base-training"
        raise ConfigError(f"{flag}: needs --model-path FILE (a saved state dict or rebuilt model)")
    if values.get("model.pretrained_path") and not Path(values["model.pretrained_path"]).is_file():
        raise ConfigError(f"--model-path {values['model.pretrained_path']}: no such file")
    if args.config:
        cfg = ExperimentConfig.from_yaml(args.config, values)
    else:
        cfg = ExperimentConfig.from_dict(values)
    if cfg.model.pretrained_path:
        check_model_file(cfg.model.pretrained_path, rebuilt_ok=args.eval_only)
    if cfg.runtime.device == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"runtime.device=cuda: no CUDA device is visible (torch {torch.__version__}, {build}); "
                          "use --no-cuda or --set runtime.device=auto")
    return cfg


def check_model_file(path: str, rebuilt_ok: bool = True) -> None:
    """Raise ConfigError unless ``path`` holds what ``--model-path`` takes: a state dict (str ->
    tensor) or, when ``rebuilt_ok``, a model saved by ``prune_core.pruning.save_pruned``. Loaded
    with ``weights_only=True``, like every load of the pipeline."""
    expected = ("a state dict or a model rebuilt by prune-core (<model>_rebuilt.pt, <model>_base.pt)" if rebuilt_ok
                else "the state dict of an unpruned model (<model>_base.pt of --save-model)")
    try:
        blob = checkpoints.load_checked(Path(path))
    except checkpoints.CorruptFile as exc:
        raise ConfigError(f"--model-path {path}: not a saved model ({' '.join(exc.reason.split())}); "
                          f"expected {expected}") from None
    if isinstance(blob, dict) and "state_dict" in blob and "shapes" in blob:
        if not rebuilt_ok:
            raise ConfigError(f"--model-path {path}: a pruned model saved by prune-core; expected {expected}")
        return
    if not isinstance(blob, dict) or not blob or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in blob.items()):
        got = (type(blob).__name__ if not isinstance(blob, dict) else
               f"a dict with keys {', '.join(map(str, list(blob)[:5]))}" if blob else "an empty dict")
        raise ConfigError(f"--model-path {path}: not a saved model (it holds {got}); expected {expected}")


def run_dir(cfg: ExperimentConfig, resume: bool) -> Path:
    """experiments/<dataset>/<model>_<method>_<dataset>_<timestamp>/, or the latest unfinished one."""
    dataset = name_label(cfg.data.name)  # a reference without its path
    parent = Path(cfg.runtime.output_dir) / dataset
    prefix = f"{name_label(cfg.model.name)}_{cfg.prune.method}_{dataset}_"
    if resume:
        unfinished = sorted(d for d in parent.glob(prefix + "*") if not (d / "metrics.json").exists())
        if unfinished:
            return unfinished[-1]
    stamp = time.strftime("%Y%m%d_%H%M%S")
    path = parent / f"{prefix}{stamp}"
    n = 1
    while path.exists():
        path = parent / f"{prefix}{stamp}_{n}"
        n += 1
    return path


def _load_plugins(argv: Optional[List[str]]) -> None:
    """Import the ``--plugin`` modules before the parser is built: its name flags accept what they
    register. One that fails is one line, exit 2."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--plugin", action="append", default=[])
    plugins = early.parse_known_args(argv)[0].plugin
    try:
        load_plugins(plugins)
    except ConfigError as exc:
        print(f"prune-core: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _groups_text(cfg: ExperimentConfig) -> str:
    """``--list-groups``: the table of ``pruning.channel.group_table`` for the model ``cfg`` builds."""
    from .data import load_data
    from .pipeline import fresh_model
    from .pruning.channel import group_table

    data = load_data(cfg.data, torch.device("cpu"), cfg.runtime.seed)
    x, _ = next(iter(data.test))
    rows = group_table(fresh_model(cfg, data), x[:2], data.input_shape)
    lines = [f"{'stage':<10} {'stage FLOPs':>11}  {'group root':<28} {'channels':>8} {'layers':>6} {'FLOPs':>6}"]
    lines += [f"{r['stage']:<10} {r['stage_flops_share']:>11.1%}  {r['root']:<28} {r['channels']:>8} {r['layers']:>6} "
              f"{r['flops_share']:>6.1%}" for r in rows]
    lines.append(f"{len(rows)} groups; sweep a stage's ratio as prune.stage_ratios.<stage> (channel, local scope)")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line ``argv``; return the exit code (module docstring, README "Exit codes")."""
    _load_plugins(argv)
    args = build_parser().parse_args(argv)
    from .data import DatasetMissing

    out: Optional[Path] = None  # the run directory, once made
    created = False  # made by this call (not an unfinished one picked by --resume)
    cfg: Optional[ExperimentConfig] = None
    try:
        cfg = config_from_args(args)
        if args.list_groups:
            print(_groups_text(cfg))
            return 0
        if args.eval_only:
            from .pipeline import evaluate_only

            try:
                metrics = evaluate_only(cfg)
            except (RuntimeError, ValueError) as exc:  # the file is a model of another architecture or dataset
                path = cfg.model.pretrained_path
                if "Error(s) in loading state_dict" not in str(exc) and not str(exc).startswith(f"{path}: layer"):
                    raise
                raise ConfigError(f"--model-path {cfg.model.pretrained_path}: does not fit model.name="
                                  f"{cfg.model.name} on data.name={cfg.data.name} ({_first_line(exc)}); pass the "
                                  "--model and --dataset it was trained with") from None
            print(json.dumps(metrics, indent=2, default=str))
            return 0
        out = run_dir(cfg, cfg.runtime.resume)
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        cfg = cfg.replace(**{"runtime.workdir": str(out)})
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        provenance.write(out / provenance.FILE, provenance.record(cfg.device_type()))
        print(f"run directory: {out}")
        from .pipeline import base_path, run

        metrics = run(cfg)
        _write_outputs(cfg, out, metrics, base_path(cfg))
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc) + _kept(out), out, created)
    except DatasetMissing as exc:
        msg = str(exc).replace("set data.download: true", "add --download")
        if "--data-root" not in msg and "no files under" in msg:
            msg += "; --data-root names the directory that holds it"
        return _fail(EXIT_DATA, msg, out, created)
    except Diverged as exc:
        return _fail(EXIT_DIVERGED, _diverged(exc, cfg, out), out, created)
    except RebuildMismatch as exc:
        report = f"{out / 'config.yaml'} (the run so far stays there)" if _computed(out) else "its config"
        return _fail(EXIT_REBUILD, f"{exc}; the rebuilt model does not compute what the pruned one does, a bug of "
                     f"prune_core for this model and method: please report it with {report}; another "
                     "--pruning-method or --criterion may avoid it" + _base_kept(cfg), out, created)
    except ExportMismatch as exc:
        report = f"{out / 'config.yaml'}" if _computed(out) else "its config"
        return _fail(EXIT_EXPORT, f"{exc}; the exported model does not compute what the PyTorch one does: please "
                     f"report it with {report}" + _kept(out) + "; --resume without --export finishes the run",
                     out, created)
    except KeyboardInterrupt:
        where = f"; the run so far is in {out}" if out is not None else ""
        print(f"prune-core: interrupted{where}; rerun with --resume to continue from the last epoch", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: keep the traceback to debug it, then the one line
        line = _storage_error(exc, cfg, out) if isinstance(exc, OSError) else None
        if line is not None:  # not a bug: the machine's storage
            return _fail(EXIT_STORAGE, line, out, created)
        traceback.print_exc()
        where = f"; the run so far is in {out} (--resume continues it)" if out is not None else ""
        print(f"prune-core: error: unexpected {type(exc).__name__}: {_first_line(exc)} (traceback above; "
              f"please report it unless the machine caused it, e.g. a full disk){where}", file=sys.stderr)
        return EXIT_UNEXPECTED
    _print_summary(metrics, out)
    return 0


def _storage_error(exc: OSError, cfg: Optional[ExperimentConfig], out: Optional[Path]) -> Optional[str]:
    """The line for a file the run cannot write: a full disk (``FULL_ERRNOS``; torch's own words for
    it became ENOSPC in ``checkpoints.torch_save``) wherever it is, or a path under ``--output-dir`` or
    the base cache that is missing, read-only, not a folder or too long; None for any other error."""
    path = str(exc.filename or "")
    shown = path if len(path) <= 160 else f"{path[:100]}...{path[-40:]} ({len(path):,} characters)"
    what = f"{shown}: {os.strerror(exc.errno)}" if exc.errno else shown
    if exc.errno in FULL_ERRNOS:
        again = f"; the run so far is kept in {out}: free space there, then --resume continues it" if _computed(out) else (
            "; free space there, then run it again")
        return f"storage full: {what}{again}"
    roots = [Path(p) for p in (cfg.runtime.output_dir, cfg.runtime.cache_dir) if p] if cfg is not None else []
    if exc.errno not in UNWRITABLE or not path or not any(_under(Path(path), r) for r in roots):
        return None
    return f"cannot write {what}; --output-dir (and runtime.cache_dir) must name a folder this user can write"


def _under(path: Path, root: Path) -> bool:
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    return path == root or root in path.parents


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _fail(code: int, message: str, out: Optional[Path], created: bool) -> int:
    """Print the one line and return ``code``; a run directory this call made that holds nothing
    but its config.yaml and provenance.json (nothing computed yet) is removed."""
    if out is not None and created and out.is_dir() and {p.name for p in out.iterdir()} <= set(NOT_COMPUTED):
        for name in NOT_COMPUTED:
            (out / name).unlink(missing_ok=True)
        out.rmdir()
        if not any(out.parent.iterdir()):  # <output-dir>/<dataset>/, made for it
            out.parent.rmdir()
    print(f"prune-core: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def _computed(out: Optional[Path]) -> bool:
    return out is not None and out.is_dir() and any(p.name not in NOT_COMPUTED for p in out.iterdir())


def _kept(out: Optional[Path]) -> str:
    return f"; the run so far is kept in {out}" if _computed(out) else ""


def _base_kept(cfg: Optional[ExperimentConfig]) -> str:
    if cfg is None:
        return ""
    from .pipeline import base_path

    path = base_path(cfg)
    return f"; the trained base stays cached in {path.parent} and a rerun reuses it" if path.exists() else ""


def _diverged(exc: Diverged, cfg: Optional[ExperimentConfig], out: Optional[Path]) -> str:
    """The loss diverged: which learning rate to lower (its flag and value), and what of the run
    is kept. fit's message starts with the stage: base, finetune (SNIP's and IMP's training after
    pruning use train.lr) or imp_level<n>."""
    msg = "diverged: " + str(exc).removesuffix("; lower the learning rate")
    if cfg is None:
        return msg
    from .pruning import METHODS

    stage = str(exc).split(":", 1)[0].strip()
    key = "finetune.lr" if stage == "finetune" and METHODS[cfg.prune.method].retrain == "finetune" else "train.lr"
    if stage not in ("base", "finetune") and not stage.startswith("imp_level"):
        lower = ("rerun with a lower --learning-rate (train.lr=%g now) or --finetune-lr (finetune.lr=%g now)"
                 % (cfg.train.lr, cfg.finetune.lr))
    else:
        lr = cfg.finetune.lr if key == "finetune.lr" else cfg.train.lr
        lower = f"rerun with a lower {LR_FLAGS[key]} ({key}={lr:g} now)"
    if out is None or not _computed(out):
        return f"{msg}; {lower}"
    if key == "finetune.lr" and (out / "pruned_model.pt").exists() and (out / "pre_finetune.json").exists():
        if (out / "finetune_ckpt.pt").exists():  # a resumed checkpoint keeps the learning rate it was saved with
            return (f"{msg}; the run so far is kept in {out}: {lower} and --resume after moving "
                    f"{out / 'finetune_ckpt.pt'} aside to fine-tune its pruned model again (--resume alone "
                    "continues from that checkpoint at its saved learning rate)")
        return f"{msg}; the run so far is kept in {out}: {lower} and --resume to fine-tune its pruned model again"
    return f"{msg}; {lower}; the run so far is kept in {out}"


def _write_outputs(cfg: ExperimentConfig, out: Path, metrics: Dict[str, Any], base: Path) -> None:
    from . import plots

    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    plots.training_curves(out)
    plots.layer_bars(metrics, out)
    checkpoints.rename(out / "final_model.pt", out / f"{name_label(cfg.model.name)}_rebuilt.pt")
    if cfg.runtime.save_model and base.exists():
        checkpoints.torch_save(checkpoints.load_checked(base)["model"], out / f"{name_label(cfg.model.name)}_base.pt")
    for name in ("finetune_ckpt.pt", "pre_finetune.json", "pruned_model.pt"):
        checkpoints.remove(out / name)  # resume state; the run is complete


def _print_summary(m: Dict[str, Any], out: Path) -> None:
    print(f"accuracy  {m['acc_base']:.2f}% -> {m['acc_pruned_raw']:.2f}% (pruned) -> {m['acc_pruned']:.2f}% "
          f"(BN re-estimated) -> {m['acc_final']:.2f}% (fine-tuned)")
    print(f"FLOPs     {m['flops_base'] / 1e6:.2f}M -> {m['flops_final'] / 1e6:.2f}M dense, "
          f"{m['flops_nz_final'] / 1e6:.2f}M effective ({100 * m['flops_kept_dense']:.1f}% / "
          f"{100 * m['flops_kept_effective']:.1f}% kept)")
    print(f"params    {m['params_base'] / 1e6:.3f}M -> {m['params_nz_final'] / 1e6:.3f}M non-zero")
    print(f"latency   {m['latency_ms_base']:.2f} -> {m['latency_ms_final']:.2f} ms at batch 1 "
          f"(speedup {m['speedup']:.2f}x on {m['latency_device']})")
    if m.get("latency_ms_final_ort") is not None:
        print(f"ONNX      {m['latency_ms_base_ort']:.2f} -> {m['latency_ms_final_ort']:.2f} ms at batch 1 under ONNX "
              f"Runtime (max |diff| vs PyTorch {m['onnx_max_abs_diff']:.1e}): {next(out.glob('*_rebuilt.onnx'), '')}")
    print(f"results   {out}")


if __name__ == "__main__":
    raise SystemExit(main())
