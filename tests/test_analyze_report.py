"""prune-analyze end to end on fake experiment directories: tables, fronts, report, bad inputs."""

from __future__ import annotations

import base64
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prune_core.schema import DETAIL_KEYS, EPOCH_KEYS, METRIC_KEYS
from prune_sweep import results as results_module
from prune_sweep.analysis import AXES
from prune_sweep.analyze_cli import main
from prune_sweep.fake_sweep import make_experiment, trial_rows, write_trial
from prune_sweep.results import RAY_KEYS, load_experiments

ROOT = Path(__file__).resolve().parents[1]

N_TRIALS = 40
FIGURES = ["front_flops", "front_flops_nz", "front_params", "front_latency", "front_compute", "acc_vs_ratio",
           "finetune_curves", "layer_channels"]
CONFIG = ["prune.method", "prune.criterion", "prune.scope", "prune.ratio", "finetune.lr"]  # all but the seed


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One analysed experiment: 2 errored, 3 stopped early, 1 pending, 1 still writing, the rest done,
    plus a stopped trial whose last row would beat every finished trial if it were counted."""
    root = tmp_path_factory.mktemp("sweep")
    expdir = make_experiment(root / "exp_a", n_trials=N_TRIALS, seed=1, errors=2, stopped=3, pending=1, running=1,
                             seeds=2)
    rows = trial_rows("channel", 0.9, "global", 0.01, 0, "cheater_00000", epochs=2, done=False,
                      costs_in_epochs=True)
    rows[-1].update(acc_final=99.9, flops_final=1000.0)
    write_trial(expdir, "train_trial_cheater_00000_99_x", {"prune.method": "channel", "prune.ratio": 0.9,
                                                           "prune.scope": "global"}, rows)
    out = root / "out"
    rc = main([str(expdir), "--out", str(out)])
    return expdir, out, rc


@pytest.fixture(scope="module")
def table(sweep):
    return pd.read_csv(sweep[1] / "results.csv")


def test_main_succeeds_and_writes_every_output(sweep):
    expdir, out, rc = sweep
    assert rc == 0
    for name in ("results.csv", "results.parquet", "pareto.csv", "hypervolume.csv", "report.html", "report.md"):
        assert (out / name).stat().st_size > 0, name
    for stem in FIGURES:
        assert (out / "figures" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / "figures" / f"{stem}.svg").read_bytes()[:2000]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out-")]  # no temp folder left


def test_one_row_per_trial_with_status_and_reason(sweep, table):
    expdir = sweep[0]
    assert len(table) == N_TRIALS + 1
    assert table["trial_id"].is_unique
    counts = table["status"].value_counts().to_dict()
    # running (half-written final line) and the fake stopped trial read as stopped
    assert counts == {"done": N_TRIALS - 7, "error": 2, "stopped": 3 + 1 + 1, "pending": 1}
    errors = table[table["status"] == "error"]
    for _, row in errors.iterrows():
        text = (expdir / row["trial_dir"] / "error.txt").read_text()
        assert row["reason"] == [ln for ln in text.splitlines() if ln.strip()][-1]
    done = table[table["status"] == "done"]
    assert done["acc_final"].notna().all() and done["flops_final"].notna().all()
    assert table[table["status"] == "pending"]["acc_final"].isna().all()
    assert {"prune.method", "prune.ratio", "prune.scope", "finetune.lr", "runtime.seed", "acc5_final",
            "speedup", "command"} <= set(table.columns)


def test_parquet_holds_the_same_table(sweep, table):
    parquet = pd.read_parquet(sweep[1] / "results.parquet")
    assert list(parquet.columns) == list(table.columns)
    assert parquet["trial_id"].tolist() == table["trial_id"].astype(str).tolist()
    np.testing.assert_allclose(parquet["acc_final"].to_numpy(float), table["acc_final"].to_numpy(float))


def _brute_front(cost, acc):
    idx = []
    for i in range(len(cost)):
        if not any(cost[j] <= cost[i] and acc[j] >= acc[i] and (cost[j] < cost[i] or acc[j] > acc[i])
                   for j in range(len(cost))):
            idx.append(i)
    return idx


def _configs(table, cost):
    """Finished trials with a validation accuracy, averaged over seeds: one row per configuration."""
    done = table[(table["status"] == "done") & table["val_acc_final"].notna()].copy()
    done["cost"] = cost(done)
    g = done.groupby(["experiment", *CONFIG], dropna=False)
    out = g.agg(cost=("cost", "mean"), val=("val_acc_final", "mean"), test=("acc_final", "mean"),
                test_std=("acc_final", "std"), n=("trial_id", "size")).reset_index()
    out["trials"] = g["trial_id"].agg(set).to_numpy()
    return out


def _front_trials(configs):
    front = configs.iloc[_brute_front(configs["cost"].to_numpy(), configs["val"].to_numpy())]
    return set().union(*front["trials"]) if len(front) else set()


@pytest.mark.parametrize("axis", AXES, ids=lambda a: a.key)
def test_front_is_the_non_dominated_configurations_on_validation(sweep, table, axis):
    configs = _configs(table, lambda d: d[axis.cost] / d[axis.base].where(d[axis.base] > 0, d[axis.fallback]))
    assert (configs["n"] == 2).any()  # seeds repeat: the front is on their means
    expected = _front_trials(configs)
    assert set(table.loc[table[f"front_{axis.key}"], "trial_id"]) == expected
    pareto = pd.read_csv(sweep[1] / "pareto.csv")
    on = pareto[(pareto["axis"] == axis.key) & (pareto["front"] == "all")]
    assert set().union(*(set(t.split()) for t in on["trials"])) == expected
    assert "cheater_00000" not in set(pareto["trial_id"])  # stopped early: never on a front


def test_per_method_fronts(table):
    for method, g in table[table["status"] == "done"].groupby("prune.method"):
        configs = _configs(g, lambda d: d["flops_frac"])
        assert set(g.loc[g["front_flops_method"], "trial_id"]) == _front_trials(configs), method


def test_compute_front_and_column(sweep, table):
    configs = _configs(table, lambda d: d["compute_epochs"])
    assert set(table.loc[table["front_compute"], "trial_id"]) == _front_trials(configs)
    done = table[table["status"] == "done"]
    # 19 trials per seed share its base (5 epochs); IMP retrains 2 levels x 4 epochs inside pruning
    per_base = table.groupby("runtime.seed").size()
    for _, row in done.iterrows():
        extra = 8 if row["prune.method"] == "imp" else 0
        assert row["compute_epochs"] == pytest.approx(4 + extra + 5 / per_base[row["runtime.seed"]])
    md = (sweep[1] / "report.md").read_text()
    assert "compute (epochs)" in md and "## Fairness of the comparison" in md


def test_hypervolume_matches_optuna_on_the_configurations(sweep, table):
    from optuna._hypervolume import compute_hypervolume

    hv = pd.read_csv(sweep[1] / "hypervolume.csv")
    assert set(hv["method"]) == {"all", "channel", "kernel", "intra_kernel", "imp"}
    done = table[table["status"] == "done"]
    for method in ("all", "channel", "imp"):
        g = done if method == "all" else done[done["prune.method"] == method]
        row = hv[hv["method"] == method].iloc[0]
        assert row["reference_acc"] == pytest.approx(10.0)  # 100 / num_classes
        for key in ("flops", "flops_nz"):
            c = _configs(g, lambda d: d[f"{key}_frac"])
            pts = c[["cost", "val"]].to_numpy()
            pts = pts[(pts[:, 0] <= 1.0) & (pts[:, 1] >= 10.0)]
            expected = compute_hypervolume(np.c_[pts[:, 0], -pts[:, 1]], np.array([1.0, -10.0])) if len(pts) else 0.0
            assert row[f"hv_{key}"] == pytest.approx(expected, rel=1e-9, abs=1e-9), (method, key)
    # unstructured pruning keeps dense FLOPs: no area against dense FLOPs, some against effective FLOPs
    imp = hv[hv["method"] == "imp"].iloc[0]
    assert imp["hv_flops"] == 0.0 and imp["hv_flops_nz"] > 0


def test_budget_winner_is_the_best_configuration_on_validation(sweep, table):
    md = (sweep[1] / "report.md").read_text()
    configs = _configs(table, lambda d: d["flops_frac"])
    for budget in (0.25, 0.5, 0.75):
        best = configs[configs["cost"] <= budget].sort_values("val", ascending=False).iloc[0]
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| ≤{100 * budget:g}% dense FLOPs"))
        assert any(t in line for t in best["trials"])
        assert f"{best['val']:.2f} ± " in line and f"{best['test']:.2f} ± " in line and f"(n={best['n']})" in line


def test_reproduce_command_has_one_set_per_swept_key(sweep, table):
    expdir = sweep[0]
    pareto = pd.read_csv(sweep[1] / "pareto.csv")
    chosen = pareto.loc[(pareto["axis"] == "flops") & (pareto["front"] == "all"), "trial_id"]
    front = table[table["trial_id"].isin(chosen)]  # the first seed's trial of each configuration
    assert len(front) >= 2
    md = (sweep[1] / "report.md").read_text()
    for _, row in front.iterrows():
        params = json.loads((expdir / row["trial_dir"] / "params.json").read_text())
        argv = shlex.split(row["command"])
        assert argv[:5] == ["python", "-m", "prune_core", "--config", str((expdir / "base.yaml").resolve())]
        sets = dict(a.split("=", 1) for a in argv[6::2])
        assert argv[5::2] == ["--set"] * len(params)
        assert set(sets) == set(params)
        assert sets["prune.method"] == params["prune.method"]
        assert float(sets["prune.ratio"]) == params["prune.ratio"]
        assert row["command"] in md


def test_report_md_has_the_sections_and_existing_figures(sweep):
    md = (sweep[1] / "report.md").read_text()
    for heading in ("## Summary", "## Pareto front: accuracy vs dense FLOPs", "## Best trial under a FLOPs budget",
                    "## Fairness of the comparison", "## Hypervolume", "## Failed trials (2)", "## Stopped early (5)",
                    "## Reproduce", "## Settings"):
        assert heading in md
    assert "CUDA out of memory" in md and "search: {algorithm: optuna" in md
    assert "Repeated seeds" in md  # every configuration ran with two seeds
    assert "chosen on validation accuracy; test accuracy is reported for the chosen trials only" in md
    for target in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (sweep[1] / target).is_file()


def test_report_html_is_self_contained(sweep):
    page = (sweep[1] / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)  # nothing fetched from anywhere
    assert "<link" not in page and "<script" not in page
    imgs = re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', page)
    assert len(imgs) == len(FIGURES)
    from PIL import Image

    for data in imgs:
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            img.verify()


def test_terminal_summary(sweep, capsys):
    expdir, _, _ = sweep
    out = expdir.parent / "again"
    assert main([str(expdir), "--out", str(out), "--budgets", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert "best at ≤30% dense FLOPs" in printed and "channel" in printed
    assert str(out / "report.html") in printed


def test_several_experiments_in_one_report_and_default_out(tmp_path):
    a = make_experiment(tmp_path / "runs" / "first", n_trials=10, seed=2, errors=0, stopped=1, pending=0)
    b = make_experiment(tmp_path / "runs" / "second", n_trials=8, seed=3, errors=1, stopped=0, pending=0,
                        methods=("channel", "kernel"), layer_channels=False)
    assert main([str(a), str(b)]) == 0
    out = a / "analysis"
    table = pd.read_csv(out / "results.csv")
    assert table.groupby("experiment").size().to_dict() == {"first": 10, "second": 8}
    for exp, g in table[table["status"] == "done"].groupby("experiment"):
        assert g["front_flops"].any(), exp
    hv = pd.read_csv(out / "hypervolume.csv")
    assert set(zip(hv["experiment"], hv["method"])) >= {("first", "all"), ("second", "all"), ("second", "kernel")}
    assert "| experiment |" in (out / "report.md").read_text()
    assert not (b / "analysis").exists()


def test_unfinished_sweep_without_layer_channels(tmp_path):
    exp = make_experiment(tmp_path / "young", n_trials=4, errors=0, stopped=1, pending=3, layer_channels=False)
    out = tmp_path / "out"
    assert main([str(exp), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "No trial has finished yet" in md
    assert "Per-layer channels at FLOPs budgets: skipped, no trial reported layer_channels" in md
    assert not (out / "figures" / "layer_channels.png").exists()
    assert (out / "figures" / "front_flops.png").exists()
    assert pd.read_csv(out / "results.csv")["status"].value_counts().to_dict() == {"pending": 3, "stopped": 1}


def test_progress_csv_is_read_when_result_json_is_missing(tmp_path):
    exp = make_experiment(tmp_path / "e", n_trials=3, errors=0, stopped=0, pending=0)
    tdir = sorted(p for p in exp.iterdir() if p.is_dir())[0]
    rows = [json.loads(line) for line in (tdir / "result.json").read_text().splitlines()]
    flat = [{k: v for k, v in r.items() if not isinstance(v, dict)} for r in rows]
    pd.DataFrame(flat).to_csv(tdir / "progress.csv", index=False)
    (tdir / "result.json").unlink()
    results = load_experiments([exp])
    row = results.table.set_index("trial_dir").loc[tdir.name]
    assert row["status"] == "done"
    assert row["acc_final"] == pytest.approx(rows[-1]["acc_final"])


def test_restored_trial_reports_each_epoch_once(tmp_path):
    exp = make_experiment(tmp_path / "e", n_trials=1, errors=0, stopped=0, pending=0)
    tdir = next(p for p in exp.iterdir() if p.is_dir())
    lines = (tdir / "result.json").read_text().splitlines()
    repeated = lines[:3] + [line.replace('"val_acc": ', '"val_acc": 1') for line in lines[1:]]  # epochs 2.. again
    (tdir / "result.json").write_text("\n".join(repeated) + "\n")
    curves = load_experiments([exp]).curves
    assert curves["epoch"].tolist() == [1, 2, 3, 4]
    assert (curves["val_acc"].iloc[1:] > 100).all()  # the later report of a repeated epoch wins


def test_smoke_test_of_the_entry_script(tmp_path):
    # from another folder: the generated sweep ships inside the package, not beside the tests
    proc = subprocess.run([sys.executable, str(ROOT / "analyze.py"), "--smoke-test"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "smoke test passed" in proc.stdout


class _RecordingRow(dict):
    """A result row that notes every key read from it; listing all its keys counts as reading one
    key that nothing declares."""

    def __init__(self, row, read):
        super().__init__(row)
        self.read = read

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)

    def __iter__(self):
        self.read.add("<every key>")
        return super().__iter__()

    def keys(self):
        self.read.add("<every key>")
        return super().keys()

    def items(self):
        self.read.add("<every key>")
        return super().items()

    def values(self):
        self.read.add("<every key>")
        return super().values()


def test_the_loader_reads_only_declared_result_keys(tmp_path, monkeypatch):
    exp = make_experiment(tmp_path / "e", n_trials=12, errors=1, stopped=2, pending=1, running=1)
    tdir = sorted(p for p in exp.iterdir() if p.is_dir())[-1]
    rows = [json.loads(line) for line in (tdir / "result.json").read_text().splitlines()]
    for r in rows:
        r.update(acc_final_undeclared=1.0, layer_channels_undeclared={"conv1": 3})
    (tdir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    read = set()
    rows_of = results_module._read_rows
    monkeypatch.setattr(results_module, "_read_rows", lambda d: [_RecordingRow(r, read) for r in rows_of(d)])
    results = load_experiments([exp])
    assert {"trial_id", "stage", "acc_final", "layer_channels_final", "val_acc"} <= read  # the rows were read
    declared = set(METRIC_KEYS) | set(DETAIL_KEYS) | set(EPOCH_KEYS) | set(RAY_KEYS)
    assert read <= declared, sorted(read - declared)
    assert "node_id" in rows[0]  # launch.py's reporter adds it to every row; nothing reads it
    assert not {"node_id", "acc_final_undeclared", "layer_channels_undeclared"} & set(results.table.columns)


# ---------------------------------------------------------------------------------------------
# bad inputs: exit code 2, one line on stderr naming the path, nothing written


def _bad_cases(tmp_path):
    cases = {}
    cases["missing"] = (tmp_path / "nope", "no such directory")
    (tmp_path / "file.txt").write_text("x")
    cases["file"] = (tmp_path / "file.txt", "not a directory")
    (tmp_path / "plain" / "sub").mkdir(parents=True)
    cases["not_experiment"] = (tmp_path / "plain", "not an experiment directory")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "sweep.yaml").write_text("name: empty\n")
    cases["empty"] = (tmp_path / "empty", "empty experiment, no trials yet")
    exp = make_experiment(tmp_path / "corrupt_result", n_trials=3, errors=0, stopped=0, pending=0)
    tdir = sorted(p for p in exp.iterdir() if p.is_dir())[1]
    lines = (tdir / "result.json").read_text().splitlines(keepends=True)
    lines[1] = "{not json\n"
    (tdir / "result.json").write_text("".join(lines))
    cases["corrupt_result"] = (tdir / "result.json", "line 2 is not JSON")
    exp = make_experiment(tmp_path / "corrupt_params", n_trials=2, errors=0, stopped=0, pending=0)
    tdir = sorted(p for p in exp.iterdir() if p.is_dir())[0]
    (tdir / "params.json").write_text("[1, 2]")
    cases["corrupt_params"] = (tdir / "params.json", "expected a JSON object")
    return cases


@pytest.mark.parametrize("case", ["missing", "file", "not_experiment", "empty", "corrupt_result", "corrupt_params"])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, case):
    path, words = _bad_cases(tmp_path)[case]
    arg = path if case not in ("corrupt_result", "corrupt_params") else tmp_path / case
    out = tmp_path / "out"
    assert main([str(arg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("prune-analyze: error: ") and str(path) in err and words in err, err
    assert not out.exists()
    assert not (Path(arg) / "analysis").exists() or not Path(arg).is_dir()


def test_bad_input_does_not_touch_an_existing_report(sweep, tmp_path, capsys):
    out = tmp_path / "kept"
    shutil.copytree(sweep[1], out)
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main([str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert capsys.readouterr().err.count("\n") == 1


def test_half_written_last_line_is_not_an_error(tmp_path):
    exp = make_experiment(tmp_path / "live", n_trials=3, errors=0, stopped=0, pending=0, running=1)
    table = load_experiments([exp]).table
    assert table["status"].value_counts().to_dict() == {"done": 2, "stopped": 1}


# ---------------------------------------------------------------------------------------------
# the report in a real headless browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# written into the DOM once the page has loaded: 1 per <img> that decoded, 0 per one that did not
IMG_CHECK = ("<script>window.addEventListener('load',function(){document.body.setAttribute('data-img-check',"
             "Array.from(document.images).map(function(i){return i.complete&&i.naturalWidth>0?'1':'0'}).join(''))"
             "});</script>")


def _chromium(tmp_path, *args):
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                  "(apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(sweep, tmp_path):
    report = sweep[1] / "report.html"
    shot = tmp_path / "shot.png"
    proc = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", report.resolve().as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 10  # text, tables and a figure, not a blank page
    assert (pixels < 128).mean() > 0.01

    # every figure decodes in the browser; a broken image appended as a control must read 0
    page = report.read_text().replace("</body>", '<img src="data:image/png;base64,AAAA">' + IMG_CHECK + "</body>")
    probe = tmp_path / "probe.html"
    probe.write_text(page)
    proc = _chromium(tmp_path, "--dump-dom", probe.resolve().as_uri())
    found = re.search(r'data-img-check="([01]*)"', proc.stdout)
    assert found, proc.stderr[-2000:]
    assert found.group(1) == "1" * len(FIGURES) + "0"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                  "(apt-get install -y chromium)")
def test_multi_seed_report_shows_error_bars_in_chromium(sweep, tmp_path):
    proc = _chromium(tmp_path, "--dump-dom", (sweep[1] / "report.html").resolve().as_uri())
    dom = proc.stdout
    assert "<figcaption>" in dom, proc.stderr[-2000:]
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", dom)
    # drawn (and named in the caption) only where a configuration ran with several seeds
    assert sum("± 1 std of test accuracy over seeds" in c for c in captions) >= 5
    cells = re.findall(r"<td>([^<]*)</td>", dom)
    assert any(re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d \(n=2\)", c) for c in cells)


def test_one_seed_report_has_no_error_bars(tmp_path):
    exp = make_experiment(tmp_path / "single", n_trials=12, errors=0, stopped=0, pending=0)
    out = tmp_path / "out"
    assert main([str(exp), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "±" not in md and "over seeds" not in md and "Repeated seeds" not in md
    assert "chosen on validation accuracy" in md


def test_latency_timed_alone_replaces_what_the_trial_timed(tmp_path):
    expdir = make_experiment(tmp_path / "exp", n_trials=6, seed=3, errors=0, stopped=0)
    before = load_experiments([expdir]).table.set_index("trial_id")
    done = before[before["status"] == "done"].index[:2]
    quiet = {done[0]: {"latency_ms_base": 2.0, "latency_ms_final": 1.0, "latency_ms_final_iqr": 0.01,
                       "speedup": 2.0, "latency_pass": "quiet", "not_a_metric": 5},
             "no_such_trial": {"latency_ms_final": 9.0}}
    (expdir / "latency.json").write_text(json.dumps(quiet))
    after = load_experiments([expdir]).table.set_index("trial_id")
    row = after.loc[done[0]]
    assert (row["latency_ms_final"], row["speedup"], row["latency_pass"]) == (1.0, 2.0, "quiet")
    assert "not_a_metric" not in after.columns  # only declared keys are read
    assert after.loc[done[1], "latency_ms_final"] == before.loc[done[1], "latency_ms_final"]  # not timed: kept
    (expdir / "latency.json").write_text("[1, 2]")
    with pytest.raises(results_module.AnalyzeError, match=r"latency.json: expected a JSON object of trial ids"):
        load_experiments([expdir])


def test_budget_winners_of_a_study_of_two_models_are_chosen_per_model(tmp_path):
    """A budget is a fraction of each model's own dense FLOPs: a study that sweeps ``model.name``
    names a winner per model and budget, each the best on validation among that model's trials."""
    from prune_sweep.analysis import analyze_results
    from prune_sweep.report import summary_text

    expdir = make_experiment(tmp_path / "two", n_trials=24, seed=3, errors=0, stopped=0, pending=0)
    sweep = (expdir / "sweep.yaml").read_text()
    (expdir / "sweep.yaml").write_text(sweep.replace("space:\n", "space:\n  model.name: {choice: [resnet20, "
                                                                 "torchvision:resnet18]}\n"))
    for i, params_file in enumerate(sorted(expdir.glob("*/params.json"))):
        params = json.loads(params_file.read_text())
        params["model.name"] = "torchvision:resnet18" if i % 2 else "resnet20"
        params_file.write_text(json.dumps(params))
        if i % 2:  # a bigger network: every FLOPs figure 30 times resnet20's
            rows = [json.loads(line) for line in (params_file.parent / "result.json").read_text().splitlines()]
            for r in rows:
                r.update({k: v * 30 for k, v in r.items() if k.startswith("flops")})
            (params_file.parent / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    a = analyze_results(load_experiments([expdir]), budgets=(0.3, 0.6))
    b = a.budgets[a.budgets["axis"] == "flops"]
    assert sorted(b["model"]) == ["resnet20", "resnet20", "torchvision.resnet18", "torchvision.resnet18"]
    configs = a.configs
    for _, row in b.iterrows():
        mine = configs[(configs["model.name"].str.replace(":", ".") == row["model"])
                       & (configs["flops_frac"] <= row["budget"] + 1e-12)]
        assert row["trial_id"] == mine.sort_values("val_acc_final", ascending=False)["trial_id"].iloc[0]
        assert row["prune.method"].endswith(f" @ {row['model']}")
    text = summary_text(a)
    assert "best at ≤30% dense FLOPs of torchvision.resnet18: " in text and "of resnet20: " in text


def test_a_point_at_or_below_chance_never_wins_a_budget_nor_sits_on_a_front(tmp_path):
    """One trial under a budget at 1 % validation accuracy (chance is 10 % with 10 classes): the
    budget is left without a winner and says why, and the point is on no front."""
    from prune_sweep.analysis import analyze_results
    from prune_sweep.report import summary_text

    expdir = make_experiment(tmp_path / "chance", n_trials=6, seed=1, errors=0, stopped=0, pending=0,
                             ratios=(0.2, 0.35))
    rows = trial_rows("channel", 0.9, "global", 0.01, 0, "guess_00099", epochs=2)
    for r in rows:  # the cheapest trial by far, and no better than guessing
        r.update({k: v * 0.05 for k, v in r.items() if k.startswith("flops") and not k.endswith("base")})
        r.update({k: 1.0 for k in ("val_acc_final", "acc_final") if k in r})
    write_trial(expdir, "train_trial_guess_00099_0.9_x", {"prune.method": "channel", "prune.ratio": 0.9,
                                                          "prune.scope": "global", "finetune.lr": 0.01}, rows)
    a = analyze_results(load_experiments([expdir]), budgets=(0.1, 1.0))
    guess = a.table[a.table["trial_id"] == "guess_00099"].iloc[0]
    assert guess["flops_frac"] <= 0.1 and guess["val_acc_final"] == 1.0
    assert not guess[[c for c in a.table.columns if c.startswith("front_")]].any()
    assert "guess_00099" not in set(a.fronts["trial_id"])
    b = a.budgets[a.budgets["axis"] == "flops"].set_index("budget")
    assert not isinstance(b.loc[0.1].get("trial_id"), str) and b.loc[0.1, "at_chance"] == 1
    assert isinstance(b.loc[1.0, "trial_id"], str) and b.loc[1.0, "trial_id"] != "guess_00099"
    assert "best at ≤10% dense FLOPs: none above chance (1 configuration this cheap, each at or below chance " \
           "accuracy)" in summary_text(a)
