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

from parsl.launchers import SrunLauncher

PARSL_NAME = "cmd_$SLURM_JOB_NAME"
BLOCK_NAME = "cmd_${JOBNAME:-$SLURM_JOB_NAME}"


class JobNamedSrunLauncher(SrunLauncher):
    def __call__(
        self, command: str, tasks_per_node: int, nodes_per_block: int, script_dir: str = ""
    ) -> str:
        text = super().__call__(command, tasks_per_node, nodes_per_block, script_dir)
        if PARSL_NAME not in text:
            raise RuntimeError(
                "This Parsl's srun launcher no longer names its command file "
                f"{PARSL_NAME}.sh; update simferry/launchers/parsl_srun.py for it."
            )
        return text.replace(PARSL_NAME, BLOCK_NAME)
