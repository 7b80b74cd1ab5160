"""Learning-rate schedule: linear warmup, then cosine decay, one value per step."""
from __future__ import annotations

import numpy as np


def warmup_cosine(base_lr: float, total_steps: int, warmup_steps: int, start_lr: float = 0.001,
                  end_lr: float = 0.0) -> np.ndarray:
    """``[total_steps]`` float32: linear from ``start_lr`` to ``base_lr`` over ``warmup_steps``,
    then cosine from ``base_lr`` down to ``end_lr`` at the last step."""
    steps = np.arange(total_steps, dtype=np.float64)
    warmup_steps = min(warmup_steps, total_steps)
    warm = start_lr + (base_lr - start_lr) * steps / max(warmup_steps, 1)
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = np.clip((steps - warmup_steps) / decay_steps, 0, 1)
    cosine = end_lr + 0.5 * (base_lr - end_lr) * (1 + np.cos(np.pi * progress))
    return np.where(steps < warmup_steps, warm, cosine).astype(np.float32)
