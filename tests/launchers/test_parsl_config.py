"""Building Parsl's configuration for local, PBS and Slurm, inside and outside a job.

Nothing is started here: no scheduler is needed, the allocation comes from the
environment variables PBS and Slurm set, which the tests set themselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from parsl.launchers import MpiExecLauncher, SingleNodeLauncher, SrunLauncher
from parsl.providers import LocalProvider, PBSProProvider, SlurmProvider

from simferry.config import build
from simferry.errors import UsageError
from simferry.launchers.parsl import (
    ParslConfig,
    expand_hostlist,
    pbs_allocation,
    slurm_allocation,
)

ALLOCATION_VARS = [
    "PBS_NODEFILE",
    "PBS_JOBID",
    "SLURM_JOB_ID",
    "SLURM_JOBID",
    "SLURM_JOB_NUM_NODES",
    "SLURM_NNODES",
    "SLURM_JOB_NODELIST",
    "SLURM_NODELIST",
]


@pytest.fixture(autouse=True)
def no_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start outside any job, on a machine without GPUs."""
    for var in ALLOCATION_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def pbs_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    nodefile = tmp_path / "nodefile"
    # PBS lists a host once per rank; simferry counts hosts.
    nodefile.write_text("x3001\nx3001\nx3002\nx3002\nx3003\n")
    monkeypatch.setenv("PBS_NODEFILE", str(nodefile))
    monkeypatch.setenv("PBS_JOBID", "123.polaris-pbs-01")
    return nodefile


def executors(cfg: ParslConfig, tmp_path: Path, num_sims: int = 8, trainers: int | None = None):
    config = cfg.parsl_config(cfg.plan(num_sims, trainers), tmp_path)
    by_label = {ex.label: ex for ex in config.executors}
    return config, by_label["sims"], by_label["trainers"]


@pytest.mark.parametrize(
    ("spec", "hosts"),
    [
        ("nid001", ["nid001"]),
        ("nid[001-003]", ["nid001", "nid002", "nid003"]),
        ("nid[008-010,012],login1", ["nid008", "nid009", "nid010", "nid012", "login1"]),
        ("a[1-2]-ib,b", ["a1-ib", "a2-ib", "b"]),
        ("", []),
    ],
)
def test_expand_hostlist(spec: str, hosts: list[str]) -> None:
    assert expand_hostlist(spec) == hosts


def test_no_allocation_outside_jobs() -> None:
    assert pbs_allocation({}) is None
    assert slurm_allocation({}) is None
    assert ParslConfig(provider="pbs").node_count() == 1
    assert ParslConfig(provider="slurm").node_count() == 1


def test_pbs_nodefile_counts_unique_hosts(pbs_job: Path) -> None:
    alloc = pbs_allocation({"PBS_NODEFILE": str(pbs_job), "PBS_JOBID": "7"})
    assert alloc is not None
    assert alloc.hosts == ("x3001", "x3002", "x3003")
    assert alloc.nodes == 3
    assert ParslConfig(provider="pbs").node_count() == 3
    assert ParslConfig(provider="pbs", nodes=2).node_count() == 2
    # The local provider ignores a surrounding job.
    assert ParslConfig(provider="local").node_count() == 1


def test_unreadable_pbs_nodefile_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="PBS_NODEFILE"):
        pbs_allocation({"PBS_NODEFILE": str(tmp_path / "missing")})


def test_slurm_allocation_from_env() -> None:
    env = {"SLURM_JOB_ID": "42", "SLURM_JOB_NUM_NODES": "4", "SLURM_NODELIST": "nid[1-4]"}
    alloc = slurm_allocation(env)
    assert alloc is not None and (alloc.nodes, alloc.job_id) == (4, "42")
    # Without the count, the node list gives it.
    alloc = slurm_allocation({"SLURM_JOB_ID": "42", "SLURM_NODELIST": "nid[1-3],gpu7"})
    assert alloc is not None and alloc.nodes == 4
    assert ParslConfig(provider="slurm").node_count(env) == 4


