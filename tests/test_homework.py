"""homework.md, grouping, the published baseline and provenance, on constructed run directories."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from simferry.analysis import baselines
from simferry.analysis.homework import HOMEWORK_HEADER, baseline_section, homework_table
from simferry.analysis.model import group_runs, load_runs, load_summaries, node_cell
from simferry.analysis.report import write_report
from simferry.records import environment

from .helpers import simferry
from .runs import fake_run

SEED_HEADER = (
    "| Implementation | Number of Nodes | Training Data Size (GB) | "
    "Simulation Run / IO Time (sec) | Training Run / IO Time (sec) |"
)


def rows(text: str) -> list[list[str]]:
    lines = text.splitlines()
    start = lines.index(SEED_HEADER)
    out = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        out.append([c.strip() for c in line.strip("|").split(" | ")])
    return out


def test_two_runs_differing_in_step_seconds_give_two_rows(tmp_path: Path) -> None:
    dirs = [
        fake_run(tmp_path, "a", step_seconds=0.0, sim_run=0.2, train_run=1.0),
        fake_run(tmp_path, "b", step_seconds=0.05, sim_run=1.2, train_run=1.5),
    ]
    text = write_report(load_summaries(dirs), tmp_path / "out")
    got = rows(text)
    assert [r[0] for r in got] == [
        "Local + file system (step_seconds=0.0)",
        "Local + file system (step_seconds=0.05)",
    ]
    assert [r[3].split(" / ")[0] for r in got] == ["0.20", "1.20"]  # each its own, no median
    for name in ("homework.md", "table.md"):
        assert "differ in step_seconds (0.0, 0.05)" in (tmp_path / "out" / name).read_text()


def test_repeats_of_one_configuration_share_a_row(tmp_path: Path) -> None:
    dirs = [fake_run(tmp_path, f"r{i}", sim_run=t) for i, t in enumerate((1.0, 2.0, 9.0))]
    runs, _ = load_runs(load_summaries(dirs))
    (g,) = group_runs(runs)
    assert g.n == 3 and g.median("sim_run_s") == pytest.approx(2.0)


def test_a_different_seed_or_host_set_is_another_configuration(tmp_path: Path) -> None:
    dirs = [
        fake_run(tmp_path, "a", seed=1),
        fake_run(tmp_path, "b", seed=2),
        fake_run(tmp_path, "c", seed=1, hosts=("h2",)),
    ]
    runs, _ = load_runs(load_summaries(dirs))
    tags = sorted(g.tag for g in group_runs(runs))
    assert tags == [
        "Local + file system (hosts=h1, seed=1)",
        "Local + file system (hosts=h1, seed=2)",
        "Local + file system (hosts=h2, seed=1)",
    ]


def test_homework_md_has_the_seed_header_and_its_cell_format(tmp_path: Path) -> None:
    dirs = [
        fake_run(tmp_path, "fs", num_sims=32, grid_size=512, sim_run=11.224, sim_io=0.0941),
        fake_run(tmp_path, "fut", transport="futures", num_sims=32, grid_size=512),
    ]
    write_report(load_summaries(dirs), tmp_path / "out")
    text = (tmp_path / "out" / "homework.md").read_text()
    assert SEED_HEADER in text.splitlines()
    assert "| " + " | ".join(HOMEWORK_HEADER) + " |" == SEED_HEADER
    fs, fut = rows(text)
    assert fs == ["Local + file system", "1", "0.62", "11.22 / 0.094", "2.00 / 0.020"]
    assert fut[0] == "Local + futures †" and fut[3] == "1.00 / 0.010"
    assert text.count("num_sims x 10 x grid² x 8 bytes / 1024³") == 1
    assert "† Pass-by-value" in text


def test_the_footnote_appears_only_with_a_pass_by_value_row(tmp_path: Path) -> None:
    runs, not_ok = load_runs(load_summaries([fake_run(tmp_path, "fs")]))
    assert "†" not in homework_table(group_runs(runs), not_ok)


def test_nodes_count_hosts_and_name_emulated_pools() -> None:
    assert node_cell(1, 2) == "2 pools, 1 host"
    assert node_cell(2, 2) == "2"
    assert node_cell(1, 1) == "1"
    assert node_cell(0, 2) == "2"  # no records: the pool count is all there is


def test_two_pools_on_one_host_are_one_node(tmp_path: Path) -> None:
    one = fake_run(tmp_path, "one", pools=2, hosts=("h1",), num_sims=4)
    two = fake_run(tmp_path, "two", pools=2, hosts=("h1", "h2"), num_sims=4)
    text = write_report(load_summaries([one, two]), tmp_path / "out")
    assert sorted(r[1] for r in rows(text)) == ["2", "2 pools, 1 host"]


def test_baseline_gives_ratios_at_the_published_configuration(tmp_path: Path) -> None:
    d = fake_run(
        tmp_path, "fs", num_sims=32, grid_size=512, sim_run=22.44, sim_io=0.047,
        train_run=14.90, train_io=0.844,
    )  # fmt: skip
    runs, _ = load_runs(load_summaries([d]))
    text = baseline_section(group_runs(runs), baselines.load("polaris"))
    (line,) = [x for x in text.splitlines() if x.startswith("| Local + file system")]
    assert line.endswith("| 2.00 / 0.50; 1.00 / 2.00 |")
    assert "| Parsl + file system (published, ALCF Polaris) | 1 | 0.62 | 11.22 / 0.094 |" in text
    assert "| DragonHPC + DDict (published, ALCF Polaris) | 1 | 0.62 | 7.01 / 0.233 |" in text
    assert "AMD EPYC Milan" in text and "A100" in text and "no ratio is given" not in text


def test_baseline_at_another_configuration_gives_no_ratio(tmp_path: Path) -> None:
    runs, _ = load_runs(load_summaries([fake_run(tmp_path, "fs", num_sims=8, grid_size=512)]))
    text = baseline_section(group_runs(runs), baselines.load("polaris"))
    (line,) = [x for x in text.splitlines() if x.startswith("| Local + file system")]
    assert line.endswith("| other configuration |")
    assert "so no ratio is given; `simferry compare --num-sims 32 --grid-size 512`" in text


def test_unknown_baseline_is_one_sentence(tmp_path: Path) -> None:
    from simferry.errors import UsageError

    with pytest.raises(
        UsageError, match="Unknown baseline 'nope'; the baselines shipped are: polaris"
    ):
        baselines.load("nope")


def test_report_writes_a_new_directory_and_never_overwrites(tmp_path: Path) -> None:
    fake_run(tmp_path / "runs", "fs")
    first = simferry("report", "runs", "--baseline", "polaris", cwd=tmp_path, check=True)
    (made,) = (tmp_path / "reports").iterdir()
    assert f"written to reports/{made.name}" in first.stdout
    assert SEED_HEADER in first.stdout and "Beside the published numbers" in first.stdout
    assert (made / "homework.md").read_text().startswith("# Data transfer")
    out = tmp_path / "mine"
    simferry("report", "runs", "--out", str(out), cwd=tmp_path, check=True)
    before = (out / "homework.md").stat().st_mtime_ns
    again = simferry("report", "runs", "--out", str(out), cwd=tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert f"{out} already holds a report (homework.md, table.md" in again.stderr
    assert (out / "homework.md").stat().st_mtime_ns == before


def test_csv_names_mean_what_summary_json_means(tmp_path: Path) -> None:
    d = fake_run(tmp_path, "fs")
    write_report(load_summaries([d]), tmp_path / "out")
    with open(tmp_path / "out" / "results.csv", newline="") as fh:
        (row,) = csv.DictReader(fh)
    s = json.loads((d / "summary.json").read_text())
    assert float(row["startup_s"]) == s["startup_s"]
    assert float(row["startup_total_s"]) == s["startup_s"] + s["trainer_ready_s"]
    assert row["hosts"] == "h1"


def test_environment_records_provenance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBS_JOBID", "1234.polaris-pbs-01")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    env = environment(0, seed=7)
    assert env["job_id"] == {"scheduler": "pbs", "id": "1234.polaris-pbs-01"}
    assert env["seed"] == 7 and isinstance(env["argv"], list)
    assert env["cpu_model"] and isinstance(env["gpu_models"], list)
    assert env["git_commit"] is None or len(env["git_commit"].split("+")[0]) == 40
