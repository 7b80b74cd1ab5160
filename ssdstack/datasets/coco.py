"""COCO detection datasets: loading a split for training, and checking an upload.

Layout: ``root/annotations/instances_<split>.json`` lists images stored at
``root/<split>/<file_name>``. COCO boxes are ``[x, y, w, h]`` in pixels; records here
carry ``(x1, y1, x2, y2)`` and contiguous labels ``1..K`` (SSD keeps 0 for background),
assigned to category ids in ascending order, so any ids work (e.g. 3, 7, 12 -> 1, 2, 3).
"""
from __future__ import annotations

import json
import math
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ssdstack.datasets.archive import unsafe_relative_path
from ssdstack.errors import InvalidDataset

SPLITS = ("train", "val")
# Annotators' float boxes often overshoot the border by rounding; more than a pixel
# means the box belongs to another image size.
BOX_TOLERANCE_PX = 1.0


@dataclass(frozen=True)
class ImageRecord:
    """One image and its trainable boxes.

    ``boxes``: ``[N, 4]`` float32 pixels ``(x1, y1, x2, y2)``; ``labels``: ``[N]`` int64
    in ``1..K``. Crowd and zero-area annotations are left out.
    """

    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class CocoSplit:
    """One split. Label ``l`` is category ``category_ids[l - 1]``, named ``label_names[l - 1]``."""

    root: Path
    split: str
    annotation_file: Path
    category_ids: tuple[int, ...]
    label_names: tuple[str, ...]
    records: tuple[ImageRecord, ...]


@dataclass(frozen=True)
class DatasetSummary:
    """Counts per split name (``"train"``, ``"val"``) and the label names in label order."""

    images: dict[str, int]
    annotations: dict[str, int]
    label_names: tuple[str, ...]


def annotation_file(root: Path, split: str) -> Path:
    return root / "annotations" / f"instances_{split}.json"


def load_coco_split(root: Path, split: str) -> CocoSplit:
    """Read one split of a dataset that passed :func:`validate_coco_dataset`.

    Raises InvalidDataset if the annotation file is missing or malformed, or an
    annotation names an unknown image or category.
    """
    path = annotation_file(root, split)
    doc = _read_annotations(path, str(path))
    categories = sorted(doc["categories"], key=lambda category: category["id"])
    category_ids = tuple(category["id"] for category in categories)
    label_of = {category_id: label for label, category_id in enumerate(category_ids, start=1)}

    boxes_of: dict[int, list[list[float]]] = {image["id"]: [] for image in doc["images"]}
    labels_of: dict[int, list[int]] = {image["id"]: [] for image in doc["images"]}
    for ann in doc["annotations"]:
        if ann["image_id"] not in boxes_of or ann["category_id"] not in label_of:
            raise InvalidDataset(
                f"{path}: annotation {ann.get('id')} refers to an unknown image or category"
            )
        x, y, w, h = ann["bbox"]
        if ann.get("iscrowd", 0) or w <= 0 or h <= 0:
            continue  # kept in the json for evaluation, useless as a training target
        boxes_of[ann["image_id"]].append([x, y, x + w, y + h])
        labels_of[ann["image_id"]].append(label_of[ann["category_id"]])

    records = tuple(
        ImageRecord(
            image_id=image["id"],
            path=root / split / image["file_name"],
            width=image["width"],
            height=image["height"],
            boxes=np.array(boxes_of[image["id"]], dtype=np.float32).reshape(-1, 4),
            labels=np.array(labels_of[image["id"]], dtype=np.int64),
        )
        for image in doc["images"]
    )
    return CocoSplit(
        root=root,
        split=split,
        annotation_file=path,
        category_ids=category_ids,
        label_names=tuple(category["name"] for category in categories),
        records=records,
    )


def validate_coco_dataset(
    root: Path, max_pixels: int = 50_000_000, max_problems: int = 20
) -> DatasetSummary:
    """Check both splits of the dataset at ``root`` before it is stored or trained on.

    Every problem is collected; if there are any, raises InvalidDataset("dataset has N
    problems") whose ``details`` lists the first ``max_problems`` as strings such as
    ``"train: annotation 12: bbox [...] extends outside image 3 (640x480)"``.
    """
    problems: list[str] = []
    found = {split: _check_split(root, split, max_pixels, problems) for split in SPLITS}
    train, val = found["train"], found["val"]
    if train and val and train.categories != val.categories:
        differing = sorted(
            category_id
            for category_id in train.categories.keys() | val.categories.keys()
            if train.categories.get(category_id) != val.categories.get(category_id)
        )
        problems.append(f"val: categories {reprlib.repr(differing)} differ from train's")
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise InvalidDataset(
            f"dataset has {len(problems)} {noun}", details=problems[:max_problems]
        )
    return DatasetSummary(
        images={split: found[split].images for split in SPLITS},
        annotations={split: found[split].annotations for split in SPLITS},
        label_names=tuple(name for _, name in sorted(train.categories.items())),
    )


@dataclass(frozen=True)
class _SplitCounts:
    images: int
    annotations: int
    categories: dict[int, str]


