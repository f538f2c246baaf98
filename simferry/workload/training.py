"""One epoch of the reference's training: batch 4, shuffled, MSE, Adam lr 1e-3.

The data arrives already as preallocated float32 tensors (filled sample by sample by
the caller) so a trainer never holds the float64 lists and a concatenated copy at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from simferry.threads import set_threads
from simferry.workload.model import build_model

BATCH_SIZE = 4
LEARNING_RATE = 1e-3


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class SampleBuffer:
    """Preallocated float32 (N, 1, H, W) inputs and targets, filled in place as data is read."""

    def __init__(self, count: int, grid_size: int) -> None:
        self.inputs = torch.empty((count, 1, grid_size, grid_size), dtype=torch.float32)
        self.targets = torch.empty((count, 1, grid_size, grid_size), dtype=torch.float32)

    def fill(self, row: int, inp: np.ndarray, target: np.ndarray) -> None:
        # Assign through numpy views: converts float64 -> float32 in one pass, straight
        # from a (possibly read-only, memory-mapped) source.
        self.inputs[row, 0].numpy()[...] = inp
        self.targets[row, 0].numpy()[...] = target


@dataclass
class TrainResult:
    model: nn.Module
    loss: float
    steps: int


def train_epoch(trainer: int, data: SampleBuffer, seed: int | None = None) -> TrainResult:
    """Train trainer ``trainer``'s CNN for one epoch on ``data`` and return it."""
    dev = device()
    if seed is not None:
        torch.manual_seed(seed + trainer)
    model = build_model(trainer).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.MSELoss()
    count = data.inputs.shape[0]
    order = torch.randperm(count)
    loss_value = float("nan")
    steps = 0
    model.train()
    for start in range(0, count, BATCH_SIZE):
        idx = order[start : start + BATCH_SIZE]
        x = data.inputs[idx].to(dev, non_blocking=True)
        y = data.targets[idx].to(dev, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
        steps += 1
    return TrainResult(model=model.cpu(), loss=loss_value, steps=steps)


def prepare_trainer(trainer: int, trainers_here: int, gpus: int) -> None:
    """Size torch's thread pool and pick this trainer's GPU, before it builds its model.

    The GPU is taken modulo the GPUs this process sees: Parsl's available_accelerators
    shows each trainer worker only its own GPU.
    """
    set_threads(trainers_here)
    if gpus:
        torch.cuda.set_device(trainer % torch.cuda.device_count())
