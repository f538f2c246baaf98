"""How much memory a run needs on one node, so a run that cannot fit is refused up front.

Calibrated from peak memory of real runs (2-core machine, CPU torch, 512² to 1024² grids,
2-8 simulations, 1-4 trainers; the trainers' kernel sizes made no difference). A
trainer's working memory -- activations, their gradients, convolution buffers for a batch
of four -- grows with the grid, not the dataset: ~1.4 KB per grid point, 1.4 GiB at
1024², more than the 20 samples of one simulation it trains on take as float32. Leaving it
out under-counted a 4-simulation 1024² run 3.6 times, and a run that does not fit is
stopped by the out-of-memory killer halfway instead of refused.
"""

from __future__ import annotations

from simferry.config import RunConfig
from simferry.launchers.base import SimWorkersOption
from simferry.launchers.common import cpu_count

#: Memory of one trainer process before it holds any data (Python, torch, the model).
TRAINER_PROCESS_BYTES = 256 * 2**20
#: Trainer working memory per grid point at batch 4 (measured ~1,420 B).
TRAINER_BYTES_PER_POINT = 1536


def need_bytes(cfg: RunConfig, data_bytes: int, trainers_here: int) -> int:
    """Peak memory of a run on this node: its trainers, and pass-by-value copies.

    A phased trainer holds the whole dataset as float32 (half the float64 bytes), a
    streaming one its replay buffer only. Pass-by-value keeps every simulation's results
    in this process, and a simulation worker holds its own results and their pickled
    copy while returning them; some launchers hold more copies on the way
    (``result_copies``).
    """
    w = cfg.workload
    held = min(w.replay_buffer, w.samples) if w.mode == "streaming" else w.samples
    trainer = data_bytes // 2 * held // w.samples + TRAINER_PROCESS_BYTES
    trainer += TRAINER_BYTES_PER_POINT * w.grid_size**2
    need = trainers_here * trainer
    if cfg.transport.by_value and not cfg.transport.by_proxy:
        launcher = cfg.launcher
        workers = launcher.sim_workers if isinstance(launcher, SimWorkersOption) else None
        workers = workers or cpu_count()
        need += min(workers, w.num_sims) * 2 * (data_bytes // w.num_sims) + data_bytes
        need += cfg.launcher.result_copies * data_bytes
    return need
