"""Which classification models ``channel`` prunes: every torchvision builder, rebuilt against masked.

Each model is built with random weights (3 input channels, 10 classes) at the smallest input its
family runs at (``input_px``), pruned with ``channel`` at ratio 0.3 (criterion l1) in local and in
global scope, and rebuilt; the rebuild is checked against the masked model (``surgery.rebuild``:
1e-4 times the largest |logit|). Parameters that initialise to a constant near zero (biases,
ConvNeXt's layer scale of 1e-6, ViT's zero head) are drawn from N(0, 0.02) first, so that the check
sees every path. Per model and scope the table gives the rebuild's largest |logit difference|
relative to the largest |logit|, the FLOPs and parameters kept, and the CPU speedup at batch
``--batch`` (dense and rebuilt timed in turns, ``prune_core.metrics.time_interleaved``, medians).
If ``timm`` is importable, the families in ``TIMM_MODELS`` are run too.

    python bench/model_coverage.py --out bench/model_coverage.md      # all but 5 builders over 150 M params (~25 min)
    python bench/model_coverage.py --max-params 1e12 --memory-gb 18 --out bench/model_coverage.md  # all (~29 min)
    python bench/model_coverage.py --models resnet18,vit_b_32           # some
    python bench/model_coverage.py --smoke-test                         # seconds: resnet18 only

Each model runs in a child process of its own (``--memory-gb`` caps its address space, ``--timeout``
its time), so that a model that runs out of memory or crashes is a row of the table with its reason
and the run goes on; ``--out`` is rewritten after every row, so an interrupted run keeps what it
measured, and ``--resume`` skips the models already in it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import traceback
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from prune_core.config import ExperimentConfig
from prune_core.metrics import count_flops, count_params, time_interleaved
from prune_core.pruning import PruneContext, prune_model, rebuild

DEFAULT_PX = 32  # the smallest input of every family whose minimum is below it (prune_core.zoo.MIN_SIZE)
TIMM_MODELS = ("resnet18", "efficientnet_b0", "convnext_atto", "vit_tiny_patch16_224", "deit_tiny_patch16_224",
               "swin_tiny_patch4_window7_224", "regnetx_002", "mobilevitv2_050")
MAX_PARAMS = 150e6  # above this (vit_l_*, vit_h_14, convnext_large, regnet_y_128gf) a model is skipped by default


def build(name: str, px: int) -> nn.Module:
    """``name`` as ``model.name: torchvision:<name>`` (or ``timm:<name>``) builds it for 3 x ``px`` x ``px``
    images, 10 classes, random weights."""
    from prune_core.models import build_model

    return build_model(name if name.startswith("timm:") else f"torchvision:{name}", 10, 3, px)


@torch.no_grad()
def draw_constants(model: nn.Module, seed: int = 0) -> None:
    """Parameters that start as one value near zero get N(0, 0.02) entries (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.numel() > 1 and float(p.abs().max()) < 1e-3 and bool((p == p.reshape(-1)[0]).all()):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def input_px(name: str) -> int:
    """32 px, or the smallest size the family runs at (``prune_core.zoo.check_size``: vit_h_14 28,
    alexnet 64, inception_v3 75, maxvit_t 224)."""
    from prune_core.errors import ConfigError
    from prune_core.zoo import check_size

    if name.startswith("timm:"):
        return DEFAULT_PX
    for px in (DEFAULT_PX, 28, *range(DEFAULT_PX + 1, 449)):
        try:
            check_size(f"torchvision:{name}", px)
            return px
        except ConfigError:
            continue
    raise ValueError(f"{name}: no input size up to 448 px")


def measure(name: str, scope: str, args: argparse.Namespace) -> Dict[str, object]:
    """One model in one scope: the pruned model's figures, or why it does not prune."""
    px = input_px(name)
    torch.manual_seed(0)
    model = build(name, px).eval()
    draw_constants(model)
    x = torch.randn(2, 3, px, px)
    cfg = ExperimentConfig.from_dict({"prune.method": "channel", "prune.ratio": args.ratio, "prune.criterion": "l1",
                                      "prune.scope": scope})
    plan = prune_model(model, PruneContext(cfg, example_input=x))
    result = rebuild(model, plan, x)
    with torch.no_grad():
        scale = float(model(x).abs().max())
    shape = (3, px, px)
    flops = count_flops(result.model, shape).total / count_flops(model, shape).total
    params = count_params(result.model)[0] / count_params(model)[0]
    base, small = time_interleaved([model, result.model], shape, args.batch, repeats=args.repeats, warmup=1,
                                   threads=args.threads)
    return {"diff": result.max_abs_diff / max(scale, 1e-12), "flops": flops, "params": params,
            "speedup": base.ms_batch / small.ms_batch}


def one_line(err: BaseException) -> str:
    """An error as one line: its type and message, and where it was raised."""
    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" ({frame.filename.split('/')[-1]}:{frame.lineno})" if frame else ""
    text = " ".join(str(err).split())[:160]
    return f"{type(err).__name__}: {text}{where}".replace("|", "/")


def row(name: str, args: argparse.Namespace) -> List[str]:
    px = input_px(name)
    n_params = sum(p.numel() for p in build(name, px).parameters())
    if n_params > args.max_params:
        return [name, str(px), f"skipped: {n_params / 1e6:.0f} M params > --max-params", "", "", "", ""]
    cells: Dict[str, List[str]] = {k: [] for k in ("diff", "flops", "params", "speedup")}
    for scope in ("local", "global"):
        try:
            got = measure(name, scope, args)
        except Exception as err:  # a model that does not prune is a row of the table, not the end of it
            return [name, str(px), f"no: {scope}: {one_line(err)}", "", "", "", ""]
        for k in cells:
            cells[k].append(f"{got[k]:.1e}" if k == "diff" else f"{got[k]:.2f}")
    return [name, str(px), "yes", *(" / ".join(cells[k]) for k in ("diff", "flops", "params", "speedup"))]


def model_names(selected: Optional[str]) -> List[str]:
    import torchvision
    names = torchvision.models.list_models(module=torchvision.models)
    try:
        import timm  # noqa: F401
        names += [f"timm:{n}" for n in TIMM_MODELS]
    except ImportError:
        print("timm is not installed: torchvision builders only")
    if selected:
        wanted = selected.split(",")
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise SystemExit(f"--models: unknown {', '.join(unknown)}; expected torchvision builder names")
        names = wanted
    return names


HEADER = ["model", "input px", "prunes", "max abs Δlogit / max abs logit", "FLOPs kept", "params kept",
          f"speedup"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="", help="comma-separated builder names (default: all)")
    p.add_argument("--out", default="", help="also write the Markdown table to this file")
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-params", type=float, default=MAX_PARAMS)
    p.add_argument("--smoke-test", action="store_true", help="resnet18 only, 2 repeats")
    p.add_argument("--memory-gb", type=float, default=16.0, help="address-space cap of each model's process")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds one model may take")
    p.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="measure in this process (no memory cap, a crash ends the run)")
    p.add_argument("--resume", action="store_true", help="keep the rows already in --out (not the skipped ones), measure the rest")
    p.add_argument("--row", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child_row(name: str, args: argparse.Namespace) -> List[str]:
    """``row(name)`` in a child process under ``--memory-gb`` and ``--timeout``; a crash is the row's reason."""
    cmd = [sys.executable, os.path.abspath(__file__), "--row", name, "--ratio", str(args.ratio), "--batch",
           str(args.batch), "--repeats", str(args.repeats), "--threads", str(args.threads), "--max-params",
           str(args.max_params)]
    cap = int(args.memory_gb * 2**30)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    px = str(input_px(name))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return [name, px, f"no: not done in --timeout {args.timeout:.0f} s", "", "", "", ""]
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("ROW "):
            return json.loads(line[4:])
    tail = " ".join((done.stderr.strip().splitlines() or ["(no output)"])[-1].split())[:160]
    if done.returncode < 0 or "MemoryError" in done.stderr or "can't allocate memory" in done.stderr:
        tail = f"out of memory under --memory-gb {args.memory_gb:g} ({tail})"
    return [name, px, f"no: child exited {done.returncode}: {tail}".replace("|", "/"), "", "", "", ""]


def write_table(rows: List[List[str]], args: argparse.Namespace, seconds: float, total: int) -> str:
    header = HEADER[:6] + [f"speedup (CPU, batch {args.batch}, {args.threads} thread{'s' * (args.threads > 1)})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    pruned = sum(r[2] == "yes" for r in rows)
    tried = sum(not r[2].startswith("skipped") for r in rows)
    partial = "" if len(rows) == total else f" (partial: {len(rows)} of {total} models measured)"
    summary = (f"`channel` at ratio {args.ratio} (l1), cells local / global: {pruned} of {tried} models prune with "
               f"rebuilt = masked ({len(rows) - tried} skipped), {seconds:.0f} s{partial}.")
    text = "\n".join([summary, "", *lines]) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return text


def read_rows(path: str) -> List[List[str]]:
    """The rows of an earlier ``--out`` table (for ``--resume``)."""
    if not path or not os.path.exists(path):
        return []
    rows = []
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == len(HEADER) and cells[0] != "model":
            rows.append(cells)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.row:
        print("ROW " + json.dumps(row(args.row, args)), flush=True)
        return 0
    if args.smoke_test:
        args.models, args.repeats = "resnet18", 2
    names = model_names(args.models)
    start = time.time()
    rows = [r for r in read_rows(args.out) if r[0] in names and not r[2].startswith("skipped")] if args.resume else []
    done = {r[0] for r in rows}
    for name in names:
        if name in done:
            continue
        t0 = time.time()
        rows.append(child_row(name, args) if args.isolate else row(name, args))
        print(" | ".join(rows[-1]), f"({time.time() - t0:.0f} s)", flush=True)
        write_table(rows, args, time.time() - start, len(names))
    order = {n: i for i, n in enumerate(names)}
    rows.sort(key=lambda r: order[r[0]])
    text = write_table(rows, args, time.time() - start, len(names))
    print(text)
    pruned = sum(r[2] == "yes" for r in rows)
    return 0 if pruned == sum(not r[2].startswith("skipped") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
