"""The MindSpore model zoo's text format, read into and written from the common form of
:mod:`ssdstack.datasets.layout`.

Layout: ``{train,val}.txt``, one line per image, ``path/from/root.jpg x1,y1,x2,y2,class ...``
(pixels taken as written), and ``labels.txt``, one class name per line (line 1 is class 1).
It has no crowd flag, so COCO crowd annotations are left out when writing it.
"""
from __future__ import annotations

from pathlib import Path

from ssdstack.datasets.archive import unsafe_relative_path
from ssdstack.datasets.coco import SPLITS
from ssdstack.datasets.layout import (LABELS_FILE, Box, DatasetImage, box_problem, check_output, claim_name, image_size,
                                      link_or_copy, number_text, read_coco, read_label_names, read_lines)


def read_text(root: Path, problems: list[str]) -> tuple[list[str], dict[str, list[DatasetImage]]]:
    names = read_label_names(root, problems, required=True)
    splits: dict[str, list[DatasetImage]] = {}
    for split in SPLITS:
        listing = f"{split}.txt"
        lines = read_lines(root / listing, listing, problems)
        images: list[DatasetImage] = []
        first_line: dict[str, int] = {}
        taken: set[str] = set()
        for number, line in lines or []:
            where = f"{listing} line {number}"
            relative, *tokens = line.split()
            if relative in first_line:
                problems.append(f"{where}: image {relative} is already listed on line {first_line[relative]}")
                continue
            first_line[relative] = number
            reason = unsafe_relative_path(relative)
            if reason:
                problems.append(f"{where}: image path {relative!r} {reason}")
                continue
            size = image_size(root / relative, f"{where}: image {relative}", problems)
            boxes = []
            for index, token in enumerate(tokens, start=1):
                box = _text_box(token, names, size, f"{where}: box {index} {token!r}", problems)
                if box:
                    boxes.append(box)
            if size:
                images.append(DatasetImage(root / relative, claim_name(relative, taken), *size, tuple(boxes)))
        if lines == []:
            problems.append(f"{listing} lists no images")
        splits[split] = images
    return names or [], splits


def _text_box(token: str, names: list[str] | None, size: tuple[int, int] | None, where: str,
              problems: list[str]) -> Box | None:
    parts = token.split(",")
    try:
        if len(parts) != 5:
            raise ValueError
        x1, y1, x2, y2 = (float(v) for v in parts[:4])
        label = int(parts[4])
    except ValueError:
        problems.append(f"{where} is not x1,y1,x2,y2,class")
        return None
    if names is not None and not 1 <= label <= len(names):
        problems.append(f"{where}: class id {label} is outside 1..{len(names)} (labels.txt)")
        return None
    reason = box_problem((x1, y1, x2, y2), size)
    if reason:
        problems.append(f"{where} {reason}")
        return None
    return Box((x1, y1, x2, y2), label)


def coco_to_text(coco_root: Path, out_root: Path) -> None:
    """Write the valid COCO dataset at ``coco_root`` in the text format at ``out_root`` (empty or absent).

    Images go to ``<split>/<name>`` (names without whitespace, unique per split); class
    ``k`` is the ``k``-th category in id order. Crowd annotations are left out.
    """
    names, splits = read_coco(Path(coco_root))
    out_root = Path(out_root)
    check_output(out_root)
    for split, images in splits.items():
        (out_root / split).mkdir(parents=True)
        taken: set[str] = set()
        lines = []
        for image in images:
            file_name = claim_name(image.file_name, taken)
            link_or_copy(image.source, out_root / split / file_name)
            boxes = [",".join([*(number_text(v) for v in box.xyxy), str(box.label)])
                     for box in image.boxes if not box.crowd]
            lines.append(" ".join([f"{split}/{file_name}", *boxes]) + "\n")
        (out_root / f"{split}.txt").write_text("".join(lines), encoding="utf-8")
    (out_root / LABELS_FILE).write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
