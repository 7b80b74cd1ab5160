"""Pascal VOC and model-zoo text datasets, converted to and from the project's COCO layout.

Everything downstream (training, pycocotools evaluation, the dataset store) reads COCO
only (see ``coco.py``), so other formats are converted at the edge. Boxes pass through
one convention, float pixels ``(x1, y1, x2, y2)`` with ``x2, y2`` the right and bottom
edges:

* COCO ``[x, y, w, h]`` is ``(x, y, x + w, y + h)``.
* VOC ``bndbox`` holds 1-based inclusive integer pixels: ``(xmin - 1, ymin - 1, xmax,
  ymax)``; written back as ``xmin = round(x1) + 1, ymin = round(y1) + 1, xmax =
  round(x2), ymax = round(y2)``.
* Text boxes ``x1,y1,x2,y2,class`` are pixels taken as written.

Layouts read and written::

    VOC   Annotations/<id>.xml  JPEGImages/<filename>  ImageSets/Main/{train,val}.txt (ids)
          labels.txt (optional: class order; else the sorted class names)
          An object with difficult=1 becomes a COCO crowd (iscrowd=1), which training and
          evaluation ignore.
    text  {train,val}.txt: one line per image, ``path/from/root.jpg x1,y1,x2,y2,class ...``
          labels.txt: one class name per line; line 1 is class 1
          (the MindSpore model zoo SSD's own format). It has no crowd flag, so COCO crowd
          annotations are left out when writing it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from PIL import Image

from ssdstack.datasets.archive import unsafe_relative_path
from ssdstack.datasets.coco import (
    BOX_TOLERANCE_PX,
    SPLITS,
    DatasetSummary,
    annotation_file,
    validate_coco_dataset,
)
from ssdstack.errors import InvalidDataset, InvalidInput

FORMATS = ("coco", "voc", "text")
LABELS_FILE = "labels.txt"
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class _Box:
    xyxy: tuple[float, float, float, float]
    label: int  # 1..K
    crowd: bool = False


@dataclass(frozen=True)
class _Image:
    source: Path
    file_name: str  # the name under the split folder (COCO) or JPEGImages (VOC)
    width: int
    height: int
    boxes: tuple[_Box, ...]


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


def to_coco(root: Path, fmt: str, out_root: Path) -> DatasetSummary:
    """Write the ``"voc"`` or ``"text"`` dataset at ``root`` in COCO layout at ``out_root``.

    ``out_root`` must be empty or absent. Images are hard-linked (copied where links are
    impossible) to ``out_root/<split>/<file_name>``, sub-folders flattened into unique
    names; categories get ids ``1..K`` in class order. Every problem (missing image, box
    degenerate or outside its image, unknown class, empty split, duplicate image,
    unreadable line or XML) is collected first; then InvalidDataset("dataset has N
    problems", details=first 20) is raised and nothing is written.
    """
    readers = {"voc": _read_voc, "text": _read_text}
    if fmt not in readers:
        raise InvalidInput(f"to_coco reads 'voc' or 'text', not {fmt!r}")
    root, out_root = Path(root), Path(out_root)
    _check_output(out_root)
    problems: list[str] = []
    names, splits = readers[fmt](root, problems)
    _raise_problems(problems)
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "annotations").mkdir()
    categories = [{"id": label, "name": name} for label, name in enumerate(names, start=1)]
    for split, images in splits.items():
        (out_root / split).mkdir()
        doc = {"images": [], "annotations": [], "categories": categories}
        for image_id, image in enumerate(images, start=1):
            _link_or_copy(image.source, out_root / split / image.file_name)
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


def coco_to_voc(coco_root: Path, out_root: Path) -> None:
    """Write the valid COCO dataset at ``coco_root`` in VOC layout at ``out_root`` (empty or absent).

    Ids are the image file stems, made unique across both splits; ``labels.txt`` keeps
    the class order; crowd annotations become ``difficult`` objects.
    """
    names, splits = _read_coco(Path(coco_root))
    out_root = Path(out_root)
    _check_output(out_root)
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (out_root / folder).mkdir(parents=True)
    taken_ids: set[str] = set()
    for split, images in splits.items():
        ids = []
        for image in images:
            relative = PurePosixPath(image.file_name)
            image_id = _claim_name(str(relative.with_suffix("")), taken_ids)
            file_name = image_id + relative.suffix
            _link_or_copy(image.source, out_root / "JPEGImages" / file_name)
            xml = _voc_xml(replace(image, file_name=file_name), names)
            (out_root / "Annotations" / f"{image_id}.xml").write_text(xml, encoding="utf-8")
            ids.append(image_id)
        (out_root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    (out_root / LABELS_FILE).write_text("".join(f"{name}\n" for name in names), encoding="utf-8")


def coco_to_text(coco_root: Path, out_root: Path) -> None:
    """Write the valid COCO dataset at ``coco_root`` in the text format at ``out_root`` (empty or absent).

    Images go to ``<split>/<name>`` (names without whitespace, unique per split); class
    ``k`` is the ``k``-th category in id order. Crowd annotations are left out.
    """
    names, splits = _read_coco(Path(coco_root))
    out_root = Path(out_root)
    _check_output(out_root)
    for split, images in splits.items():
        (out_root / split).mkdir(parents=True)
        taken: set[str] = set()
        lines = []
        for image in images:
            file_name = _claim_name(image.file_name, taken)
            _link_or_copy(image.source, out_root / split / file_name)
            boxes = [",".join([*(_number(v) for v in box.xyxy), str(box.label)])
                     for box in image.boxes if not box.crowd]
            lines.append(" ".join([f"{split}/{file_name}", *boxes]) + "\n")
        (out_root / f"{split}.txt").write_text("".join(lines), encoding="utf-8")
    (out_root / LABELS_FILE).write_text("".join(f"{name}\n" for name in names), encoding="utf-8")


WRITERS = {"voc": coco_to_voc, "text": coco_to_text}


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
    _check_output(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".convert-") as scratch:
        coco = src if source_format == "coco" else Path(scratch) / "coco"
        if source_format != "coco":
            to_coco(src, source_format, coco)
        summary = validate_coco_dataset(coco)
        out = coco if target_format == "coco" else Path(scratch) / "out"
        if target_format != "coco":
            WRITERS[target_format](coco, out)
        if dst.exists():
            dst.rmdir()
        os.rename(out, dst)
    return summary


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``convert`` on an argparse subparsers object; its ``func`` runs :func:`convert`."""
    parser = subparsers.add_parser("convert", help="convert a dataset between COCO, Pascal VOC and the text format")
    parser.add_argument("--from", dest="source_format", choices=("auto", *FORMATS), default="auto")
    parser.add_argument("--to", dest="target_format", choices=FORMATS, default="coco")
    parser.add_argument("src", type=Path, metavar="SRC")
    parser.add_argument("dst", type=Path, metavar="DST", help="empty or new folder")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    try:
        summary = convert(args.src, args.dst, args.source_format, args.target_format)
    except InvalidInput as exc:  # InvalidDataset included
        print(f"{args.src}: {exc.message}", file=sys.stderr)
        for detail in exc.details or []:
            print(f"  {detail}", file=sys.stderr)
        return 1
    print(
        f"{args.dst} ({args.target_format}): train {summary.images['train']} images / "
        f"{summary.annotations['train']} boxes, val {summary.images['val']} images / "
        f"{summary.annotations['val']} boxes, classes {', '.join(summary.label_names)}"
    )
    return 0


# --- reading -----------------------------------------------------------------------------


def _read_text(root: Path, problems: list[str]) -> tuple[list[str], dict[str, list[_Image]]]:
    names = _read_label_names(root, problems, required=True)
    splits: dict[str, list[_Image]] = {}
    for split in SPLITS:
        listing = f"{split}.txt"
        lines = _read_lines(root / listing, listing, problems)
        images: list[_Image] = []
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
            size = _image_size(root / relative, f"{where}: image {relative}", problems)
            boxes = []
            for index, token in enumerate(tokens, start=1):
                box = _text_box(token, names, size, f"{where}: box {index} {token!r}", problems)
                if box:
                    boxes.append(box)
            if size:
                images.append(_Image(root / relative, _claim_name(relative, taken), *size, tuple(boxes)))
        if lines == []:
            problems.append(f"{listing} lists no images")
        splits[split] = images
    return names or [], splits


def _text_box(token: str, names: list[str] | None, size: tuple[int, int] | None, where: str,
              problems: list[str]) -> _Box | None:
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
    reason = _box_problem((x1, y1, x2, y2), size)
    if reason:
        problems.append(f"{where} {reason}")
        return None
    return _Box((x1, y1, x2, y2), label)


@dataclass(frozen=True)
class _VocObject:
    index: int
    name: str
    xyxy: tuple[float, float, float, float]
    difficult: bool


@dataclass(frozen=True)
class _VocDoc:
    shown: str  # "Annotations/<id>.xml"
    image: _Image  # boxes still empty
    objects: tuple[_VocObject, ...]


def _read_voc(root: Path, problems: list[str]) -> tuple[list[str], dict[str, list[_Image]]]:
    listed: dict[str, list[tuple[str, str]]] = {}  # split -> [(where, id)]
    for split in SPLITS:
        listing = f"ImageSets/Main/{split}.txt"
        lines = _read_lines(root / listing, listing, problems)
        if lines == []:
            problems.append(f"{listing} lists no images")
        listed[split] = [(f"{listing} line {number}", line.split()[0]) for number, line in lines or []]

    docs: dict[str, _VocDoc | None] = {}  # parsed once, even when both splits list an id
    for entries in listed.values():
        for where, image_id in entries:
            if image_id not in docs:
                docs[image_id] = _read_voc_xml(root, image_id, where, problems)
    names = _read_label_names(root, problems, required=False)
    if names is None:
        names = sorted({obj.name for doc in docs.values() if doc for obj in doc.objects})
    label_of = {name: label for label, name in enumerate(names, start=1)}
    images_of: dict[str, _Image] = {}
    for image_id, doc in docs.items():
        if doc is None:
            continue
        boxes = []
        for obj in doc.objects:
            if obj.name in label_of:
                boxes.append(_Box(obj.xyxy, label_of[obj.name], crowd=obj.difficult))
            else:
                problems.append(f"{doc.shown} object {obj.index}: unknown class {obj.name!r}, not in labels.txt")
        images_of[image_id] = replace(doc.image, boxes=tuple(boxes))

    splits: dict[str, list[_Image]] = {}
    for split, entries in listed.items():
        first_id: dict[str, str] = {}  # id -> where it was first listed
        first_image: dict[Path, str] = {}  # image file -> where it was first listed
        taken: set[str] = set()
        images = []
        for where, image_id in entries:
            image = images_of.get(image_id)
            if image_id in first_id:
                problems.append(f"{where}: {image_id} is already listed ({first_id[image_id]})")
                continue
            first_id[image_id] = where
            if image and image.source in first_image:
                problems.append(f"{where}: image JPEGImages/{image.file_name} is already used "
                                f"({first_image[image.source]})")
            elif image:
                first_image[image.source] = where
                images.append(replace(image, file_name=_claim_name(image.file_name, taken)))
        splits[split] = images
    return names, splits


def _read_voc_xml(root: Path, image_id: str, where: str, problems: list[str]) -> _VocDoc | None:
    """The parsed ``Annotations/<image_id>.xml``, or None after reporting why it is unusable."""
    reason = unsafe_relative_path(image_id)
    if reason:
        problems.append(f"{where}: id {image_id!r} {reason}")
        return None
    shown = f"Annotations/{image_id}.xml"
    if not (root / shown).is_file():
        problems.append(f"{where}: {shown} is missing")
        return None
    try:
        text = (root / shown).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        problems.append(f"{shown}: is not UTF-8 text")
        return None
    # ElementTree expands internal entities (the "billion laughs" bomb); annotations
    # never need a DTD. Parsing the decoded text also keeps expat from honouring an
    # encoding declaration that would hide such a declaration from this check.
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        problems.append(f"{shown}: refused: DOCTYPE and ENTITY declarations are not allowed")
        return None
    try:
        node = ET.fromstring(text)
    except ET.ParseError as exc:
        problems.append(f"{shown}: cannot be parsed as XML: {exc}")
        return None

    file_name = (node.findtext("filename") or "").strip() or f"{image_id}.jpg"
    reason = unsafe_relative_path(file_name)
    if reason:
        problems.append(f"{shown}: filename {file_name!r} {reason}")
        return None
    size = _image_size(root / "JPEGImages" / file_name, f"{shown}: image JPEGImages/{file_name}", problems)
    declared = tuple(_positive_int(node.findtext(f"size/{key}")) for key in ("width", "height"))
    if size and None not in declared and declared != size:
        problems.append(f"{shown}: size {declared[0]}x{declared[1]} differs from the image's {size[0]}x{size[1]}")

    objects = []
    for index, obj in enumerate(node.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        shown_obj = f"{shown} object {index}" + (f" ({name})" if name else "")
        try:
            xmin, ymin, xmax, ymax = (float(obj.findtext(f"bndbox/{key}") or "")
                                      for key in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            problems.append(f"{shown_obj}: bndbox needs numbers xmin, ymin, xmax, ymax")
            continue
        if not name:
            problems.append(f"{shown_obj}: has no name")
            continue
        reason = _box_problem((xmin - 1, ymin - 1, xmax, ymax), size)
        if reason:
            problems.append(f"{shown_obj}: bndbox ({_number(xmin)}, {_number(ymin)}, {_number(xmax)}, "
                            f"{_number(ymax)}) {reason}")
            continue
        difficult = (obj.findtext("difficult") or "0").strip() not in ("", "0")
        objects.append(_VocObject(index, name, (xmin - 1, ymin - 1, xmax, ymax), difficult))
    if size is None:
        return None
    return _VocDoc(shown, _Image(root / "JPEGImages" / file_name, file_name, *size, ()), tuple(objects))


def _read_coco(root: Path) -> tuple[list[str], dict[str, list[_Image]]]:
    """Label names and images of a COCO dataset that passed :func:`validate_coco_dataset`."""
    names: list[str] = []
    splits = {}
    for split in SPLITS:
        doc = json.loads(annotation_file(root, split).read_text())
        categories = sorted(doc["categories"], key=lambda category: category["id"])
        names = [category["name"] for category in categories]
        label_of = {category["id"]: label for label, category in enumerate(categories, start=1)}
        boxes_of: dict[int, list[_Box]] = {image["id"]: [] for image in doc["images"]}
        for ann in doc["annotations"]:
            x, y, w, h = ann["bbox"]
            boxes_of[ann["image_id"]].append(
                _Box((x, y, x + w, y + h), label_of[ann["category_id"]], bool(ann.get("iscrowd", 0))))
        splits[split] = [
            _Image(root / split / image["file_name"], image["file_name"], image["width"], image["height"],
                   tuple(boxes_of[image["id"]]))
            for image in doc["images"]
        ]
    return names, splits


def _read_label_names(root: Path, problems: list[str], required: bool) -> list[str] | None:
    """Class names from ``root/labels.txt`` (line k names class k), or None if absent or unreadable."""
    missing = f"{LABELS_FILE} is missing; it names the classes, one per line" if required else None
    text = _read_utf8(root / LABELS_FILE, LABELS_FILE, problems, missing)
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


def _read_lines(path: Path, shown: str, problems: list[str]) -> list[tuple[int, str]] | None:
    """(line number, stripped text) of the non-blank lines, or None after reporting the file unreadable."""
    text = _read_utf8(path, shown, problems, f"{shown} is missing")
    if text is None:
        return None
    return [(number, line.strip()) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]


def _read_utf8(path: Path, shown: str, problems: list[str], missing: str | None) -> str | None:
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


def _image_size(path: Path, shown: str, problems: list[str]) -> tuple[int, int] | None:
    """(width, height) from the image file's header, or None after reporting why not."""
    if not path.is_file():
        problems.append(f"{shown} is missing")
        return None
    try:
        with Image.open(path) as image:  # reads the header only
            return image.size
    except Exception as exc:  # PIL raises many unrelated types on malformed files
        problems.append(f"{shown} cannot be read as an image: {exc}")
        return None


def _box_problem(xyxy: tuple[float, float, float, float], size: tuple[int, int] | None) -> str | None:
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


# --- writing -----------------------------------------------------------------------------


def _voc_xml(image: _Image, names: list[str]) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = image.file_name
    size = ET.SubElement(root, "size")
    for key, value in (("width", image.width), ("height", image.height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for box in image.boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = names[box.label - 1]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(box.crowd))
        bndbox = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), _voc_bndbox(box.xyxy, image.width, image.height)):
            ET.SubElement(bndbox, key).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _voc_bndbox(xyxy: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """1-based inclusive ``(xmin, ymin, xmax, ymax)``, kept inside the image and at least 1 px."""
    x1, y1, x2, y2 = xyxy
    xmin = min(max(round(x1) + 1, 1), width)
    ymin = min(max(round(y1) + 1, 1), height)
    return xmin, ymin, min(max(round(x2), xmin), width), min(max(round(y2), ymin), height)


def _claim_name(relative: str, taken: set[str]) -> str:
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


def _check_output(out_root: Path) -> None:
    if out_root.exists() and (not out_root.is_dir() or any(out_root.iterdir())):
        raise InvalidInput(f"{out_root} must be an empty folder or not exist yet")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, target)


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(float(text or ""))
    except (ValueError, OverflowError):
        return None
    return value if value > 0 else None


def _number(value: float) -> str:
    """``12`` for whole numbers, else the shortest repr that reads back exactly."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _raise_problems(problems: list[str]) -> None:
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise InvalidDataset(f"dataset has {len(problems)} {noun}", details=problems[:MAX_PROBLEMS])
