"""What the dataset formats share: layout detection, one in-memory form of a dataset
(:class:`DatasetImage` with its :class:`Box` es), reading a COCO dataset into it, and the
file helpers the readers and writers use.

Boxes pass through one convention, float pixels ``(x1, y1, x2, y2)`` with ``x2, y2`` the
right and bottom edges: COCO ``[x, y, w, h]`` is ``(x, y, x + w, y + h)``; VOC and text
are converted by their own modules (:mod:`~ssdstack.datasets.voc`, :mod:`~ssdstack.datasets.text`).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


from ssdstack.datasets.coco import BOX_TOLERANCE_PX, SPLITS, annotation_file
from ssdstack.errors import InvalidDataset, InvalidInput
from ssdstack.images import open_image

FORMATS = ("coco", "voc", "text")
LABELS_FILE = "labels.txt"
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Box:
    xyxy: tuple[float, float, float, float]
    label: int  # 1..K
    crowd: bool = False


@dataclass(frozen=True)
class DatasetImage:
    source: Path
    file_name: str  # the name under the split folder (COCO) or JPEGImages (VOC)
    width: int
    height: int
    boxes: tuple[Box, ...]


def detect_format(root: Path) -> str:
    """``"coco"``, ``"voc"`` or ``"text"``, from the files at the top of ``root``.

    Raises InvalidDataset naming what each format needs when none is there.
    """
    root = Path(root)
    # Exact names from the listing: on a case-insensitive disk "annotations" and
    # "Annotations" would both exist.
    names = set(os.listdir(root)) if root.is_dir() else set()
    if "annotations" in names and any(annotation_file(root, split).is_file() for split in SPLITS):
        return "coco"
    if "Annotations" in names and (root / "Annotations").is_dir():
        return "voc"
    if "train.txt" in names and (root / "train.txt").is_file():
        return "text"
    if "annotations" in names and (root / "annotations").is_dir():
        return "coco"  # a broken COCO dataset: validation says what is missing
    raise InvalidDataset(
        "no dataset found: expected annotations/ (COCO), Annotations/ (Pascal VOC) or train.txt (text)",
        details=[
            "COCO needs annotations/instances_train.json, annotations/instances_val.json, train/, val/",
            "Pascal VOC needs Annotations/, JPEGImages/, ImageSets/Main/train.txt and val.txt",
            "text needs train.txt, val.txt and labels.txt",
        ],
    )


def read_coco(root: Path) -> tuple[list[str], dict[str, list[DatasetImage]]]:
    """Label names and images of a COCO dataset that passed :func:`validate_coco_dataset`."""
    names: list[str] = []
    splits = {}
    for split in SPLITS:
        doc = json.loads(annotation_file(root, split).read_text())
        categories = sorted(doc["categories"], key=lambda category: category["id"])
        names = [category["name"] for category in categories]
        label_of = {category["id"]: label for label, category in enumerate(categories, start=1)}
        boxes_of: dict[int, list[Box]] = {image["id"]: [] for image in doc["images"]}
        for ann in doc["annotations"]:
            x, y, w, h = ann["bbox"]
            boxes_of[ann["image_id"]].append(
                Box((x, y, x + w, y + h), label_of[ann["category_id"]], bool(ann.get("iscrowd", 0))))
        splits[split] = [
            DatasetImage(root / split / image["file_name"], image["file_name"], image["width"], image["height"],
                   tuple(boxes_of[image["id"]]))
            for image in doc["images"]
        ]
    return names, splits


def read_label_names(root: Path, problems: list[str], required: bool) -> list[str] | None:
    """Class names from ``root/labels.txt`` (line k names class k), or None if absent or unreadable."""
    missing = f"{LABELS_FILE} is missing; it names the classes, one per line" if required else None
    text = read_utf8(root / LABELS_FILE, LABELS_FILE, problems, missing)
    if text is None:
        return None
    names = [line.strip() for line in text.rstrip().split("\n")] if text.strip() else []
    first: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        if not name:
            problems.append(f"{LABELS_FILE} line {number} is empty")
        elif name in first:
            problems.append(f"{LABELS_FILE} line {number}: {name!r} is already on line {first[name]}")
        first.setdefault(name, number)
    if not names:
        problems.append(f"{LABELS_FILE} lists no classes")
    return names


def read_lines(path: Path, shown: str, problems: list[str]) -> list[tuple[int, str]] | None:
    """(line number, stripped text) of the non-blank lines, or None after reporting the file unreadable."""
    text = read_utf8(path, shown, problems, f"{shown} is missing")
    if text is None:
        return None
    return [(number, line.strip()) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]


def read_utf8(path: Path, shown: str, problems: list[str], missing: str | None) -> str | None:
    """The file's text, or None after reporting why not (``missing``: what to report for an
    absent file; None reports nothing)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        if missing is not None:
            problems.append(missing)
        return None
    except (UnicodeDecodeError, OSError) as exc:
        problems.append(f"{shown} cannot be read as UTF-8 text: {exc}")
        return None


def image_size(path: Path, shown: str, problems: list[str]) -> tuple[int, int] | None:
    """(width, height) from the image file's header, or None after reporting why not."""
    if not path.is_file():
        problems.append(f"{shown} is missing")
        return None
    try:
        with open_image(path) as image:  # reads the header only
            return image.size
    except Exception as exc:  # PIL raises many unrelated types on malformed files
        problems.append(f"{shown} cannot be read as an image: {exc}")
        return None


def box_problem(xyxy: tuple[float, float, float, float], size: tuple[int, int] | None) -> str | None:
    """Why pixel box ``(x1, y1, x2, y2)`` is unusable in an image of ``size`` (width, height), or None."""
    x1, y1, x2, y2 = xyxy
    if not all(math.isfinite(v) for v in xyxy):
        return "is not finite"
    if x2 <= x1 or y2 <= y1:
        return "is degenerate: zero or negative width or height"
    if size:
        width, height = size
        tol = BOX_TOLERANCE_PX
        if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
            return f"extends outside the image ({width}x{height})"
    return None


def claim_name(relative: str, taken: set[str]) -> str:
    """A flat name for ``relative`` not yet in ``taken`` (which it joins).

    Its base name, else its whole path with ``/`` as ``_``, else that with ``-2``,
    ``-3``, ... before the suffix; whitespace becomes ``_`` so names fit the text format.
    """
    parts = [re.sub(r"\s", "_", part) for part in PurePosixPath(relative).parts]
    candidate = parts[-1]
    if candidate in taken:
        candidate = "_".join(parts)
    if candidate in taken:
        joined, n = PurePosixPath(candidate), 2
        while (candidate := f"{joined.stem}-{n}{joined.suffix}") in taken:
            n += 1
    taken.add(candidate)
    return candidate


def check_output(out_root: Path) -> None:
    if out_root.exists() and (not out_root.is_dir() or any(out_root.iterdir())):
        raise InvalidInput(f"{out_root} must be an empty folder or not exist yet")


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, target)


def number_text(value: float) -> str:
    """``12`` for whole numbers, else the shortest repr that reads back exactly."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def raise_problems(problems: list[str]) -> None:
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise InvalidDataset(f"dataset has {len(problems)} {noun}", details=problems[:MAX_PROBLEMS])