def test_local_provider_one_block_per_node_on_loopback(tmp_path: Path) -> None:
    cfg = ParslConfig(nodes=2, sim_workers=4)
    config, sims, trainers = executors(cfg, tmp_path, num_sims=8, trainers=2)
    assert config.run_dir == str(tmp_path / "parsl")
    assert config.strategy == "none"
    assert isinstance(sims.provider, LocalProvider)
    assert isinstance(sims.provider.launcher, SingleNodeLauncher)
    assert (sims.provider.init_blocks, sims.provider.max_blocks) == (2, 2)
    assert sims.address == "127.0.0.1"
    assert sims.all_addresses == {"127.0.0.1"}
    assert sims.max_workers_per_node == 2
    assert (trainers.provider.init_blocks, trainers.max_workers_per_node) == (2, 1)
    assert trainers.available_accelerators == []
    # Parsl's processes run with this interpreter, not whatever is first on PATH.
    import sys

    assert sims.launch_cmd.startswith(sys.executable + " -m parsl.")
    assert sims.interchange_launch_cmd[0] == sys.executable


def test_local_defaults_follow_the_local_launcher(tmp_path: Path) -> None:
    plan = ParslConfig(cpus_per_node=2).plan(num_sims=8, trainers=None)
    assert (plan.nodes, plan.sim_workers, plan.trainers) == (1, 2, 1)
    plan = ParslConfig(cpus_per_node=16).plan(num_sims=4, trainers=None)
    assert plan.sim_workers == 4


def test_trainers_get_one_gpu_each(tmp_path: Path) -> None:
    cfg = ParslConfig(nodes=2, gpus_per_node=4)
    _, _, trainers = executors(cfg, tmp_path)
    assert trainers.available_accelerators == ["0", "1", "2", "3"]
    assert trainers.provider.init_blocks == 2
    plan = cfg.plan(8, None)
    assert (plan.trainers, plan.trainers_per_node) == (8, 4)
    # More trainers than GPUs share them round-robin instead of failing.
    _, _, trainers = executors(ParslConfig(gpus_per_node=2), tmp_path, trainers=3)
    assert trainers.available_accelerators == ["0", "1", "0"]


def test_pbs_outside_a_job_submits_with_pbspro(tmp_path: Path) -> None:
    cfg = ParslConfig(
        provider="pbs",
        nodes=2,
        account="ALCFAITP",
        queue="debug",
        walltime="01:00:00",
        select_options="ngpus=4",
        scheduler_options="#PBS -l filesystems=home:eagle",
        worker_init="module load conda",
        cpus_per_node=64,
    )
    _, sims, _ = executors(cfg, tmp_path)
    p = sims.provider
    assert isinstance(p, PBSProProvider)
    assert (p.account, p.queue, p.walltime, p.nodes_per_block) == (
        "ALCFAITP",
        "debug",
        "01:00:00",
        2,
    )
    assert p.select_options == "ngpus=4"
    assert "filesystems=home:eagle" in p.scheduler_options
    assert p.worker_init == "module load conda"
    assert isinstance(p.launcher, MpiExecLauncher)
    assert "--ppn 1" in p.launcher("CMD", 1, 2)
    # Workers on other nodes must reach the interchange: not loopback only.
    assert sims.address is None


def test_pbs_inside_a_job_uses_the_job_nodes(pbs_job: Path, tmp_path: Path) -> None:
    cfg = ParslConfig(provider="pbs")
    _, sims, trainers = executors(cfg, tmp_path, trainers=3)
    assert isinstance(sims.provider, LocalProvider)
    assert isinstance(sims.provider.launcher, MpiExecLauncher)
    assert sims.provider.nodes_per_block == 3
    assert trainers.provider.nodes_per_block == 3
    script = sims.provider.launcher("CMD", 1, 3)
    assert "PBS_NODEFILE" in script and "mpiexec --cpu-bind none --ppn 1 -n $WORKERCOUNT" in script


def test_pbs_nodes_beyond_the_job_are_refused(pbs_job: Path) -> None:
    reason = ParslConfig(provider="pbs", nodes=5).unavailable_reason()
    assert reason is not None and "3 node(s)" in reason and "--nodes 5" in reason


def test_missing_scheduler_commands_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "qsub" in (ParslConfig(provider="pbs").unavailable_reason() or "")
    assert "sbatch" in (ParslConfig(provider="slurm").unavailable_reason() or "")
    assert ParslConfig(provider="local").unavailable_reason() is None


