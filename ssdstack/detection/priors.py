"""SSD prior (default) boxes, generated as the MindSpore model zoo's SSD does.

Priors are normalised ``(cy, cx, h, w)`` in ``[0, 1]`` image units. For each feature map,
cells are visited row by row and every cell gets its sizes in a fixed order, so prior
``i`` means the same box to the trainer, the exported decoder and the postprocessor.

Two generators, with the same interface (``boxes_per_cell``, ``num_priors``,
``to_dict``, ``prior_scaling``):

* :class:`PriorConfig`, the zoo's ``GeneratDefaultBoxes`` (SSD300, VGG16, ResNet34):
  one scale per level between ``min_scale`` and ``max_scale`` plus aspect ratios;
* :class:`GridAnchorConfig`, the zoo's ``GridAnchorGenerator`` (the FPN variants):
  ``scale * step`` sized anchors at several octave scales and aspect ratios.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import ClassVar, Union

import numpy as np


def _check_levels(feature_sizes, steps, *others) -> None:
    lengths = [len(feature_sizes), len(steps), *(len(o) for o in others)]
    if len(set(lengths)) != 1 or lengths[0] < 2:
        raise ValueError(
            f"feature_sizes, steps{' and aspect_ratios' if others else ''} must have the same length >= 2, "
            f"got {', '.join(str(n) for n in lengths)}"
        )


class _CellLayout:
    """What both prior kinds share: ``feature_sizes[k]`` square maps with
    ``boxes_per_cell()[k]`` priors in every cell."""

    def boxes_per_cell(self) -> tuple[int, ...]:
        raise NotImplementedError

    def num_priors(self) -> int:
        return sum(f * f * n for f, n in zip(self.feature_sizes, self.boxes_per_cell()))


@dataclass(frozen=True)
class PriorConfig(_CellLayout):
    """Settings of the zoo's ``GeneratDefaultBoxes``.

    ``aspect_ratios[k]`` empty on level 0 selects the zoo's special first level: sizes
    (0.1, 0.1), then ``s_0`` stretched by sqrt(2) both ways (3 priors per cell).
    """

    kind: ClassVar[str] = "ssd"

    image_size: int
    feature_sizes: tuple[int, ...]
    steps: tuple[float, ...]  # image_size / steps[k] cells per side set the centres
    aspect_ratios: tuple[tuple[float, ...], ...]
    min_scale: float = 0.2
    max_scale: float = 0.95
    prior_scaling: tuple[float, float] = (0.1, 0.2)

    def __post_init__(self) -> None:
        _check_levels(self.feature_sizes, self.steps, self.aspect_ratios)

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

    def centres_per_level(self) -> list[np.ndarray]:
        """Per level, the ``[F]`` normalised cell centres along one side."""
        return [(np.arange(f) + 0.5) * step / self.image_size for f, step in zip(self.feature_sizes, self.steps)]

    def boxes_per_cell(self) -> tuple[int, ...]:
        return tuple(len(sizes) for sizes in self.sizes_per_level())

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
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


@dataclass(frozen=True)
class GridAnchorConfig(_CellLayout):
    """Settings of the zoo's ``GridAnchorGenerator`` (SSD with FPN).

    Level ``k`` has ``feature_sizes[k]`` cells per side of ``steps[k]`` pixels, centred
    at ``i * step + step / 2``. Every cell gets anchors of base size ``scale * step``,
    aspect-ratio major, then octave scale ``2 ** (j / scales_per_octave)``:
    ``h = s / sqrt(a) * base``, ``w = s * sqrt(a) * base`` (``a`` = width / height).
    """

    kind: ClassVar[str] = "grid"

    image_size: int
    feature_sizes: tuple[int, ...]
    steps: tuple[float, ...]
    scale: float = 4.0
    scales_per_octave: int = 2
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    prior_scaling: tuple[float, float] = (0.1, 0.2)

    def __post_init__(self) -> None:
        _check_levels(self.feature_sizes, self.steps)
        if self.scales_per_octave < 1 or not self.aspect_ratios:
            raise ValueError("scales_per_octave must be >= 1 and aspect_ratios non-empty")

    def sizes_per_level(self) -> list[list[tuple[float, float]]]:
        """Per level, the normalised ``(h, w)`` of each anchor in a cell, in the zoo's order."""
        octaves = [2 ** (j / self.scales_per_octave) for j in range(self.scales_per_octave)]
        result = []
        for step in self.steps:
            base = self.scale * step / self.image_size
            result.append([(s / math.sqrt(a) * base, s * math.sqrt(a) * base)
                           for a in self.aspect_ratios for s in octaves])
        return result

    def centres_per_level(self) -> list[np.ndarray]:
        return [(np.arange(f) * step + step / 2) / self.image_size for f, step in zip(self.feature_sizes, self.steps)]

    def boxes_per_cell(self) -> tuple[int, ...]:
        return (len(self.aspect_ratios) * self.scales_per_octave,) * len(self.feature_sizes)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "image_size": self.image_size,
            "feature_sizes": list(self.feature_sizes),
            "steps": list(self.steps),
            "scale": self.scale,
            "scales_per_octave": self.scales_per_octave,
            "aspect_ratios": list(self.aspect_ratios),
            "prior_scaling": list(self.prior_scaling),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "GridAnchorConfig":
        return cls(
            image_size=int(data["image_size"]),
            feature_sizes=tuple(data["feature_sizes"]),
            steps=tuple(data["steps"]),
            scale=float(data["scale"]),
            scales_per_octave=int(data["scales_per_octave"]),
            aspect_ratios=tuple(float(a) for a in data["aspect_ratios"]),
            prior_scaling=tuple(data["prior_scaling"]),
        )


AnyPriorConfig = Union[PriorConfig, GridAnchorConfig]
PRIOR_KINDS = {config.kind: config for config in (PriorConfig, GridAnchorConfig)}


def prior_config_from_dict(data: dict) -> AnyPriorConfig:
    """Read what ``to_dict`` wrote; a dict without ``"kind"`` (written before there were
    two kinds) is a :class:`PriorConfig`."""
    kind = data.get("kind", PriorConfig.kind)
    try:
        return PRIOR_KINDS[kind].from_dict(data)
    except KeyError:
        raise ValueError(f"unknown prior kind {kind!r}; choose one of {sorted(PRIOR_KINDS)}") from None


def prior_boxes(config: AnyPriorConfig) -> np.ndarray:
    """Return ``[P, 4]`` float32 priors as normalised ``(cy, cx, h, w)``.

    Levels in order, then cells row by row, then the cell's sizes in ``sizes_per_level``
    order.
    """
    levels = []
    for centres, sizes in zip(config.centres_per_level(), config.sizes_per_level()):
        cells = np.asarray(list(itertools.product(centres, repeat=2)))            # [F*F, 2] (cy, cx)
        sizes = np.asarray(sizes)                                                # [B, 2] (h, w)
        levels.append(np.concatenate([np.repeat(cells, len(sizes), axis=0),
                                      np.tile(sizes, (len(cells), 1))], axis=1))
    return np.concatenate(levels).astype(np.float32)


def priors_to_corners(priors: np.ndarray) -> np.ndarray:
    """``(cy, cx, h, w)`` -> ``(y0, x0, y1, x1)``, both ``[P, 4]``."""
    centre, size = priors[:, :2], priors[:, 2:]
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)
