"""``python -m prune_core``: one experiment from the command line, with the first seed project's flags.

    python -m prune_core --dataset mnist5k --model resnet20 --pruning-method channel \\
        --pruning-ratio 0.5 --global-pruning --finetune-epochs 3
    python -m prune_core --config base.yaml --set prune.method=kernel --set prune.ratio=0.3

Results go to ``<output-dir>/<dataset>/<model>_<method>_<dataset>_<timestamp>/``: config.yaml,
metrics.json, flops.txt, training curves, per-layer parameter and channel plots, and with
``--save-model`` the base and rebuilt models.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import yaml

from .config import SMOKE, ConfigError, ExperimentConfig, parse_overrides

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage block
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prune-core", description="Train, prune, rebuild, fine-tune and measure one network.")
    a = p.add_argument
    a("--config", metavar="FILE.yaml", help="settings as a YAML file (nested or dotted keys); flags override it")
    a("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key, e.g. prune.lamp=true")
    g = p.add_argument_group("basic")
    g.add_argument("--dataset", dest="data.name")
    g.add_argument("--data-root", dest="data.root", help="directory holding torchvision datasets")
    g.add_argument("--download", dest="data.download", action="store_const", const=True,
                   help="let torchvision download a missing dataset (needs the internet)")
    g.add_argument("--model", dest="model.name")
    g.add_argument("--output-dir", dest="runtime.output_dir")
    g.add_argument("--seed", dest="runtime.seed", type=int)
    g = p.add_argument_group("training")
    g.add_argument("--base-train-epochs", dest="train.epochs", type=int)
    g.add_argument("--learning-rate", dest="train.lr", type=float)
    g.add_argument("--batch-size", dest="data.batch_size", type=int)
    g.add_argument("--weight-decay", dest="train.weight_decay", type=float)
    g.add_argument("--patience", dest="train.patience", type=int, help="early-stopping patience (0 = off)")
    g = p.add_argument_group("pruning")
    g.add_argument("--pruning-method", dest="prune.method")
    g.add_argument("--criterion", dest="prune.criterion")
    g.add_argument("--pruning-ratio", dest="prune.ratio", type=float)
    g.add_argument("--global-pruning", dest="prune.scope", action="store_const", const="global")
    g.add_argument("--finetune-epochs", dest="finetune.epochs", type=int)
    g.add_argument("--finetune-lr", dest="finetune.lr", type=float)
    g = p.add_argument_group("execution")
    g.add_argument("--no-cuda", dest="runtime.device", action="store_const", const="cpu")
    g.add_argument("--no-fp16", dest="runtime.amp", action="store_const", const=False)
    g.add_argument("--num-workers", dest="data.num_workers", type=int)
    g.add_argument("--resume", dest="runtime.resume", action="store_const", const=True,
                   help="continue the latest unfinished run of this configuration from its last epoch")
    g.add_argument("--skip-base-training", action="store_true", help="start from --model-path instead of training")
    g.add_argument("--skip-pruning", action="store_true", help="no pruning: the dense baseline")
    g.add_argument("--eval-only", action="store_true", help="only evaluate the model at --model-path")
    g.add_argument("--save-model", dest="runtime.save_model", action="store_const", const=True)
    g.add_argument("--model-path", dest="model.pretrained_path")
    g.add_argument("--smoke-test", action="store_true", help="a few steps of everything, for CI")
    return p


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
        return ExperimentConfig.from_yaml(args.config, values)
    return ExperimentConfig.from_dict(values)


def run_dir(cfg: ExperimentConfig, resume: bool) -> Path:
    """experiments/<dataset>/<model>_<method>_<dataset>_<timestamp>/, or the latest unfinished one."""
    parent = Path(cfg.runtime.output_dir) / cfg.data.name
    prefix = f"{cfg.model.name}_{cfg.prune.method}_{cfg.data.name}_"
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


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .data import DatasetMissing

    try:
        cfg = config_from_args(args)
        if args.eval_only:
            from .pipeline import evaluate_only

            metrics = evaluate_only(cfg)
            print(json.dumps(metrics, indent=2, default=str))
            return 0
        out = run_dir(cfg, cfg.runtime.resume)
        out.mkdir(parents=True, exist_ok=True)
        cfg = cfg.replace(**{"runtime.workdir": str(out)})
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        print(f"run directory: {out}")
        from .pipeline import base_path, run

        metrics = run(cfg)
    except (ConfigError, DatasetMissing) as exc:
        print(f"prune-core: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prune-core: interrupted; rerun with --resume to continue from the last epoch", file=sys.stderr)
        return 130
    _write_outputs(cfg, out, metrics, base_path(cfg))
    _print_summary(metrics, out)
    return 0


def _write_outputs(cfg: ExperimentConfig, out: Path, metrics: Dict[str, Any], base: Path) -> None:
    from . import plots

    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    plots.training_curves(out)
    plots.layer_bars(metrics, out)
    (out / "final_model.pt").replace(out / f"{cfg.model.name}_rebuilt.pt")
    if cfg.runtime.save_model and base.exists():
        torch.save(torch.load(base, weights_only=True)["model"], out / f"{cfg.model.name}_base.pt")
    for name in ("finetune_ckpt.pt", "pre_finetune.json", "pruned_model.pt"):
        (out / name).unlink(missing_ok=True)  # resume state; the run is complete


def _print_summary(m: Dict[str, Any], out: Path) -> None:
    print(f"accuracy  {m['acc_base']:.2f}% -> {m['acc_pruned_raw']:.2f}% (pruned) -> {m['acc_pruned']:.2f}% "
          f"(BN re-estimated) -> {m['acc_final']:.2f}% (fine-tuned)")
    print(f"FLOPs     {m['flops_base'] / 1e6:.2f}M -> {m['flops_final'] / 1e6:.2f}M dense, "
          f"{m['flops_nz_final'] / 1e6:.2f}M effective ({100 * m['flops_kept_dense']:.1f}% / "
          f"{100 * m['flops_kept_effective']:.1f}% kept)")
    print(f"params    {m['params_base'] / 1e6:.3f}M -> {m['params_nz_final'] / 1e6:.3f}M non-zero")
    print(f"latency   {m['latency_ms_base']:.2f} -> {m['latency_ms_final']:.2f} ms at batch 1 "
          f"(speedup {m['speedup']:.2f}x on {m['latency_device']})")
    print(f"results   {out}")


if __name__ == "__main__":
    raise SystemExit(main())
