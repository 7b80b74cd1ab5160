"""COCO detection datasets: the layout, and loading a split for training and evaluation.

Layout: ``root/annotations/instances_<split>.json`` lists images stored at
``root/<split>/<file_name>``. COCO boxes are ``[x, y, w, h]`` in pixels; records here
carry ``(x1, y1, x2, y2)`` and contiguous labels ``1..K`` (SSD keeps 0 for background),
assigned to category ids in ascending order, so any ids work (e.g. 3, 7, 12 -> 1, 2, 3).
:mod:`ssdstack.datasets.validation` checks a dataset before it is stored or trained on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
    """Counts per split name (``"train"``, ``"val"``), the label names in label order, and
    the warnings of :func:`validate_coco_dataset`: ``warning_count`` in all, the first
    few (messages like ``"train: image 7 (a.jpg): has no boxes"``) in ``warnings``."""

    images: dict[str, int]
    annotations: dict[str, int]
    label_names: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    warning_count: int = 0


def annotation_file(root: Path, split: str) -> Path:
    return root / "annotations" / f"instances_{split}.json"


def load_coco_split(root: Path, split: str) -> CocoSplit:
    """Read one split of a dataset that passed :func:`validate_coco_dataset`.

    Raises InvalidDataset if the annotation file is missing or malformed, or an
    annotation names an unknown image or category.
    """
    path = annotation_file(root, split)
    doc = read_annotations(path, str(path))
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


def read_annotations(path: Path, shown_as: str) -> dict[str, Any]:
    """The parsed annotation json, with lists under images, annotations and categories."""
    try:
        with path.open("rb") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise InvalidDataset(f"{shown_as} is missing") from None
    except (ValueError, OSError) as exc:  # ValueError covers bad JSON and bad UTF-8
        raise InvalidDataset(f"{shown_as} cannot be read as JSON: {exc}") from None
    except RecursionError:  # the parser's stack ends before the file's nesting does
        raise InvalidDataset(f"{shown_as} nests arrays or objects too deeply to be annotations") from None
    if not isinstance(doc, dict):
        raise InvalidDataset(f"{shown_as} must hold a JSON object")
    missing = [key for key in ("images", "annotations", "categories")
               if not isinstance(doc.get(key), list)]
    if missing:
        raise InvalidDataset(f"{shown_as} lacks the list(s) {', '.join(missing)}")
    return doc