def _read_annotations(path: Path, shown_as: str) -> dict[str, Any]:
    """The parsed annotation json, with lists under images, annotations and categories."""
    try:
        with path.open("rb") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise InvalidDataset(f"{shown_as} is missing") from None
    except (ValueError, OSError) as exc:  # ValueError covers bad JSON and bad UTF-8
        raise InvalidDataset(f"{shown_as} cannot be read as JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidDataset(f"{shown_as} must hold a JSON object")
    missing = [key for key in ("images", "annotations", "categories")
               if not isinstance(doc.get(key), list)]
    if missing:
        raise InvalidDataset(f"{shown_as} lacks the list(s) {', '.join(missing)}")
    return doc


def _check_split(root: Path, split: str, max_pixels: int, problems: list[str]) -> _SplitCounts | None:
    """Append the split's problems; None when its annotation file is unusable."""

    def report(problem: str) -> None:
        problems.append(f"{split}: {problem}")

    try:
        doc = _read_annotations(annotation_file(root, split), f"annotations/instances_{split}.json")
    except InvalidDataset as exc:
        report(exc.message)
        return None
    categories = _check_categories(doc["categories"], report)
    sizes = _check_images(root / split, doc["images"], max_pixels, report)
    _check_annotations(doc["annotations"], sizes, categories, report)
    if not doc["images"]:
        report("has no images")
    if split == "train" and not doc["annotations"]:
        report("has no annotations; training needs at least one box")
    return _SplitCounts(len(doc["images"]), len(doc["annotations"]), categories)


def _check_categories(entries: list[Any], report: Callable[[str], None]) -> dict[int, str]:
    """Category id -> name for the well-formed entries."""
    names: dict[int, str] = {}
    for index, category in enumerate(entries):
        if not (isinstance(category, dict) and _is_int(category.get("id"))
                and isinstance(category.get("name"), str)):
            report(f"category entry {index}: needs an integer id and a string name")
        elif category["id"] in names:
            report(f"category {category['id']}: duplicate id")
        else:
            names[category["id"]] = category["name"]
    if not entries:
        report("has no categories")
    return names


def _check_images(
    image_dir: Path, entries: list[Any], max_pixels: int, report: Callable[[str], None]
) -> dict[int, tuple[int, int] | None]:
    """Image id -> (width, height) from the json, or None where those are unusable.

    Images whose file is bad stay in the map, so their annotations are still checked
    rather than reported again as pointing at an unknown image.
    """
    sizes: dict[int, tuple[int, int] | None] = {}
    for index, image in enumerate(entries):
        if not (isinstance(image, dict) and _is_int(image.get("id"))):
            report(f"image entry {index}: needs an integer id")
            continue
        image_id = image["id"]
        if image_id in sizes:
            report(f"image {image_id}: duplicate id")
            continue
        width, height = image.get("width"), image.get("height")
        if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
            report(f"image {image_id}: width and height must be positive integers")
            sizes[image_id] = None
            continue
        sizes[image_id] = (width, height)
        file_name = image.get("file_name")
        if isinstance(file_name, str) and file_name:
            reason = unsafe_relative_path(file_name)
        else:
            reason = "must be a non-empty string"
        if reason:
            report(f"image {image_id}: file_name {reprlib.repr(file_name)} {reason}")
            continue
        problem = _check_image_file(image_dir / file_name, (width, height), max_pixels)
        if problem:
            report(f"image {image_id} ({file_name}): {problem}")
    return sizes


def _check_image_file(path: Path, size: tuple[int, int], max_pixels: int) -> str | None:
    """What is wrong with the image file at ``path`` given its json size, or None."""
    if not path.is_file():
        return "file is missing"
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                return f"has {width * height} pixels, more than the limit of {max_pixels}"
            if (width, height) != size:
                return f"is {width}x{height} but the json says {size[0]}x{size[1]}"
            image.verify()
        # verify() checks structure only and leaves the image unusable; a full decode in
        # a fresh handle catches truncated pixel data.
        with Image.open(path) as image:
            image.load()
    except Exception as exc:  # PIL raises many unrelated types on malformed files
        return f"cannot be decoded: {exc}"
    return None


def _check_annotations(
    entries: list[Any],
    sizes: dict[int, tuple[int, int] | None],
    categories: dict[int, str],
    report: Callable[[str], None],
) -> None:
    for index, ann in enumerate(entries):
        if not isinstance(ann, dict):
            report(f"annotation entry {index}: not a JSON object")
            continue
        name = f"annotation {ann['id']}" if _is_int(ann.get("id")) else f"annotation entry {index}"
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        if not (_is_int(image_id) and image_id in sizes):
            report(f"{name}: refers to unknown image {reprlib.repr(image_id)}")
            continue
        if not (_is_int(category_id) and category_id in categories):
            report(f"{name}: refers to unknown category {reprlib.repr(category_id)}")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(_is_finite_number(v) for v in bbox)):
            report(f"{name}: bbox {reprlib.repr(bbox)} must be 4 finite numbers [x, y, w, h]")
            continue
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            report(f"{name}: bbox {bbox} has zero or negative width or height")
            continue
        size = sizes[image_id]
        if size is None:
            continue
        width, height = size
        tol = BOX_TOLERANCE_PX
        if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            report(f"{name}: bbox {bbox} extends outside image {image_id} ({width}x{height})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # JSON integers have no size limit
        return False
