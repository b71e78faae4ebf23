"""What the seed studies under bench/ print: mean ± std over seeds, the gap between two variants
and whether it exceeds the seeds' spread (both standard deviations), and the report they write."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import List, Sequence, Tuple


def mean_std(xs: Sequence[float]) -> Tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def gap_row(label: str, ratio: str, a: Sequence[float], b: Sequence[float]) -> str:
    """``| label | ratio | a - b | beyond the spread |``: means over seeds, yes where the gap exceeds
    the sum of both standard deviations."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    return f"| {label} | {ratio} | {ma - mb:+.2f} | {'yes' if abs(ma - mb) > sa + sb else 'no'} |"


def report(out: Path, lines: List[str], trials: int, started: float) -> None:
    """Print the table and keep it as ``out/results.md``."""
    text = "\n".join(lines)
    print("\n" + text)
    (out / "results.md").write_text(text + "\n")
    print(f"\n{trials} trials in {time.perf_counter() - started:.0f} s; table in {out / 'results.md'}")
