"""Checking a COCO dataset (at upload and before training) for errors, which refuse it,
and warnings, which do not; every finding names the split and the image or annotation.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import reprlib
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Callable


from ssdstack.datasets.archive import unsafe_relative_path
from ssdstack.datasets.coco import BOX_TOLERANCE_PX, SPLITS, DatasetSummary, annotation_file, read_annotations
from ssdstack.errors import InvalidDataset
from ssdstack.images import open_image

# The smallest SSD300 priors are 30 px on a 300 px input: a box a few pixels across
# matches none of them and is more often an annotation slip than an object.
TINY_BOX_PX = 4.0
MAX_PROBLEMS = 20  # errors listed in InvalidDataset.details, and warnings kept
IMAGE_CHECK_THREADS = min(8, os.cpu_count() or 1)


def validate_coco_dataset(
    root: Path, max_pixels: int = 50_000_000, max_problems: int = MAX_PROBLEMS
) -> DatasetSummary:
    """Check both splits of the dataset at ``root`` before it is stored or trained on.

    Every image file is read and decoded and every annotation checked; nothing stops at
    the first finding. Each finding is a message naming the split and the image or
    annotation, e.g. ``"train: annotation 12: bbox [...] extends outside image 3 (640x480)"``.

    Errors (training or evaluation would be wrong): an annotation file missing or
    malformed; an image file missing, undecodable, over ``max_pixels`` or of another size
    than its json entry; a file name unsafe or used twice in a split; duplicate image,
    annotation or category ids; an annotation naming an unknown image or category; a box
    malformed, degenerate (zero or negative width or height) or outside its image by more
    than BOX_TOLERANCE_PX; a split without images, or without any non-crowd annotation;
    categories differing between splits; the same image file (by content) in train and val.

    Warnings (training goes on): a box under TINY_BOX_PX pixels on a side; an image with
    no annotation, or only crowd ones; a category with no training box; the same image
    file twice within one split.

    Raises InvalidDataset("dataset has N errors") whose ``details`` lists the first
    ``max_problems`` errors. Otherwise returns the summary, with ``warning_count`` and
    the first ``max_problems`` warnings.
    """
    errors: list[str] = []
    warnings: list[str] = []
    found = {split: _check_split(root, split, max_pixels, errors, warnings) for split in SPLITS}
    train, val = found["train"], found["val"]
    if train and val and train.categories != val.categories:
        differing = sorted(
            category_id
            for category_id in train.categories.keys() | val.categories.keys()
            if train.categories.get(category_id) != val.categories.get(category_id)
        )
        errors.append(f"val: categories {reprlib.repr(differing)} differ from train's")
    if train and val:
        # By content, not name: train/x.jpg and val/x.jpg are two files, and a copy
        # renamed on its way into val leaks just the same.
        for digest, shown in val.files.items():
            if digest in train.files:
                errors.append(f"val: {shown}: same file as train {train.files[digest]}; an image in "
                              "both splits makes the val mAP over-optimistic")
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        raise InvalidDataset(f"dataset has {len(errors)} {noun}", details=errors[:max_problems])
    return DatasetSummary(
        images={split: found[split].images for split in SPLITS},
        annotations={split: found[split].annotations for split in SPLITS},
        label_names=tuple(name for _, name in sorted(train.categories.items())),
        warnings=tuple(warnings[:max_problems]),
        warning_count=len(warnings),
    )


@dataclass(frozen=True)
class _SplitFacts:
    images: int
    annotations: int
    categories: dict[int, str]
    files: dict[str, str]  # sha256 of an image file -> "image 3 (a.jpg)", its first image


@dataclass(frozen=True)
class _ImageEntry:
    shown: str  # "image 3 (a.jpg)", or "image 3" when the file name is unusable
    size: tuple[int, int] | None  # (width, height) from the json; None when unusable
    digest: str | None = None  # sha256 of a file that passed its checks


@dataclass
class _BoxCounts:
    """What the annotations of one split hold, counted as they are checked."""

    per_image: Counter = field(default_factory=Counter)  # image id -> annotations naming it
    crowd_per_image: Counter = field(default_factory=Counter)
    usable_per_category: Counter = field(default_factory=Counter)  # non-crowd, well-formed
    crowd: int = 0


def _check_split(
    root: Path, split: str, max_pixels: int, errors: list[str], warnings: list[str]
) -> _SplitFacts | None:
    """Append the split's errors and warnings; None when its annotation file is unusable."""

    def error(message: str) -> None:
        errors.append(f"{split}: {message}")

    def warn(message: str) -> None:
        warnings.append(f"{split}: {message}")

    try:
        doc = read_annotations(annotation_file(root, split), f"annotations/instances_{split}.json")
    except InvalidDataset as exc:
        error(exc.message)
        return None
    categories = _check_categories(doc["categories"], error)
    images = _check_images(root / split, doc["images"], max_pixels, error)
    counts = _check_annotations(doc["annotations"], images, categories, error, warn)

    purpose = "training" if split == "train" else "mAP"
    if not doc["images"]:
        error("has no images")
    elif not doc["annotations"]:
        error(f"has no annotations; {purpose} needs at least one box")
    elif counts.crowd == len(doc["annotations"]):
        error(f"has only crowd annotations; {purpose} needs at least one box")
    left_out = "; training leaves it out" if split == "train" else ""
    for image_id, image in images.items():
        if not counts.per_image[image_id]:
            warn(f"{image.shown}: has no boxes{left_out}")
        elif counts.crowd_per_image[image_id] == counts.per_image[image_id]:
            warn(f"{image.shown}: has only crowd boxes{left_out}")
    if split == "train":
        for category_id, name in sorted(categories.items()):
            if not counts.usable_per_category[category_id]:
                warn(f"category {category_id} ({name!r}) has no box; the model cannot learn it")
    files: dict[str, str] = {}
    for image in images.values():
        if image.digest is None:
            continue
        if image.digest in files:
            warn(f"{image.shown}: same file as {files[image.digest]}; it counts twice in {purpose}")
        else:
            files[image.digest] = image.shown
    return _SplitFacts(len(doc["images"]), len(doc["annotations"]), categories, files)


