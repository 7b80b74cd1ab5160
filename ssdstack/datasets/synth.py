"""Deterministic synthetic detection dataset: coloured shapes on noisy backgrounds, COCO layout.

Used by tests and the demo to train a small SSD on a CPU in minutes, so every class has
its own shape *and* its own saturated colour, objects are large, and backgrounds are dark
and muted. Boxes are exact: each is the tight extent of the pixels drawn for that shape.

Layout written under ``out_dir``::

    annotations/instances_train.json   annotations/instances_val.json
    train/000001.jpg ...               val/000161.jpg ...

Boxes are COCO ``[x, y, w, h]`` in float pixels with ``x`` the first drawn column and
``w = last column - first column + 1``; objects cut by the image border keep the part
inside the image. The same arguments always give byte-identical files.

``format="voc"`` or ``"text"`` writes the same dataset in that layout instead (see
``convert.py``), converted from the COCO one, so its boxes are the same ones.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ssdstack.datasets.convert import WRITERS
from ssdstack.datasets.layout import FORMATS
from ssdstack.errors import InvalidInput

# (``<colour>_<shape>``, RGB); class ``i`` has category id ``i + 1``. Any two colours differ
# by at least 80 levels in some channel, so colour alone separates classes, as does shape.
CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red_circle", (230, 40, 40)),
    ("green_square", (40, 200, 60)),
    ("blue_triangle", (50, 90, 245)),
    ("yellow_diamond", (240, 220, 40)),
    ("magenta_star", (225, 50, 220)),
    ("cyan_cross", (40, 220, 230)),
    ("orange_hexagon", (250, 140, 20)),
    ("white_ring", (245, 245, 245)),
)
MAX_CLASSES = len(CLASSES)
MIN_SIDE = 64  # below this the smallest shapes are a few pixels and no longer recognisable

OBJECTS_PER_IMAGE = (1, 4)
OBJECT_SIZE = (0.15, 0.55)  # sqrt(w * h) of a shape, as a fraction of the shorter image side
ASPECT = (0.75, 4 / 3)  # w / h of a shape, log-uniform
TRUNCATED_PROBABILITY = 0.15
TRUNCATED_OUTSIDE = (0.15, 0.5)  # fraction of the shape's extent that lies past the border
MAX_COVERED = 0.5  # an object may lose at most this fraction of its pixels to later ones
PLACEMENT_TRIES = 20
COLOUR_JITTER = 12  # per channel, so a class is one colour family, not one exact value
OBJECT_NOISE = 4.0  # std of per-pixel noise on objects, in 8-bit levels
BACKGROUND_RANGE = (20, 115)  # background channel values before noise: dark, so objects stand out
BACKGROUND_NOISE = 6.0
JPEG_QUALITY = 90


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synthesize` wrote."""

    out_dir: Path
    train_images: int
    val_images: int
    train_annotations: int
    val_annotations: int
    categories: tuple[str, ...]


def synthesize(
    out_dir: Path,
    images: int,
    classes: int,
    seed: int,
    val_fraction: float = 0.2,
    min_side: int = 160,
    max_side: int = 400,
    format: str = "coco",
) -> SynthSummary:
    """Write ``images`` JPEGs with 1-4 objects each from the first ``classes`` of :data:`CLASSES`.

    Image width and height are drawn independently and uniformly from
    ``[min_side, max_side]`` pixels. The last ``round(images * val_fraction)`` images (at
    least one, and never all, when ``images >= 2``) form the val split. ``out_dir`` must
    be empty or absent, so a dataset never mixes with files from an earlier run.
    ``format`` is ``"coco"``, ``"voc"`` or ``"text"``.
    """
    _check_arguments(out_dir, images, classes, seed, val_fraction, min_side, max_side, format)
    out_dir = Path(out_dir)
    if format == "coco":
        return _synthesize_coco(out_dir, images, classes, seed, val_fraction, min_side, max_side)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Beside out_dir, so that the writer hard-links the images rather than copying them.
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".synth-") as scratch:
        coco = Path(scratch) / "coco"
        summary = _synthesize_coco(coco, images, classes, seed, val_fraction, min_side, max_side)
        WRITERS[format](coco, out_dir)
    return replace(summary, out_dir=out_dir)


