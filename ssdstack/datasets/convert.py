"""Datasets in any supported layout (COCO, Pascal VOC, the zoo's text format) to the
project's COCO layout and back, checked on the way: everything downstream (training,
pycocotools evaluation, the dataset store) reads COCO only.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ssdstack.datasets.coco import DatasetSummary, annotation_file
from ssdstack.datasets.layout import FORMATS, check_output, detect_format, link_or_copy, raise_problems
from ssdstack.datasets.text import coco_to_text, read_text
from ssdstack.datasets.validation import validate_coco_dataset
from ssdstack.datasets.voc import coco_to_voc, read_voc
from ssdstack.errors import InvalidInput


def to_coco(root: Path, fmt: str, out_root: Path) -> DatasetSummary:
    """Write the ``"voc"`` or ``"text"`` dataset at ``root`` in COCO layout at ``out_root``.

    ``out_root`` must be empty or absent. Images are hard-linked (copied where links are
    impossible) to ``out_root/<split>/<file_name>``, sub-folders flattened into unique
    names; categories get ids ``1..K`` in class order. Every problem (missing image, box
    degenerate or outside its image, unknown class, empty split, duplicate image,
    unreadable line or XML) is collected first; then InvalidDataset("dataset has N
    problems", details=first 20) is raised and nothing is written.
    """
    if fmt not in READERS:
        raise InvalidInput(f"to_coco reads 'voc' or 'text', not {fmt!r}")
    root, out_root = Path(root), Path(out_root)
    check_output(out_root)
    problems: list[str] = []
    names, splits = READERS[fmt](root, problems)
    raise_problems(problems)
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "annotations").mkdir()
    categories = [{"id": label, "name": name} for label, name in enumerate(names, start=1)]
    for split, images in splits.items():
        (out_root / split).mkdir()
        doc = {"images": [], "annotations": [], "categories": categories}
        for image_id, image in enumerate(images, start=1):
            link_or_copy(image.source, out_root / split / image.file_name)
            doc["images"].append({"id": image_id, "file_name": image.file_name,
                                  "width": image.width, "height": image.height})
            for box in image.boxes:
                x1, y1, x2, y2 = box.xyxy
                doc["annotations"].append({
                    "id": len(doc["annotations"]) + 1, "image_id": image_id, "category_id": box.label,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(box.crowd),
                })
        annotation_file(out_root, split).write_text(json.dumps(doc))
    return DatasetSummary(
        images={split: len(images) for split, images in splits.items()},
        annotations={split: sum(len(i.boxes) for i in images) for split, images in splits.items()},
        label_names=tuple(names),
    )


READERS = {"voc": read_voc, "text": read_text}
WRITERS = {"voc": coco_to_voc, "text": coco_to_text}


def as_coco(root: Path, fmt: str, scratch: Path, max_pixels: int = 50_000_000) -> tuple[Path, DatasetSummary]:
    """The dataset at ``root`` (in format ``fmt``) as a checked COCO dataset: ``root``
    itself when it is COCO, else its conversion written to ``scratch`` (empty or absent;
    images are hard-linked into it). Raises InvalidDataset for any error found.
    """
    if fmt != "coco":
        to_coco(root, fmt, scratch)
        root = scratch
    return root, validate_coco_dataset(root, max_pixels=max_pixels)


def convert(src: Path, dst: Path, source_format: str = "auto", target_format: str = "coco") -> DatasetSummary:
    """Convert the dataset at ``src`` into ``dst`` (empty or absent), checking it on the way.

    The COCO form is validated in full (:func:`validate_coco_dataset`); ``dst`` appears
    only once everything succeeded. Raises InvalidDataset or InvalidInput.
    """
    src, dst = Path(src), Path(dst)
    if source_format == "auto":
        source_format = detect_format(src)
    if source_format not in FORMATS or target_format not in FORMATS:
        raise InvalidInput(f"formats are {', '.join(FORMATS)}; got {source_format!r} -> {target_format!r}")
    if source_format == target_format:
        raise InvalidInput(f"{src} is already in the {source_format} format")
    check_output(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".convert-") as scratch:
        coco, summary = as_coco(src, source_format, Path(scratch) / "coco")
        out = coco if target_format == "coco" else Path(scratch) / "out"
        if target_format != "coco":
            WRITERS[target_format](coco, out)
        if dst.exists():
            dst.rmdir()
        os.rename(out, dst)
    return summary
