"""The reference's small CNN; trainer *i* differs only by its kernel size ``3 + 2i``."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def kernel_size(trainer: int) -> int:
    return 3 + 2 * trainer


def build_model(trainer: int) -> nn.Sequential:
    k = kernel_size(trainer)
    return nn.Sequential(
        nn.Conv2d(1, 8, k, padding="same"),
        nn.ReLU(),
        nn.Conv2d(8, 16, k, padding="same"),
        nn.ReLU(),
        nn.Conv2d(16, 8, k, padding="same"),
        nn.ReLU(),
        nn.Conv2d(8, 1, k, padding="same"),
    )


def flatten_weights(model: nn.Module) -> np.ndarray:
    """All parameters as one float32 array, so weights travel through any transport."""
    with torch.no_grad():
        return torch.cat(
            [p.detach().reshape(-1).cpu() for p in model.state_dict().values()]
        ).numpy()


def load_flat_weights(model: nn.Module, flat: np.ndarray) -> None:
    state = model.state_dict()
    offset = 0
    for name, value in state.items():
        n = value.numel()
        chunk = torch.from_numpy(np.ascontiguousarray(flat[offset : offset + n]))
        state[name] = chunk.reshape(value.shape).to(value.dtype)
        offset += n
    if offset != flat.size:
        raise ValueError(f"weights have {flat.size} values but the model needs {offset}")
    model.load_state_dict(state)
