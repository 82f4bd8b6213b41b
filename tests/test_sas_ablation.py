"""tools/sas_ablation.py end to end on the synthetic data: two variants, one seed, a small budget."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SMALL = ["--config", "configs/synthetic/unet.yaml", "--seeds", "0", "--variants", "baseline", "ssl",
         "--set", "model.args.base_channels=8", "model.args.depth=3", "train.iterations=20", "train.val_interval=20",
         "train.batch_size=4", "data.patch_size=64", "eval.distances=false",
         "--corruptions", "noise", "rotate", "--severities", "3"]


def ablation(*args, cache):
    return subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "sas_ablation.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO_ROOT,
                          env=dict(os.environ, JMEDSEG_CACHE=str(cache)))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    work, out = tmp_path_factory.mktemp("ablation"), tmp_path_factory.mktemp("results") / "ablation.md"
    cache = tmp_path_factory.mktemp("cache")
    proc = ablation(*SMALL, "--work-dir", work, "--out", out, cache=cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work, out, cache, proc


def test_every_run_is_trained_scored_and_tabled(first_run):
    work, out, cache, proc = first_run
    for variant in ("baseline", "ssl"):
        report = json.loads((work / f"{variant}-seed0" / "robustness.json").read_text())
        assert set(report["corruptions"]) == {"noise", "rotate"}
        assert 0 <= report["corruption_mean_dice"] <= 1 and 0 <= report["pooled"]["dice"] <= 1
        line = next(row for row in out.read_text().splitlines() if row.startswith("| " + {"baseline": "UNet baseline",
                                                                                           "ssl": "+SSL"}[variant]))
        assert f"{report['pooled']['dice']:.4f}" in line and f"{report['corruption_mean_dice']:.4f}" in line
        assert line.rstrip().endswith("| 1 |")
    # Dice per corruption: one row each, a column per variant, the severities' mean (one severity here)
    rows = {row.split(" | ")[0].lstrip("| "): row for row in out.read_text().splitlines() if row.startswith("| ")}
    for name in ("noise", "rotate"):
        cells = [json.loads((work / f"{v}-seed0" / "robustness.json").read_text())["corruptions"][name]["3"]
                 for v in ("baseline", "ssl")]
        assert rows[name] == f"| {name} | {cells[0]:.4f} | {cells[1]:.4f} |"
    assert "Headroom: the baseline loses" in out.read_text()
    # the +SSL run started from the seed's MoCo encoder, pretrained and cached as `--sas` does
    assert len(list(cache.glob("ssl/*/encoder.npz"))) == 1
    ssl_log = (work / "ssl-seed0.log").read_text()
    assert "loaded" in ssl_log and "encoder tensors" in ssl_log
    assert "encoder tensors" not in (work / "baseline-seed0.log").read_text()
    assert "it/s" not in ssl_log  # no progress bars in the logs
    assert "- Table written at commit `" in out.read_text() and "table:" in proc.stdout


def test_second_run_reuses_finished_runs(first_run):
    work, out, cache, _ = first_run
    logs = {p.name: p.read_text() for p in work.glob("*.log")}
    proc = ablation(*SMALL, "--work-dir", work, "--out", out, cache=cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p.name: p.read_text() for p in work.glob("*.log")} == logs  # nothing was run again


def test_bad_config_is_a_one_line_error(tmp_path):
    proc = ablation("--config", tmp_path / "missing.yaml", "--work-dir", tmp_path, cache=tmp_path)
    assert proc.returncode == 2 and "missing.yaml: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_each_run_leaves_a_record_of_its_scores_and_protocol(first_run):
    work, out, _, _ = first_run
    records = out.with_name("ablation_runs")
    for variant in ("baseline", "ssl"):
        record = json.loads((records / f"{variant}-seed0.json").read_text())
        assert record["report"] == json.loads((work / f"{variant}-seed0" / "robustness.json").read_text())
        assert (record["variant"], record["seed"]) == (variant, 0)
        protocol = record["protocol"]
        assert protocol["corruptions"] == ["noise", "rotate"] and protocol["severities"] == [3]
        assert protocol["config"]["train"]["iterations"] == 20 and protocol["config"]["train"]["seed"] == 0
        assert protocol["config"]["model"]["ssl"] is None and protocol["config"]["work_dir"] is None
        assert (protocol["moco"] is None) == (variant == "baseline")
        assert record["train_time_s"] > 0 and len(record["commit"]) >= 40
        assert f"`{record['commit'][:12]}`" in out.read_text()


def test_records_alone_rebuild_the_table_without_training(first_run, tmp_path):
    """A fresh machine has the committed records but none of the run folders: nothing is trained again."""
    _, out, _, _ = first_run
    table = out.read_text()
    proc = ablation(*SMALL, "--work-dir", tmp_path / "empty", "--out", out, cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not list((tmp_path / "empty").iterdir()) and not (tmp_path / "cache").exists()
    assert out.read_text().replace(str(tmp_path / "empty"), "") == table.replace(str(first_run[0]), "")


def test_the_table_covers_every_record_whichever_variants_are_asked_for(first_run, tmp_path):
    _, out, cache, _ = first_run
    only_baseline = [arg for arg in SMALL if arg != "ssl"]
    proc = ablation(*only_baseline, "--work-dir", tmp_path, "--out", out, cache=cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [row for row in out.read_text().splitlines() if row.startswith(("| UNet baseline", "| +SSL", "| +Aug"))]
    assert [row.rstrip().rsplit("|", 2)[-2].strip() for row in rows] == ["1", "0", "1"]


def test_the_diagnostic_variant_runs_only_when_named_and_then_gets_a_row(first_run, tmp_path):
    work, out, cache, _ = first_run
    assert "+Aug+SSL" not in out.read_text()  # not in the default variants, no row without a run
    diagnostic = [arg if arg != "ssl" else "aug_ssl" for arg in SMALL if arg != "baseline"]
    report = tmp_path / "ablation.md"
    (tmp_path / "ablation_runs").mkdir()
    for name in ("baseline", "ssl"):  # the first run's records, so the table has its baseline
        (tmp_path / "ablation_runs" / f"{name}-seed0.json").write_text(
            (out.with_name("ablation_runs") / f"{name}-seed0.json").read_text())
    proc = ablation(*diagnostic, "--work-dir", tmp_path / "runs", "--out", report, cache=cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (tmp_path / "runs").glob("*.log")) == ["aug_ssl-seed0.log"]
    log = (tmp_path / "runs" / "aug_ssl-seed0.log").read_text()
    assert "encoder tensors" in log and "--aug" in log and "--stn" not in log
    record = json.loads((tmp_path / "ablation_runs" / "aug_ssl-seed0.json").read_text())
    config = record["protocol"]["config"]
    assert config["data"]["augment"] and not config["model"]["stn"] and record["protocol"]["moco"]
    rows = [row for row in report.read_text().splitlines() if row.startswith("| ")]
    variant_rows = [row.split(" | ")[0].lstrip("| ") for row in rows if row.rstrip().endswith(("| 0 |", "| 1 |"))]
    assert variant_rows == ["UNet baseline", "+Aug", "+STN", "+SSL", "+SAS (all three)", "+Aug+SSL (no STN)"]
    assert report.read_text().count("+Aug+SSL (no STN)") == 3  # its row, its corruption column, its seed line


def test_a_record_of_another_protocol_is_refused_naming_it(first_run, tmp_path):
    _, out, cache, _ = first_run
    other = [arg if arg != "train.iterations=20" else "train.iterations=30" for arg in SMALL]
    proc = ablation(*other, "--work-dir", tmp_path, "--out", out, cache=cache)
    assert proc.returncode == 2
    assert "baseline-seed0.json: recorded under another protocol (differs in config.train.iterations)" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())
    proc = ablation(*SMALL[:-1], "2", "--work-dir", tmp_path, "--out", out, cache=cache)
    assert proc.returncode == 2 and "(differs in severities)" in proc.stderr


def test_a_run_folder_of_another_protocol_is_neither_resumed_nor_reused(first_run, tmp_path):
    work, _, cache, _ = first_run
    logs = {p.name: p.read_text() for p in work.glob("*.log")}
    other = [arg if arg != "train.iterations=20" else "train.iterations=30" for arg in SMALL]
    proc = ablation(*other, "--work-dir", work, "--out", tmp_path / "ablation.md", cache=cache)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (f"{work / 'baseline-seed0'}: run folder trained or scored under another protocol "
            "(differs in config.train.iterations)") in proc.stderr
    proc = ablation(*SMALL[:-1], "2", "--work-dir", work, "--out", tmp_path / "ablation.md", cache=cache)
    assert proc.returncode == 2 and "baseline-seed0: run folder trained or scored under another protocol " \
                                    "(differs in severities)" in proc.stderr
    assert {p.name: p.read_text() for p in work.glob("*.log")} == logs and not (tmp_path / "ablation.md").exists()


def test_an_unreadable_record_is_a_one_line_error(tmp_path):
    records = tmp_path / "ablation_runs"
    records.mkdir()
    (records / "baseline-seed0.json").write_text("{not json")
    proc = ablation(*SMALL, "--work-dir", tmp_path / "work", "--out", tmp_path / "ablation.md", cache=tmp_path)
    assert proc.returncode == 2 and "baseline-seed0.json: unreadable run record" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("table, sets, variant", [
    ("sas_ablation.md", ["eval.distances=false"], "baseline"),
    ("sas_ablation_tolerance_0.02.md", ["eval.distances=false", "model.stn_tolerance=0.02"], "sas"),
])
def test_the_committed_table_is_what_the_committed_records_give(tmp_path, table, sets, variant):
    """A committed ablation table holds only numbers its records produce under today's protocol."""
    committed = REPO_ROOT / "results" / table
    data = tmp_path / "DRIVE"  # records keep only the dataset folder's name
    data.mkdir()
    out = tmp_path / table
    proc = ablation("--data", data, "--set", *sets, "--severities", "2,4", "--seeds", "0",
                    "--variants", variant, "--records", committed.with_name(committed.stem + "_runs"), "--out", out,
                    "--work-dir", tmp_path / "runs", cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not list((tmp_path / "runs").iterdir())  # every record matched: nothing was trained

    def body(text):
        return text[text.index("| variant |"):text.index("- Command:")]
    assert body(out.read_text()) == body(committed.read_text())