def _check_categories(entries: list[Any], error: Callable[[str], None]) -> dict[int, str]:
    """Category id -> name for the well-formed entries."""
    names: dict[int, str] = {}
    for index, category in enumerate(entries):
        if not (isinstance(category, dict) and _is_int(category.get("id"))
                and isinstance(category.get("name"), str)):
            error(f"category entry {index}: needs an integer id and a string name")
        elif category["id"] in names:
            error(f"category {category['id']}: duplicate id")
        else:
            names[category["id"]] = category["name"]
    if not entries:
        error("has no categories")
    return names


def _check_images(
    image_dir: Path, entries: list[Any], max_pixels: int, error: Callable[[str], None]
) -> dict[int, _ImageEntry]:
    """Image id -> its entry, for every entry with a usable id, in json order.

    Images whose file is bad stay in the map, so their annotations are still checked
    rather than reported again as pointing at an unknown image. Files are read and
    decoded by a thread pool (Pillow and hashlib release the GIL); messages keep the
    json order.
    """
    images: dict[int, _ImageEntry] = {}
    first_with_name: dict[str, int] = {}
    # In json order: a message now, or an image whose file check is still running.
    findings: list[str | tuple[int, Future]] = []
    with ThreadPoolExecutor(IMAGE_CHECK_THREADS) as pool:
        for index, image in enumerate(entries):
            if not (isinstance(image, dict) and _is_int(image.get("id"))):
                findings.append(f"image entry {index}: needs an integer id")
                continue
            image_id = image["id"]
            if image_id in images:
                findings.append(f"image {image_id}: duplicate id")
                continue
            width, height = image.get("width"), image.get("height")
            if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
                findings.append(f"image {image_id}: width and height must be positive integers")
                images[image_id] = _ImageEntry(f"image {image_id}", None)
                continue
            file_name = image.get("file_name")
            if isinstance(file_name, str) and file_name:
                reason = unsafe_relative_path(file_name)
            else:
                reason = "must be a non-empty string"
            if reason:
                findings.append(f"image {image_id}: file_name {reprlib.repr(file_name)} {reason}")
                images[image_id] = _ImageEntry(f"image {image_id}", (width, height))
                continue
            shown = f"image {image_id} ({file_name})"
            images[image_id] = _ImageEntry(shown, (width, height))
            key = PurePosixPath(file_name).as_posix()  # "./a.jpg" and "a.jpg" are one file
            if key in first_with_name:
                findings.append(f"{shown}: file_name is also used by image {first_with_name[key]}")
                continue
            first_with_name[key] = image_id
            future = pool.submit(_check_image_file, image_dir / file_name, (width, height), max_pixels)
            findings.append((image_id, future))
        for finding in findings:
            if isinstance(finding, str):
                error(finding)
                continue
            image_id, future = finding
            problem, digest = future.result()
            if problem:
                error(f"{images[image_id].shown}: {problem}")
            else:
                images[image_id] = replace(images[image_id], digest=digest)
    return images


