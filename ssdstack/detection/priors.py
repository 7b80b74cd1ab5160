"""SSD prior (default) boxes, generated as the MindSpore model zoo's SSD does.

Priors are normalised ``(cy, cx, h, w)`` in ``[0, 1]`` image units. For each feature map,
cells are visited row by row and every cell gets its sizes in a fixed order, so prior
``i`` means the same box to the trainer, the exported decoder and the postprocessor.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PriorConfig:
    """Settings of the zoo's ``GeneratDefaultBoxes``.

    ``aspect_ratios[k]`` empty on level 0 selects the zoo's special first level: sizes
    (0.1, 0.1), then ``s_0`` stretched by sqrt(2) both ways (3 priors per cell).
    """

    image_size: int
    feature_sizes: tuple[int, ...]
    steps: tuple[float, ...]  # image_size / steps[k] cells per side set the centres
    aspect_ratios: tuple[tuple[float, ...], ...]
    min_scale: float = 0.2
    max_scale: float = 0.95
    prior_scaling: tuple[float, float] = (0.1, 0.2)

    def __post_init__(self) -> None:
        levels = len(self.feature_sizes)
        if not (len(self.steps) == len(self.aspect_ratios) == levels) or levels < 2:
            raise ValueError(
                f"feature_sizes, steps and aspect_ratios must have the same length >= 2, "
                f"got {len(self.feature_sizes)}, {len(self.steps)}, {len(self.aspect_ratios)}"
            )

    def sizes_per_level(self) -> list[list[tuple[float, float]]]:
        """Per level, the ``(h, w)`` of each prior in a cell, in the zoo's order."""
        levels = len(self.feature_sizes)
        rate = (self.max_scale - self.min_scale) / (levels - 1)
        scales = [self.min_scale + rate * k for k in range(levels)] + [1.0]
        result = []
        for k in range(levels):
            s_k, s_next = scales[k], scales[k + 1]
            if k == 0 and not self.aspect_ratios[0]:
                long, short = s_k * math.sqrt(2), s_k / math.sqrt(2)
                sizes = [(0.1, 0.1), (short, long), (long, short)]
            else:
                sizes = [(s_k, s_k)]
                for ratio in self.aspect_ratios[k]:
                    long, short = s_k * math.sqrt(ratio), s_k / math.sqrt(ratio)
                    sizes += [(short, long), (long, short)]
                sizes.append((math.sqrt(s_k * s_next),) * 2)
            result.append(sizes)
        return result

    def boxes_per_cell(self) -> tuple[int, ...]:
        return tuple(len(sizes) for sizes in self.sizes_per_level())

    def num_priors(self) -> int:
        return sum(f * f * n for f, n in zip(self.feature_sizes, self.boxes_per_cell()))

    def to_dict(self) -> dict:
        return {
            "image_size": self.image_size,
            "feature_sizes": list(self.feature_sizes),
            "steps": list(self.steps),
            "aspect_ratios": [list(r) for r in self.aspect_ratios],
            "min_scale": self.min_scale,
            "max_scale": self.max_scale,
            "prior_scaling": list(self.prior_scaling),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "PriorConfig":
        return cls(
            image_size=int(data["image_size"]),
            feature_sizes=tuple(data["feature_sizes"]),
            steps=tuple(data["steps"]),
            aspect_ratios=tuple(tuple(r) for r in data["aspect_ratios"]),
            min_scale=float(data["min_scale"]),
            max_scale=float(data["max_scale"]),
            prior_scaling=tuple(data["prior_scaling"]),
        )


def prior_boxes(config: PriorConfig) -> np.ndarray:
    """Return ``[P, 4]`` float32 priors as normalised ``(cy, cx, h, w)``."""
    boxes = []
    for level, sizes in enumerate(config.sizes_per_level()):
        f_k = config.image_size / config.steps[level]
        size = config.feature_sizes[level]
        for i, j in itertools.product(range(size), repeat=2):
            cy, cx = (i + 0.5) / f_k, (j + 0.5) / f_k
            boxes.extend([cy, cx, h, w] for h, w in sizes)
    return np.asarray(boxes, dtype=np.float32)


def priors_to_corners(priors: np.ndarray) -> np.ndarray:
    """``(cy, cx, h, w)`` -> ``(y0, x0, y1, x1)``, both ``[P, 4]``."""
    centre, size = priors[:, :2], priors[:, 2:]
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)
