"""Pascal VOC datasets, read into and written from the common form of
:mod:`ssdstack.datasets.layout`.

Layout: ``Annotations/<id>.xml``, ``JPEGImages/<filename>``, ``ImageSets/Main/{train,val}.txt``
(ids) and optionally ``labels.txt`` (class order; else the sorted class names).
``bndbox`` holds 1-based inclusive integer pixels: read as ``(xmin - 1, ymin - 1, xmax,
ymax)``, written as ``xmin = round(x1) + 1, ymin = round(y1) + 1, xmax = round(x2),
ymax = round(y2)``. An object with difficult=1 becomes a COCO crowd (iscrowd=1), which
training and evaluation ignore.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from ssdstack.datasets.archive import unsafe_relative_path
from ssdstack.datasets.coco import SPLITS
from ssdstack.datasets.layout import (LABELS_FILE, Box, DatasetImage, box_problem, check_output, claim_name, image_size,
                                      link_or_copy, number_text, read_coco, read_label_names, read_lines)


@dataclass(frozen=True)
class _VocObject:
    index: int
    name: str
    xyxy: tuple[float, float, float, float]
    difficult: bool


@dataclass(frozen=True)
class _VocDoc:
    shown: str  # "Annotations/<id>.xml"
    image: DatasetImage  # boxes still empty
    objects: tuple[_VocObject, ...]


def read_voc(root: Path, problems: list[str]) -> tuple[list[str], dict[str, list[DatasetImage]]]:
    listed: dict[str, list[tuple[str, str]]] = {}  # split -> [(where, id)]
    for split in SPLITS:
        listing = f"ImageSets/Main/{split}.txt"
        lines = read_lines(root / listing, listing, problems)
        if lines == []:
            problems.append(f"{listing} lists no images")
        listed[split] = [(f"{listing} line {number}", line.split()[0]) for number, line in lines or []]

    docs: dict[str, _VocDoc | None] = {}  # parsed once, even when both splits list an id
    for entries in listed.values():
        for where, image_id in entries:
            if image_id not in docs:
                docs[image_id] = _read_voc_xml(root, image_id, where, problems)
    names = read_label_names(root, problems, required=False)
    if names is None:
        names = sorted({obj.name for doc in docs.values() if doc for obj in doc.objects})
    label_of = {name: label for label, name in enumerate(names, start=1)}
    images_of: dict[str, DatasetImage] = {}
    for image_id, doc in docs.items():
        if doc is None:
            continue
        boxes = []
        for obj in doc.objects:
            if obj.name in label_of:
                boxes.append(Box(obj.xyxy, label_of[obj.name], crowd=obj.difficult))
            else:
                problems.append(f"{doc.shown} object {obj.index}: unknown class {obj.name!r}, not in labels.txt")
        images_of[image_id] = replace(doc.image, boxes=tuple(boxes))

    splits: dict[str, list[DatasetImage]] = {}
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
                images.append(replace(image, file_name=claim_name(image.file_name, taken)))
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
    size = image_size(root / "JPEGImages" / file_name, f"{shown}: image JPEGImages/{file_name}", problems)
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
        reason = box_problem((xmin - 1, ymin - 1, xmax, ymax), size)
        if reason:
            problems.append(f"{shown_obj}: bndbox ({number_text(xmin)}, {number_text(ymin)}, {number_text(xmax)}, "
                            f"{number_text(ymax)}) {reason}")
            continue
        difficult = (obj.findtext("difficult") or "0").strip() not in ("", "0")
        objects.append(_VocObject(index, name, (xmin - 1, ymin - 1, xmax, ymax), difficult))
    if size is None:
        return None
    return _VocDoc(shown, DatasetImage(root / "JPEGImages" / file_name, file_name, *size, ()), tuple(objects))


def coco_to_voc(coco_root: Path, out_root: Path) -> None:
    """Write the valid COCO dataset at ``coco_root`` in VOC layout at ``out_root`` (empty or absent).

    Ids are the image file stems, made unique across both splits; ``labels.txt`` keeps
    the class order; crowd annotations become ``difficult`` objects.
    """
    names, splits = read_coco(Path(coco_root))
    out_root = Path(out_root)
    check_output(out_root)
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (out_root / folder).mkdir(parents=True)
    taken_ids: set[str] = set()
    for split, images in splits.items():
        ids = []
        for image in images:
            relative = PurePosixPath(image.file_name)
            image_id = claim_name(str(relative.with_suffix("")), taken_ids)
            file_name = image_id + relative.suffix
            link_or_copy(image.source, out_root / "JPEGImages" / file_name)
            xml = _voc_xml(replace(image, file_name=file_name), names)
            (out_root / "Annotations" / f"{image_id}.xml").write_text(xml, encoding="utf-8")
            ids.append(image_id)
        (out_root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    (out_root / LABELS_FILE).write_text("".join(f"{name}\n" for name in names), encoding="utf-8")


def _voc_xml(image: DatasetImage, names: list[str]) -> str:
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


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(float(text or ""))
    except (ValueError, OverflowError):
        return None
    return value if value > 0 else None
