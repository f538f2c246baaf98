"""Parsl's srun launcher, writing its command file under the block's own name.

Parsl's ``SrunLauncher`` names that file ``cmd_$SLURM_JOB_NAME.sh`` in the shared
submit-script directory. Inside one allocation (``simferry submit``) the simulation and
the trainer executors run under the same job name, so their blocks overwrite one file
and the simulations' srun starts the trainers' worker pools: the simulation interchange
never gets a manager and the run waits forever. Parsl's mpiexec launcher uses the
block's unique ``$JOBNAME`` instead; this one does the same, so Slurm and PBS jobs start
their worker pools the same way. Imported only when Parsl is installed.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterable

from parsl.launchers import SrunLauncher

PARSL_NAME = "cmd_$SLURM_JOB_NAME"
BLOCK_NAME = "cmd_${JOBNAME:-$SLURM_JOB_NAME}"
#: Each block's step is named after the block, so the run can find its own steps.
STEP_NAME = "--job-name=${JOBNAME:-parsl}"
#: Where srun's own options end and the task's command begins.
SRUN_TASK = " bash ${SCRIPT_DIR:+"


class JobNamedSrunLauncher(SrunLauncher):
    def __call__(
        self, command: str, tasks_per_node: int, nodes_per_block: int, script_dir: str = ""
    ) -> str:
        text = super().__call__(command, tasks_per_node, nodes_per_block, script_dir)
        if PARSL_NAME not in text or SRUN_TASK not in text:
            raise RuntimeError(
                "This Parsl's srun launcher no longer names its command file "
                f"{PARSL_NAME}.sh; update simferry/launchers/parsl/srun.py for it."
            )
        text = text.replace(PARSL_NAME, BLOCK_NAME)
        return text.replace(SRUN_TASK, f" {STEP_NAME}{SRUN_TASK}", 1)


def stop_steps(job_id: str, labels: Iterable[str], timeout: float = 20.0) -> None:
    """SIGTERM this run's worker-pool steps of job ``job_id``; wait until they have ended.

    srun, when it is signalled (as Parsl stops a block), cancels its step with SIGKILL:
    the pools' multiprocessing helpers die before removing their semaphores from the
    nodes' ``/dev/shm``. Signalled through scancel instead, each pool's keeper
    (``simferry.launchers.pool``) waits for those helpers to finish, so nothing is left.
    """
    prefixes = tuple(f"parsl.{label}.block-" for label in labels)

    def ours() -> list[str]:
        try:
            out = subprocess.run(
                ["squeue", "-h", "-s", "-j", job_id, "-o", "%i %j"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return []
        rows = [line.split(maxsplit=1) for line in out.splitlines()]
        return [row[0] for row in rows if len(row) == 2 and row[1].startswith(prefixes)]

    steps = ours()
    if not steps:
        return
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(["scancel", "--signal=TERM", *steps], capture_output=True, timeout=10)
    deadline = time.monotonic() + timeout
    while ours() and time.monotonic() < deadline:
        time.sleep(0.25)
