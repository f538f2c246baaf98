"""``simferry submit``: PBS / Slurm job scripts, their validation and their submission.

No scheduler exists here: scripts are checked as text and with ``bash -n``; submission
runs a stand-in ``qsub``/``sbatch`` script on PATH that records what it was given; one
integration test runs a generated script with bash, as the job would.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from simferry.cli import main

from .helpers import only_run_dir

RUN = ["--", "run", "--num-sims", "64", "--grid-size", "512", "--transport", "filesystem"]


def submit(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(["submit", *args]))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def command_line(script: str) -> list[str]:
    """The measured simferry command of a job script, as the shell will split it."""
    last = [line for line in script.splitlines() if " -m simferry " in line][-1]
    return shlex.split(last)


def test_pbs_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--scheduler", "pbs", "--nodes", "2", "--queue", "debug", "--account", "ALCFAITP"]
    args += ["--walltime", "00:30:00", "--directive", "-l filesystems=home:eagle"]
    args += ["--setup", "module load conda", "--dry-run", *RUN]
    code, out, _ = submit(args, capsys)
    assert code == 0
    job_dir = only_run_dir(tmp_path / "runs")
    assert job_dir.name.endswith("-submit-pbs")
    script = (job_dir / "job.pbs").read_text()
    assert out == script
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash -l"
    for directive in (
        "#PBS -l select=2",
        "#PBS -l walltime=00:30:00",
        "#PBS -q debug",
        "#PBS -A ALCFAITP",
        "#PBS -l filesystems=home:eagle",
        f"#PBS -o {job_dir.resolve() / 'job.out'}",
    ):
        assert directive in lines
    assert lines.index("module load conda") < lines.index(
        f"source {Path(sys.prefix).resolve() / 'bin' / 'activate'}"
    )
    argv = command_line(script)
    assert argv[1:3] == ["-m", "simferry"]
    assert argv[3:] == [
        *RUN[1:],
        "--launcher",
        "parsl",
        "--provider",
        "pbs",
        "--nodes",
        "2",
        "--runs-dir",
        str(job_dir.resolve()),
    ]
    warmup = [line for line in lines if "warmup" in line and "-m simferry run" in line]
    assert len(warmup) == 1 and "--provider pbs" in warmup[0]
    assert subprocess.run(["bash", "-n", str(job_dir / "job.pbs")]).returncode == 0
    assert stat.S_IMODE((job_dir / "job.pbs").stat().st_mode) == 0o700


def test_slurm_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--scheduler", "slurm", "--nodes", "2", "--queue", "gpu", "--account", "proj"]
    code, out, _ = submit([*args, "--walltime", "02:00:00", "--dry-run", *RUN], capsys)
    assert code == 0
    job_dir = only_run_dir(tmp_path / "runs")
    lines = (job_dir / "job.sbatch").read_text().splitlines()
    for directive in (
        "#SBATCH --nodes=2",
        "#SBATCH --time=02:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj",
    ):
        assert directive in lines
    assert "--provider slurm" in out
    assert subprocess.run(["bash", "-n", str(job_dir / "job.sbatch")]).returncode == 0


def test_arguments_are_quoted_and_choices_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = str(tmp_path / "my data; $(touch pwned)")
    args = ["--scheduler", "slurm", "--dry-run", "--", "compare", "--launcher", "local"]
    args += ["--transports", "filesystem,futures", "--data-dir", odd]
    code, out, _ = submit(args, capsys)
    assert code == 0
    argv = command_line(out)
    assert argv[3:8] == ["compare", "--launcher", "local", "--transports", "filesystem,futures"]
    assert argv[argv.index("--data-dir") + 1] == odd
    assert "--provider" not in argv  # the command chose its launcher
    assert not (tmp_path / "pwned").exists()


def test_the_job_runs_the_command_with_its_launcher_provider_and_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--nodes given to submit is the run's node count; a chosen Parsl gets the provider."""
    base = ["--scheduler", "slurm", "--nodes", "4", "--dry-run", "--"]
    code, out, err = submit([*base, "run", "--launcher", "parsl", "--nodes", "4"], capsys)
    assert code == 0, err
    argv = command_line(out)
    assert argv[argv.index("--provider") + 1] == "slurm"
    assert argv.count("--nodes") == 1 and argv[argv.index("--nodes") + 1] == "4"

    code, out, err = submit([*base, "compare", "--num-sims", "2"], capsys)
    assert code == 0, err  # ddict (Dragon only) is a skipped row in the job, not a refusal
    argv = command_line(out)
    assert argv[3] == "compare" and argv[argv.index("--nodes") + 1] == "4"

    code, out, err = submit([*base, "sweep", "--nodes", "1,4", "--transports", "futures"], capsys)
    assert code == 0, err
    argv = command_line(out)
    assert argv[argv.index("--launchers") + 1] == "parsl"
    assert argv[argv.index("--provider") + 1] == "slurm"
    assert argv[argv.index("--nodes") + 1] == "1,4"
    warm = [line for line in out.splitlines() if "warmup" in line and "-m simferry run" in line]
    assert len(warm) == 1 and "--nodes 4" in warm[0] and "--provider slurm" in warm[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scheduler", "pbs", "--nodes", "2", "--", "run", "--nodes", "4"], "--nodes 4"),
        (["--scheduler", "slurm", "--", "sweep", "--nodes", "1,2"], "--nodes 2"),
        (["--scheduler", "pbs", "--walltime", "1h", *RUN], "walltime"),
        (["--scheduler", "pbs", "--walltime", "01:99:00", *RUN], "walltime"),
        (["--scheduler", "pbs", "--nodes", "0", *RUN], "--nodes"),
        (["--scheduler", "pbs", "--queue", "debug\n#PBS -l select=99", *RUN], "--queue"),
        (["--scheduler", "pbs", "--account", "a b", *RUN], "--account"),
        (["--scheduler", "pbs", "--setup", "a\nb", *RUN], "one line"),
        (["--scheduler", "lsf", *RUN], "invalid choice"),
        (["--scheduler", "pbs"], "after --"),
        (["--scheduler", "pbs", "--", "report", "runs"], "after --"),
        (["--scheduler", "pbs", "--", "run", "--num-sims", "0"], "num-sims"),
        (["--scheduler", "pbs", "--", "run", "--frobnicate"], "unrecognized"),
        (["--scheduler", "pbs", "--venv", "/nonexistent", *RUN], "virtual environment"),
    ],
)
def test_bad_input_is_one_sentence_exit_2_and_creates_nothing(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = submit(["--dry-run", *args], capsys)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_missing_qsub_suggests_dry_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, err = submit(["--scheduler", "pbs", *RUN], capsys)
    assert code == 2
    assert "qsub was not found" in err and "--dry-run" in err
    assert list(tmp_path.iterdir()) == []


def fake_scheduler(bindir: Path, name: str, output: str, code: int = 0) -> Path:
    """A stand-in qsub/sbatch that records its arguments and prints what a real one does."""
    bindir.mkdir(exist_ok=True)
    log = bindir / f"{name}.args"
    tool = bindir / name
    tool.write_text(f'#!/bin/sh\necho "$@" > {log}\necho "{output}"\nexit {code}\n')
    tool.chmod(0o755)
    return log


def test_submit_runs_qsub_and_keeps_the_job_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bindir = tmp_path / "bin"
    log = fake_scheduler(bindir, "qsub", "4242.polaris-pbs-01")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    code, out, _ = submit(["--scheduler", "pbs", "--nodes", "2", *RUN], capsys)
    assert code == 0
    job_dir = only_run_dir(tmp_path / "runs")
    assert log.read_text().strip() == str(job_dir.resolve() / "job.pbs")
    assert (job_dir / "job_id").read_text().strip() == "4242.polaris-pbs-01"
    assert "submitted job 4242.polaris-pbs-01" in out


def test_a_refused_submission_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bindir = tmp_path / "bin"
    fake_scheduler(bindir, "sbatch", "sbatch: error: invalid partition specified", code=1)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    code, _, err = submit(["--scheduler", "slurm", "--queue", "nope", *RUN], capsys)
    assert code == 1
    assert "sbatch refused the job (sbatch: error: invalid partition specified)" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.integration
def test_generated_script_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The script itself works: bash runs the warm-up and the run (local launcher here)."""
    args = ["--scheduler", "slurm", "--dry-run", "--", "run", "--launcher", "local"]
    args += ["--num-sims", "2", "--grid-size", "16", "--step-seconds", "0"]
    assert submit(args, capsys)[0] == 0
    job_dir = only_run_dir(tmp_path / "runs")
    proc = subprocess.run(
        ["bash", str(job_dir / "job.sbatch")], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "20 samples verified" in proc.stdout
    runs = [p for p in job_dir.iterdir() if (p / "summary.json").exists()]
    warm = [p for p in (job_dir / "warmup").iterdir() if (p / "summary.json").exists()]
    assert len(runs) == 1 and len(warm) == 1
    assert runs[0].name.endswith("-local-filesystem")


# --- site resources: PBS chunks, placement, file systems; conda ---------------------------


def script_of(tmp_path: Path, scheduler: str = "pbs") -> str:
    job_dir = only_run_dir(tmp_path / "runs")
    return (job_dir / f"job.{'pbs' if scheduler == 'pbs' else 'sbatch'}").read_text()


def test_polaris_site_fills_its_resources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--site", "polaris", "--nodes", "2", "--account", "ALCFAITP", "--dry-run", *RUN]
    code, _, err = submit(args, capsys)
    assert code == 0, err
    assert "warning" not in err
    lines = script_of(tmp_path).splitlines()
    for directive in (
        "#PBS -l select=2:system=polaris",
        "#PBS -l place=scatter",
        "#PBS -l filesystems=home:eagle",
        "#PBS -q debug",
        "#PBS -A ALCFAITP",
        "#PBS -k doe",
    ):
        assert directive in lines
    assert [line for line in lines if "select=" in line] == ["#PBS -l select=2:system=polaris"]
    assert lines.index("module load conda") < lines.index("set -eo pipefail") + 4
    argv = command_line("\n".join(lines))
    assert argv[argv.index("--provider") + 1] == "pbs"
    assert argv[argv.index("--nodes") + 1] == "2"  # the select chunk's count, inside the job too


def test_a_full_chunk_spec_sets_the_node_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--scheduler", "pbs", "--select", "2:ngpus=4:system=polaris", "--place", "scatter"]
    args += ["--filesystems", "home:eagle", "--keep", "n", "--dry-run", *RUN]
    assert submit(args, capsys)[0] == 0
    lines = script_of(tmp_path).splitlines()
    assert "#PBS -l select=2:ngpus=4:system=polaris" in lines
    assert "#PBS -l place=scatter" in lines and "#PBS -l filesystems=home:eagle" in lines
    assert not [line for line in lines if line.startswith("#PBS -k")]


def test_pbs_without_filesystems_warns_once(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = submit(["--scheduler", "pbs", "--dry-run", *RUN], capsys)
    assert code == 0
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "--filesystems home:eagle" in warnings[0]
    code, _, err = submit(["--scheduler", "slurm", "--dry-run", *RUN], capsys)
    assert code == 0 and "warning" not in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scheduler", "pbs", "--directive", "-l select=2:ngpus=4"], "second select line"),
        (["--scheduler", "pbs", "--nodes", "4", "--select", "2:ngpus=4"], "different node"),
        (["--scheduler", "pbs", "--place", "scatter; rm -rf ~"], "PBS resource value"),
        (["--scheduler", "pbs", "--keep", "xyz"], "--keep takes"),
        (["--scheduler", "slurm", "--filesystems", "home"], "PBS resources"),
        (["--site", "polaris", "--scheduler", "slurm"], "uses --scheduler pbs"),
        ([], "Give --scheduler"),
        (["--scheduler", "pbs", "--conda", "/nonexistent"], "not a conda environment"),
    ],
)
def test_bad_site_resources_are_one_sentence(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = submit(["--dry-run", *args, *RUN], capsys)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_conda_environment_is_activated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / "envs" / "simferry"
    (env / "conda-meta").mkdir(parents=True)
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)  # no venv: the conda env is current
    monkeypatch.setenv("CONDA_PREFIX", str(env))
    assert submit(["--scheduler", "slurm", "--dry-run", *RUN], capsys)[0] == 0
    script = script_of(tmp_path, "slurm")
    lines = script.splitlines()
    assert 'eval "$(conda shell.bash hook)"' in lines
    assert f"conda activate {env.resolve()}" in lines
    assert "bin/activate" not in script
    assert command_line(script)[0] == str(env.resolve() / "bin" / "python")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