def test_slurm_outside_and_inside_an_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = ParslConfig(provider="slurm", nodes=2, queue="gpu", account="proj", walltime="00:10:00")
    _, sims, _ = executors(cfg, tmp_path)
    p = sims.provider
    assert isinstance(p, SlurmProvider)
    assert (p.partition, p.account, p.walltime, p.nodes_per_block) == ("gpu", "proj", "00:10:00", 2)
    assert isinstance(p.launcher, SrunLauncher)

    monkeypatch.setenv("SLURM_JOB_ID", "99")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_NODELIST", "nid[1-2]")
    _, sims, _ = executors(ParslConfig(provider="slurm"), tmp_path)
    p = sims.provider
    assert isinstance(p, LocalProvider) and p.nodes_per_block == 2
    # The sims and trainers pools share the allocation's nodes.
    assert "srun --ntasks 2 -l --overlap --nodes=2 --ntasks-per-node=1" in p.launcher("CMD", 1, 2)


def test_the_two_pools_of_one_allocation_write_different_command_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside one job both executors' blocks share $SLURM_JOB_NAME and the script directory."""
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_NODELIST", "nid[1-2]")
    _, sims, trainers = executors(ParslConfig(provider="slurm"), tmp_path)
    scripts = []
    for ex in (sims, trainers):
        text = ex.provider.launcher("CMD", 1, 2, str(tmp_path))
        assert "cmd_$SLURM_JOB_NAME" not in text
        scripts.append(text)
    # Each block's file is named by the provider's unique $JOBNAME (exported per block).
    assert all("cmd_${JOBNAME:-$SLURM_JOB_NAME}.sh" in t for t in scripts)


@pytest.mark.parametrize(
    ("launcher", "needle"),
    [
        ({"walltime": "1h"}, "walltime"),
        ({"walltime": "00:61:00"}, "walltime"),
        ({"nodes": 0}, "nodes"),
        ({"provider": "lsf"}, "provider"),
        ({"queue": "debug\n#PBS -l select=999"}, "queue"),
        ({"address": "1.2.3.4; rm -rf /"}, "address"),
    ],
)
def test_bad_values_are_usage_errors(launcher: dict[str, object], needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        build({}, {"name": "parsl", **launcher}, {"name": "filesystem"})


def test_cli_rejects_bad_walltime_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from simferry.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["run", "--launcher", "parsl", "--provider", "pbs", "--walltime", "90"]) == 2
    err = capsys.readouterr().err
    assert "walltime" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_from_a_login_node_the_pools_never_share_this_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each executor is its own batch job: even at --nodes 1 they may land on two nodes."""
    from simferry.transports.base import RunContext
    from simferry.transports.shm import ShmConfig

    for var in ("SLURM_JOB_ID", "SLURM_JOBID", "PBS_JOBID", "PBS_NODEFILE"):
        monkeypatch.delenv(var, raising=False)
    assert ParslConfig(provider="local", nodes=2).hosts_spanned() == 2
    login = ParslConfig(provider="slurm", nodes=1)
    assert login.hosts_spanned() == 3
    with pytest.raises(UsageError, match="node-local"):
        ShmConfig().check(RunContext(tmp_path, "x", 1, login.hosts_spanned()))

    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    monkeypatch.setenv("SLURM_NODELIST", "nid1")
    inside = ParslConfig(provider="slurm")
    assert inside.hosts_spanned() == 1  # both pools on the allocation's one node
    ShmConfig().check(RunContext(tmp_path, "x", 1, inside.hosts_spanned()))


def test_fewer_nodes_than_the_job_has_are_the_same_named_nodes_for_both_pools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Otherwise srun may start the sims' pool on nid1 and the trainers' on nid2."""
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_NODELIST", "nid[1-2]")
    _, sims, trainers = executors(ParslConfig(provider="slurm", nodes=1), tmp_path)
    for ex in (sims, trainers):
        assert "--nodes=1 --ntasks-per-node=1 --nodelist=nid1" in ex.provider.launcher("C", 1, 1)
    _, sims, _ = executors(ParslConfig(provider="slurm"), tmp_path)
    assert "--nodelist" not in sims.provider.launcher("C", 1, 2)  # the whole job: no list
