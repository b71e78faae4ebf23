"""The summary of ``bench/gpu_sweep.sh``: where the GPU sweep's trials ran, how busy the GPUs were,
the trainer ratio, and each trial's accuracy on the GPU next to the same trial on the CPU.

    python bench/gpu_sweep_summary.py --gpu RUNS/quickstart-gpu --cpu RUNS/quickstart-cpu \\
        --util gpu_util.csv [--sweep-log sweep_gpu.log] [--throughput throughput.log] [--rebuild rebuild.log]

Reads each trial folder's ``params.json`` and ``result.json`` (the rows Ray Tune wrote: ``gpu_ids``
``node_id`` and ``started_at`` from the trial's reporter, ``time_total_s`` from Tune), and
nvidia-smi's samples (``timestamp, index, utilization.gpu, memory.used``, CSV without header or
units). Prints one line per finding; a missing input is a line saying so, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple


def read_trials(exp: Path) -> List[dict]:
    """Each trial with a final report: its swept values, final row and span (start, end) in seconds."""
    out = []
    for params in sorted(exp.glob("*/params.json")):
        result = params.parent / "result.json"
        lines = result.read_text().split("\n")[:-1] if result.exists() else []
        rows = [json.loads(ln) for ln in lines if ln.strip()]
        done = [r for r in rows if r.get("stage") == "done"]
        if not done:
            continue
        final = done[-1]
        start = float(final["started_at"])  # this run's start, on its worker; Tune's time since
        out.append({"params": json.loads(params.read_text()), "final": final,
                    "span": (start, start + float(final.get("time_since_restore") or final.get("time_total_s") or 0))})
    return out


def most_at_once(spans: List[Tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    most = running = 0
    for _, d in events:
        running += d
        most = max(most, running)
    return most


def placement_lines(trials: List[dict]) -> List[str]:
    by_gpu: Dict[str, List[dict]] = defaultdict(list)
    for t in trials:
        key = f"node {str(t['final'].get('node_id', '?'))[:8]} GPU {t['final'].get('gpu_ids') or 'none'}"
        by_gpu[key].append(t)
    spans = [t["span"] for t in trials]
    wall = max(b for _, b in spans) - min(a for a, _ in spans) if spans else 0
    lines = [f"GPU sweep: {len(trials)} trials finished in {wall:.0f} s, at most {most_at_once(spans)} at once"]
    for key, ts in sorted(by_gpu.items()):
        lines.append(f"  {key}: {len(ts)} trials, at most {most_at_once([t['span'] for t in ts])} at once")
    return lines


def utilisation_lines(path: Optional[Path]) -> List[str]:
    if path is None or not path.exists() or not path.stat().st_size:
        return ["GPU utilisation: not sampled (no nvidia-smi output)"]
    util: Dict[str, List[float]] = defaultdict(list)
    mem: Dict[str, List[float]] = defaultdict(list)
    with open(path) as fh:
        for row in csv.reader(fh):
            if len(row) < 4:
                continue
            try:
                util[row[1].strip()].append(float(row[2]))
                mem[row[1].strip()].append(float(row[3]))
            except ValueError:
                continue
    return [f"GPU utilisation over the sweep: GPU {i}: mean {sum(u) / len(u):.0f} %, max {max(u):.0f} %, "
            f"memory up to {max(mem[i]) / 1024:.1f} GiB ({len(u)} samples, 0.5 s apart)" for i, u in sorted(util.items())]


def accuracy_lines(gpu: List[dict], cpu: List[dict]) -> List[str]:
    def key(t: dict) -> str:
        return json.dumps(t["params"], sort_keys=True)

    on_cpu = {key(t): t["final"] for t in cpu}
    head = f"{'trial':<44} {'GPU test %':>10} {'CPU test %':>10} {'diff':>6} {'FLOPs kept':>10}"
    lines = ["each trial's test accuracy, GPU (bf16) against CPU (fp32):", "  " + head]
    diffs = []
    for t in sorted(gpu, key=key):
        name = " ".join(f"{str(v)}" for v in t["params"].values())[:44]
        g = t["final"].get("acc_final")
        c = on_cpu.get(key(t), {}).get("acc_final")
        diff = f"{g - c:+6.2f}" if g is not None and c is not None else "     -"
        if g is not None and c is not None:
            diffs.append(g - c)
        kept = t["final"].get("flops_kept_dense")
        lines.append(f"  {name:<44} {g if g is not None else float('nan'):>10.2f} "
                     f"{c if c is not None else float('nan'):>10.2f} {diff} {kept if kept is not None else float('nan'):>10.3f}")
    if diffs:
        mean_abs = sum(abs(d) for d in diffs) / len(diffs)
        lines.append(f"  {len(diffs)} trials on both: mean |GPU - CPU| {mean_abs:.2f} points, "
                     f"largest {max(diffs, key=abs):+.2f}")
    else:
        lines.append("  no trial finished on both devices")
    return lines


def log_lines(sweep_log: Optional[Path], throughput: Optional[Path], rebuild: Optional[Path]) -> List[str]:
    lines = []
    text = sweep_log.read_text() if sweep_log and sweep_log.exists() else ""
    quiet = [ln for ln in text.splitlines() if ln.startswith("latency: ")]
    lines.append(f"quiet latency pass: {quiet[-1][len('latency: '):] if quiet else 'no line in the sweep log'}")
    bases = [ln for ln in text.splitlines() if re.match(r"base \w+: (trained|cached)", ln)]
    lines.extend(bases[:4])
    text = throughput.read_text() if throughput and throughput.exists() else ""
    m = re.search(r"^ratio ours/baseline: ([0-9.]+)x", text, re.M)
    if m:
        ratio = float(m.group(1))
        lines.append(f"train throughput (resnet20, batch 128): {ratio:.2f}x the plain loop "
                     f"(goal >= 3x: {'met' if ratio >= 3 else 'NOT met'})")
    else:
        lines.append("train throughput: no ratio in its log")
    text = rebuild.read_text() if rebuild and rebuild.exists() else ""
    table = [ln for ln in text.splitlines() if ln.strip() and "arn" not in ln][:24]
    if table:
        lines.append("rebuild speedup (--device cuda --round-to auto):")
        lines.extend("  " + ln for ln in table)
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu", type=Path, required=True, help="the GPU sweep's experiment folder")
    p.add_argument("--cpu", type=Path, required=True, help="the same sweep's experiment folder on the CPU")
    p.add_argument("--util", type=Path, help="nvidia-smi's samples (CSV)")
    p.add_argument("--sweep-log", type=Path, help="launch.py's output of the GPU sweep")
    p.add_argument("--throughput", type=Path, help="bench/train_throughput.py's output")
    p.add_argument("--rebuild", type=Path, help="bench/rebuild_speedup.py's output")
    args = p.parse_args(argv)
    gpu = read_trials(args.gpu) if args.gpu.is_dir() else []
    cpu = read_trials(args.cpu) if args.cpu.is_dir() else []
    lines = placement_lines(gpu) if gpu else [f"GPU sweep: no finished trial in {args.gpu}"]
    lines += utilisation_lines(args.util)
    lines += log_lines(args.sweep_log, args.throughput, args.rebuild)
    lines += accuracy_lines(gpu, cpu) if gpu else []
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