def _synthesize_coco(
    out_dir: Path, images: int, classes: int, seed: int, val_fraction: float, min_side: int, max_side: int
) -> SynthSummary:
    rng = np.random.default_rng(seed)
    categories = [
        {"id": i + 1, "name": name, "supercategory": "shape"} for i, (name, _) in enumerate(CLASSES[:classes])
    ]
    n_val = min(max(round(images * val_fraction), 1), images - 1) if images >= 2 else 0
    splits = {"train": range(1, images - n_val + 1), "val": range(images - n_val + 1, images + 1)}

    counts = {}
    for split, image_ids in splits.items():
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        coco = {"images": [], "annotations": [], "categories": categories}
        for image_id in image_ids:
            file_name = f"{image_id:06d}.jpg"
            picture, objects = _render_image(rng, classes, min_side, max_side)
            picture.save(out_dir / split / file_name, quality=JPEG_QUALITY, subsampling=0)
            coco["images"].append(
                {"id": image_id, "file_name": file_name, "width": picture.width, "height": picture.height}
            )
            for category_id, (x, y, w, h) in objects:
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                })
        (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
        (out_dir / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
        counts[split] = (len(coco["images"]), len(coco["annotations"]))

    return SynthSummary(
        out_dir=out_dir,
        train_images=counts["train"][0],
        val_images=counts["val"][0],
        train_annotations=counts["train"][1],
        val_annotations=counts["val"][1],
        categories=tuple(c["name"] for c in categories),
    )


def _check_arguments(out_dir, images, classes, seed, val_fraction, min_side, max_side, format) -> None:
    def is_int(value) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if not is_int(images) or images < 1:
        raise InvalidInput(f"images must be an integer >= 1, got {images!r}")
    if not is_int(classes) or not 1 <= classes <= MAX_CLASSES:
        raise InvalidInput(f"classes must be an integer in 1..{MAX_CLASSES}, got {classes!r}")
    if not is_int(seed) or seed < 0:
        raise InvalidInput(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise InvalidInput(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if not is_int(min_side) or not is_int(max_side) or not MIN_SIDE <= min_side <= max_side:
        raise InvalidInput(
            f"need {MIN_SIDE} <= min_side <= max_side, got min_side={min_side!r}, max_side={max_side!r}"
        )
    if format not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InvalidInput(f"{out_dir} must be an empty folder or not exist yet")


def _render_image(
    rng: np.random.Generator, classes: int, min_side: int, max_side: int
) -> tuple[Image.Image, list[tuple[int, tuple[int, int, int, int]]]]:
    """One RGB picture and its objects as ``(category_id, (x, y, w, h))`` in integer pixels."""
    width, height = (int(v) for v in rng.integers(min_side, max_side, size=2, endpoint=True))
    pixels = _background(rng, width, height)

    masks: list[np.ndarray] = []  # [H, W] bool, the in-image pixels of each placed shape
    covered: list[np.ndarray] = []  # [H, W] bool, pixels of masks[i] that later shapes hide
    objects = []
    for _ in range(int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1], endpoint=True))):
        class_index = int(rng.integers(classes))
        for _ in range(PLACEMENT_TRIES):
            mask = _shape_mask(rng, class_index, width, height)
            hidden = [c | (m & mask) for m, c in zip(masks, covered)]
            if all(h.sum() <= MAX_COVERED * m.sum() for m, h in zip(masks, hidden)):
                break
        else:
            continue  # crowded image: fewer objects rather than buried ones
        masks, covered = masks + [mask], hidden + [np.zeros_like(mask)]
        _paint(rng, pixels, mask, CLASSES[class_index][1])
        cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        box = (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
        objects.append((class_index + 1, box))

    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB"), objects


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """``[H, W, 3]`` float32 image: smooth colour blotches at two scales plus pixel noise."""
    low, high = BACKGROUND_RANGE
    smooth = np.zeros((height, width, 3), dtype=np.float32)
    for cells, weight in ((2, 0.65), (6, 0.35)):
        grid = rng.integers(0, 255, size=(cells, cells, 3), endpoint=True, dtype=np.uint8)
        # Bilinear upsampling of a coarse random grid gives low-frequency blotches cheaply.
        layer = Image.fromarray(grid, "RGB").resize((width, height), Image.BILINEAR)
        smooth += (weight / 255) * np.asarray(layer, dtype=np.float32)
    # Pull channels towards their mean so backgrounds stay muted rather than saturated.
    muted = 0.4 * smooth + 0.6 * smooth.mean(axis=-1, keepdims=True)
    return low + (high - low) * muted + _noise(rng, muted.shape, BACKGROUND_NOISE)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Zero-mean float32 noise of standard deviation ``std``, triangular rather than gaussian.

    The sum of two uniform bytes looks the same as gaussian noise in a picture and is
    about ten times cheaper to draw, which keeps a few hundred images within seconds.
    """
    a = rng.integers(0, 256, size=shape, dtype=np.uint8)
    b = rng.integers(0, 256, size=shape, dtype=np.uint8)
    triangular = a.astype(np.float32) + b - 255  # std of the sum is sqrt(2 * (256**2 - 1) / 12)
    return triangular * np.float32(std / math.sqrt((256**2 - 1) / 6))


def _shape_mask(rng: np.random.Generator, class_index: int, width: int, height: int) -> np.ndarray:
    """``[H, W]`` bool mask of one randomly sized and placed shape, clipped to the image."""
    size = rng.uniform(*OBJECT_SIZE) * min(width, height)
    aspect = math.exp(rng.uniform(math.log(ASPECT[0]), math.log(ASPECT[1])))
    w, h = size * math.sqrt(aspect), size / math.sqrt(aspect)
    x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
    if rng.uniform() < TRUNCATED_PROBABILITY:
        # Push the shape past one border; the other axis stays fully inside.
        outside = rng.uniform(*TRUNCATED_OUTSIDE)
        side = int(rng.integers(4))
        if side == 0:
            x0 = -outside * w
        elif side == 1:
            x0 = width - (1 - outside) * w
        elif side == 2:
            y0 = -outside * h
        else:
            y0 = height - (1 - outside) * h

    canvas = Image.new("L", (width, height), 0)
    _draw_shape(ImageDraw.Draw(canvas), CLASSES[class_index][0].split("_")[1], x0, y0, w, h)
    return np.asarray(canvas) > 0


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, x0: float, y0: float, w: float, h: float) -> None:
    """Fill ``shape`` into the box with top-left ``(x0, y0)`` and size ``w`` x ``h`` pixels."""
    box = [x0, y0, x0 + w, y0 + h]
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "ring":
        draw.ellipse(box, fill=255)
        draw.ellipse([x0 + 0.22 * w, y0 + 0.22 * h, x0 + 0.78 * w, y0 + 0.78 * h], fill=0)
    elif shape == "square":
        draw.rectangle(box, fill=255)
    else:
        draw.polygon([(x0 + u * w, y0 + v * h) for u, v in _POLYGONS[shape]], fill=255)


def _star(points: int, inner: float) -> list[tuple[float, float]]:
    """Unit-box vertices of a star pointing up, alternating outer and ``inner`` radius."""
    vertices = []
    for k in range(2 * points):
        radius = 1.0 if k % 2 == 0 else inner
        angle = math.pi * k / points - math.pi / 2
        vertices.append((radius * math.cos(angle), radius * math.sin(angle)))
    return _fit_unit_box(vertices)


def _fit_unit_box(vertices: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Scale vertices so that their extent is exactly ``[0, 1] x [0, 1]``."""
    us, vs = [u for u, _ in vertices], [v for _, v in vertices]
    return [((u - min(us)) / (max(us) - min(us)), (v - min(vs)) / (max(vs) - min(vs))) for u, v in vertices]


_ARM = (0.32, 0.68)  # the cross's arms span this band of the unit box
_POLYGONS = {
    "triangle": [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)],
    "diamond": [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)],
    "star": _star(5, 0.45),
    "cross": [
        (_ARM[0], 0.0), (_ARM[1], 0.0), (_ARM[1], _ARM[0]), (1.0, _ARM[0]), (1.0, _ARM[1]), (_ARM[1], _ARM[1]),
        (_ARM[1], 1.0), (_ARM[0], 1.0), (_ARM[0], _ARM[1]), (0.0, _ARM[1]), (0.0, _ARM[0]), (_ARM[0], _ARM[0]),
    ],
    "hexagon": _fit_unit_box([(math.cos(math.pi * k / 3), math.sin(math.pi * k / 3)) for k in range(6)]),
}


def _paint(rng: np.random.Generator, pixels: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Paint ``colour`` (jittered per object, with light pixel noise) into ``pixels`` where ``mask``."""
    base = np.asarray(colour, dtype=np.float32) + rng.integers(-COLOUR_JITTER, COLOUR_JITTER, size=3, endpoint=True)
    pixels[mask] = base + _noise(rng, (int(mask.sum()), 3), OBJECT_NOISE)
