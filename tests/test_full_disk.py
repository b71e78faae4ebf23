"""A real full disk: a small tmpfs as the sweep's storage fills up while the base trains or while
the trials save their checkpoints. The launch ends in the documented line (README, "Reliability"),
exit 1, no traceback, the driver's marker consistent and no temporary file left; once the
filesystem grows, ``--resume`` finishes every trial once. A path the run cannot write at all (a
name too long, a folder that cannot exist) is one line too.

Mounting needs root (``mount -t tmpfs``); where the machine refuses, those tests are skipped.
Sizes for the tiny sweep of ``_sweeps.py`` (resnet20 at width 0.5): its base's files take
2.2 MB (train_ckpt.pt and early.pt 616 KiB each, base.pt 924 KiB), a trial's checkpoint
340-520 KiB at ratios 0.5-0.3 and more at 0.2 and 0.1, so 1.5 MB fills up while the base trains
and 3 MB while two trials at 0.1 and 0.2 save.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import re
import shutil
import subprocess
from types import SimpleNamespace
from pathlib import Path
from typing import Callable, Iterator

import pytest
import ray
import torch

from _sweeps import trial_rows, write_sweep

from prune_core import cli as core_cli
from prune_core.checkpoints import save_atomic
from prune_sweep import driver
from prune_sweep.launch_cli import main
from prune_sweep.liveness import DRIVER_FILE, driver_marker, read_marker
from prune_sweep.results import load_experiments
from prune_sweep.storage import Store

LINE = re.compile(r"prune-sweep: error: storage full \((?P<reason>.+)\); stopped: (?:(?P<finished>\d+) trials finished, "
                  r"(?P<unfinished>\d+) unfinished|trial counts unknown) \(each continues from its last checkpoint\); "
                  r"free space in "
                  r"(?P<storage>\S+), then continue with: (?P<hint>.+)")


def _mount(path: Path, size: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess([], 1, "", str(exc))


def _unmount(path: Path) -> None:
    """Unmount, once the files a test left open (torch's writer, held by a saved traceback) are
    collected; lazily if one is still open."""
    gc.collect()
    if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def can_mount(tmp_path_factory) -> None:
    """Skip the module's full-disk tests (before Ray starts) where no tmpfs can be mounted."""
    probe = tmp_path_factory.mktemp("probe")
    done = _mount(probe, "1m")
    if done.returncode != 0:
        pytest.skip(f"a real full disk needs a tmpfs, and mounting one failed here: {done.stderr.strip()}")
    _unmount(probe)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # as the launcher's own Ray without -v: the workers' output is not forwarded, so stderr is
    # what a user of prune-sweep sees
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def tmpfs(tmp_path, can_mount) -> Iterator[Callable[[str], Path]]:
    """``tmpfs(size)``: a tmpfs of that size mounted for the test, unmounted afterwards."""
    mounted = []

    def mount(size: str) -> Path:
        path = tmp_path / f"fs{len(mounted)}"
        path.mkdir()
        done = _mount(path, size)
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs failed: {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        _unmount(path)


def _fill(path: Path) -> None:
    """Write ``path`` until its filesystem is full (unbuffered: the last write fails, not close)."""
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_on_a_full_disk_each_writer_says_so_and_leaves_no_temporary_file(tmp_path, tmpfs):
    disk = tmpfs("1m")
    with driver_marker(Store(str(disk)), period=3600):  # written while there was space
        _fill(disk / "ballast")
        os.truncate(disk / "ballast", (disk / "ballast").stat().st_size - (256 << 10))
        free = shutil.disk_usage(disk).free
        # torch's zip writer gives no errno ("unexpected pos ..."): the free space decides
        with pytest.raises(OSError) as raised:
            save_atomic({"w": torch.zeros(1 << 18)}, disk / "ckpt.pt")  # 1 MiB into 256 KiB
        assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(disk / "ckpt.pt.tmp")
        assert isinstance(raised.value.__cause__, RuntimeError)  # torch's own words stay in the chain
        assert shutil.disk_usage(disk).free == free  # the partial file is gone and no writer holds it open
        _fill(disk / "ballast2")
        # what Tune's result grid raised over the empty error.pkl a full disk left
        line = driver.full_disk(EOFError("Ran out of input"), str(disk))
        assert re.fullmatch(rf"EOFError: Ran out of input; \d+ KiB left in {disk}", line), line
        assert driver.full_disk(EOFError("Ran out of input"), str(tmp_path)) is None  # space there: not a full disk
        (disk / "error.txt").write_text("")  # a trial's error file that the full disk left empty
        stop = driver.StopWhenStorageFull(str(disk))
        try:
            stop.on_trial_error(0, [], SimpleNamespace(trial_id="t1", error_file=str(disk / "error.txt")))
            assert driver.storage_full().startswith(f"trial t1: its error file {disk}/error.txt is empty; ")
        finally:
            driver.StopWhenStorageFull.reason = None
    # the marker's last write found no room for a temporary copy: it was rewritten in place
    assert read_marker(disk)["ended"] > 0
    assert sorted(p.name for p in disk.iterdir()) == [DRIVER_FILE, "ballast", "ballast2", "error.txt"]


def _stopped(err: str, storage: Path, sweep: Path, expected: int) -> re.Match:
    """The documented line, last on stderr, and nothing else that a user would read as a crash."""
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    line = LINE.fullmatch(last)
    assert line, err
    assert line["storage"] == str(storage)
    # the counts come from Tune's saved state, which the full disk may have cut: then they are unknown
    assert line["finished"] is None or int(line["finished"]) + int(line["unfinished"]) == expected
    assert line["hint"] == f"python launch.py {sweep} --resume --storage {storage}"
    return line


def _consistent(exp: Path) -> None:
    """The driver's marker says it ended (or is gone: liveness.py), no temporary file is left, and
    the analysis reads no trial as running."""
    marker = exp / DRIVER_FILE
    if marker.exists():
        assert "ended" in json.loads(marker.read_text())
    stray = [p for p in exp.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(f"{DRIVER_FILE}.")]
    assert stray == []
    if (exp / "tuner.pkl").exists():
        assert "running" not in set(load_experiments([exp]).table["status"])


def _every_trial_once(exp: Path, trials: int) -> None:
    rows = trial_rows(exp)
    assert len(rows) == trials  # no trial created twice
    for name, trial in rows.items():
        assert [r.get("stage") for r in trial].count("done") == 1, name
        epochs = [r["epoch"] for r in trial if r.get("stage") == "finetune"]
        assert epochs == sorted(set(epochs)), (name, epochs)  # no epoch reported twice
    assert set(load_experiments([exp]).table["status"]) == {"done"}


def test_a_disk_that_fills_while_the_base_trains_stops_in_one_line_and_resume_finishes(tmp_path, tmpfs, local_ray,
                                                                                        capfd):
    storage = tmpfs("1536k")
    sweep = write_sweep(tmp_path, "fullbase", [0.5], finetune=(2, 3))
    args = [str(sweep), "--storage", str(storage), "--no-quiet-latency"]
    assert main(args) == 1
    line = _stopped(capfd.readouterr().err, storage, sweep, 1)
    # torch's zip writer said "unexpected pos ..."; the base's file names the full disk instead
    assert line["reason"].startswith("[Errno 28] No space left on device: ") and "/base_cache/" in line["reason"]
    _consistent(storage / "fullbase")

    subprocess.run(["mount", "-o", "remount,size=256m", str(storage)], check=True)  # space returns
    assert main([*args, "--resume"]) == 0
    assert "1 finished" in capfd.readouterr().out
    _every_trial_once(storage / "fullbase", 1)


def test_a_disk_that_fills_while_trials_save_stops_in_one_line_and_resume_finishes(tmp_path, tmpfs, local_ray,
                                                                                     capfd):
    storage = tmpfs("3m")  # the base fits; two trials' checkpoints at ratios 0.1 and 0.2 do not
    sweep = write_sweep(tmp_path, "fulltrials", [0.1, 0.2], finetune=(2, 2), max_failures=1,
                        search={"algorithm": "grid", "max_concurrent": 2})
    args = [str(sweep), "--storage", str(storage), "--no-quiet-latency"]
    assert main(args) == 1
    line = _stopped(capfd.readouterr().err, storage, sweep, 2)
    assert line["reason"].startswith("trial ") and "No space left on device" in line["reason"], line["reason"]
    _consistent(storage / "fulltrials")

    subprocess.run(["mount", "-o", "remount,size=256m", str(storage)], check=True)
    assert main([*args, "--resume"]) == 0
    assert "2 finished" in capfd.readouterr().out
    _every_trial_once(storage / "fulltrials", 2)


def test_storage_whose_path_is_too_long_is_one_line(tmp_path, capsys):
    long = tmp_path / ("x" * 5000)  # ENAMETOOLONG from the first look at the experiment
    sweep = write_sweep(tmp_path, "long", [0.5])
    assert main([str(sweep), "--storage", str(long)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"prune-sweep: error: storage {tmp_path}/xxx") and "\n" not in err
    assert "(5,0" in err and "characters): File name too long; choose another --storage or --name" in err


@pytest.mark.parametrize("where", ["proc", "file"])
def test_prune_core_output_dir_it_cannot_write_is_one_line(tmp_path, capsys, where):
    if where == "proc" and not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    out = Path("/proc/nope") if where == "proc" else tmp_path / "a_file" / "runs"
    (tmp_path / "a_file").write_text("")
    code = core_cli.main(["--output-dir", str(out), "--dataset", "mnist5k", "--model", "resnet20"])
    err = capsys.readouterr().err.strip()
    assert code == core_cli.EXIT_STORAGE == 7 and "Traceback" not in err and "\n" not in err, err
    assert err.startswith(f"prune-core: error: cannot write {out if where == 'proc' else out.parent}"), err
    assert "\n| 7 | " in (Path(__file__).resolve().parents[1] / "README.md").read_text()  # its exit code is documented