def _check_image_file(path: Path, size: tuple[int, int], max_pixels: int) -> tuple[str | None, str | None]:
    """(what is wrong with the image file at ``path`` given its json size, or None;
    the sha256 hex of its bytes, or None)."""
    if not path.is_file():
        return "file is missing", None
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot be read: {exc}", None
    try:
        with open_image(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                return f"has {width * height} pixels, more than the limit of {max_pixels}", None
            if (width, height) != size:
                return f"is {width}x{height} but the json says {size[0]}x{size[1]}", None
            image.verify()
        # verify() checks structure only and leaves the image unusable; a full decode in
        # a fresh handle catches truncated pixel data.
        with open_image(io.BytesIO(data)) as image:
            image.load()
    except Exception as exc:  # PIL raises many unrelated types on malformed files
        return f"cannot be decoded: {exc}", None
    return None, hashlib.sha256(data).hexdigest()


def _check_annotations(
    entries: list[Any],
    images: dict[int, _ImageEntry],
    categories: dict[int, str],
    error: Callable[[str], None],
    warn: Callable[[str], None],
) -> _BoxCounts:
    counts = _BoxCounts()
    seen_ids: set[int] = set()
    for index, ann in enumerate(entries):
        if not isinstance(ann, dict):
            error(f"annotation entry {index}: not a JSON object")
            continue
        if _is_int(ann.get("id")):
            name = f"annotation {ann['id']}"
            if ann["id"] in seen_ids:
                # pycocotools indexes annotations by id: a duplicate replaces the first.
                error(f"{name}: duplicate id")
            seen_ids.add(ann["id"])
        else:
            name = f"annotation entry {index}"
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        if not (_is_int(image_id) and image_id in images):
            error(f"{name}: refers to unknown image {reprlib.repr(image_id)}")
            continue
        crowd = bool(ann.get("iscrowd", 0))
        counts.per_image[image_id] += 1
        counts.crowd_per_image[image_id] += crowd
        counts.crowd += crowd
        known_category = _is_int(category_id) and category_id in categories
        if not known_category:
            error(f"{name}: refers to unknown category {reprlib.repr(category_id)}")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(_is_finite_number(v) for v in bbox)):
            error(f"{name}: bbox {reprlib.repr(bbox)} must be 4 finite numbers [x, y, w, h]")
            continue
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            error(f"{name}: bbox {bbox} has zero or negative width or height")
            continue
        size = images[image_id].size
        if size is not None:
            width, height = size
            tol = BOX_TOLERANCE_PX
            if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
                error(f"{name}: bbox {bbox} extends outside image {image_id} ({width}x{height})")
                continue
        if crowd:
            continue
        if known_category:
            counts.usable_per_category[category_id] += 1
        if min(w, h) < TINY_BOX_PX:
            warn(f"{name}: bbox {bbox} on image {image_id} is under {TINY_BOX_PX:g} px on a side; "
                 "no prior matches a box this small")
    return counts


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # JSON integers have no size limit
        return False
