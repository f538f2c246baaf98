"""Sharing a node's cores among the CPU trainers placed on it.

Both the task bodies (``workload``), when a trainer starts, and the launchers, when they
warm a trainer worker ahead of the training phase, size torch's thread pool the same
way; neither may import the other, so the rule lives beside the base modules.
"""

from __future__ import annotations

import os


def set_threads(num_trainers_here: int) -> None:
    """Share the node's cores among co-located CPU trainers instead of oversubscribing."""
    # Imported here: torch takes seconds to import and the main process never needs it.
    import torch

    if torch.cuda.is_available():
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, (cores or 1) // max(1, num_trainers_here)))
