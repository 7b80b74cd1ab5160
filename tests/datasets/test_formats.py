"""Pascal VOC and text-format datasets: detection, conversion to COCO and back, every problem reported."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssdstack.datasets.coco import load_coco_split
from ssdstack.datasets.convert import to_coco
from ssdstack.datasets.layout import detect_format
from ssdstack.datasets.text import coco_to_text
from ssdstack.datasets.voc import coco_to_voc
from ssdstack.datasets.synth import synthesize
from ssdstack.errors import InvalidDataset, InvalidInput

SPLITS = ("train", "val")
SIZE = (40, 30)  # width, height of the hand-made images


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict[str, Path]:
    """The same 12-image synthetic dataset written as COCO, VOC and text."""
    base = tmp_path_factory.mktemp("formats")
    return {
        fmt: synthesize(base / fmt, images=12, classes=3, seed=5, min_side=64, max_side=96, format=fmt).out_dir
        for fmt in ("coco", "voc", "text")
    }


def assert_same_dataset(expected_root: Path, actual_root: Path, tolerance: float = 1.0) -> None:
    """Same label names, and image for image the same pixels, boxes (within ``tolerance`` px) and labels."""
    for split in SPLITS:
        expected, actual = load_coco_split(expected_root, split), load_coco_split(actual_root, split)
        assert actual.label_names == expected.label_names
        assert len(actual.records) == len(expected.records) > 0
        for want, got in zip(expected.records, actual.records):
            assert got.path.read_bytes() == want.path.read_bytes()
            assert (got.width, got.height) == (want.width, want.height)
            np.testing.assert_array_equal(got.labels, want.labels)
            np.testing.assert_allclose(got.boxes, want.boxes, atol=tolerance)


def jpeg(path: Path, size: tuple[int, int] = SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 60, 30)).save(path)


def voc_xml(filename: str, objects: list[tuple], size: tuple[int, int] = SIZE) -> str:
    """Objects are ``(name, xmin, ymin, xmax, ymax)`` or with a sixth item, difficult."""
    parts = [f"<annotation><filename>{filename}</filename>"
             f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    for name, *box in objects:
        difficult = box[4] if len(box) > 4 else 0
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
                     f"<xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax>"
                     "</bndbox></object>")
    return "".join(parts) + "</annotation>"


def write_voc(root: Path, train: dict[str, list[tuple]] | None = None, val: dict[str, list[tuple]] | None = None,
              labels: list[str] | None = None) -> Path:
    """A VOC dataset with one 40x30 JPEG per id; ``train``/``val`` map ids to their objects."""
    splits = {"train": {"a": [("cat", 1, 1, 10, 8)]} if train is None else train,
              "val": {"b": [("dog", 5, 5, 20, 20)]} if val is None else val}
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for split, objects_of in splits.items():
        for image_id, objects in objects_of.items():
            jpeg(root / "JPEGImages" / f"{image_id}.jpg")
            (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(f"{image_id}.jpg", objects))
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in objects_of))
    if labels is not None:
        (root / "labels.txt").write_text("\n".join(labels) + "\n")
    return root


def write_text(root: Path, train: list[str] | None = None, val: list[str] | None = None,
               labels: tuple[str, ...] = ("cat", "dog")) -> Path:
    """A text-format dataset with 40x30 JPEGs img/a.jpg and img/b.jpg."""
    for name in ("a", "b"):
        jpeg(root / "img" / f"{name}.jpg")
    lines = {"train": ["img/a.jpg 1,2,11,12,1 20,5,30.5,25,2"] if train is None else train,
             "val": ["img/b.jpg 0,0,40,30,2"] if val is None else val}
    for split, split_lines in lines.items():
        (root / f"{split}.txt").write_text("".join(f"{line}\n" for line in split_lines))
    (root / "labels.txt").write_text("".join(f"{name}\n" for name in labels))
    return root


def problems_of(root: Path, fmt: str, out: Path) -> list[str]:
    with pytest.raises(InvalidDataset) as caught:
        to_coco(root, fmt, out)
    assert not out.exists()  # nothing written when anything is wrong
    return caught.value.details


# --- the same dataset in every format ---------------------------------------------------


@pytest.mark.parametrize("fmt", ["voc", "text"])
def test_every_format_reads_back_as_the_same_dataset(synthetic, tmp_path, fmt):
    assert detect_format(synthetic[fmt]) == fmt

    summary = to_coco(synthetic[fmt], fmt, tmp_path / "coco")

    assert summary.label_names == ("red_circle", "green_square", "blue_triangle")
    assert_same_dataset(synthetic["coco"], tmp_path / "coco")


def test_detect_format(synthetic, tmp_path):
    assert detect_format(synthetic["coco"]) == "coco"
    with pytest.raises(InvalidDataset, match="no dataset found") as caught:
        detect_format(tmp_path)
    assert any("Pascal VOC" in detail for detail in caught.value.details)


def test_writers_refuse_a_folder_that_is_not_empty(synthetic, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    for writer in (coco_to_voc, coco_to_text):
        with pytest.raises(InvalidInput, match="empty"):
            writer(synthetic["coco"], tmp_path)
    with pytest.raises(InvalidInput, match="empty"):
        to_coco(synthetic["voc"], "voc", tmp_path)


# --- VOC ----------------------------------------------------------------------------------


def test_voc_boxes_are_one_based_inclusive(tmp_path):
    root = write_voc(tmp_path / "voc", train={"a": [("cat", 1, 1, 10, 8)]})

    to_coco(root, "voc", tmp_path / "coco")

    record = load_coco_split(tmp_path / "coco", "train").records[0]
    assert record.boxes.tolist() == [[0, 0, 10, 8]]
    assert (record.width, record.height) == SIZE
    coco_to_voc(tmp_path / "coco", tmp_path / "back")
    assert "<xmin>1</xmin>" in (tmp_path / "back" / "Annotations" / "a.xml").read_text()
    assert "<xmax>10</xmax>" in (tmp_path / "back" / "Annotations" / "a.xml").read_text()


def test_voc_difficult_objects_become_crowd(tmp_path):
    root = write_voc(tmp_path / "voc", train={"a": [("cat", 1, 1, 10, 8), ("dog", 12, 2, 30, 20, 1)]})

    to_coco(root, "voc", tmp_path / "coco")

    doc = json.loads((tmp_path / "coco" / "annotations" / "instances_train.json").read_text())
    assert [(a["bbox"], a["iscrowd"]) for a in doc["annotations"]] == [([0, 0, 10, 8], 0), ([11, 1, 19, 19], 1)]
    assert load_coco_split(tmp_path / "coco", "train").records[0].labels.tolist() == [1]  # crowd not a target
    coco_to_voc(tmp_path / "coco", tmp_path / "back")
    assert "<difficult>1</difficult>" in (tmp_path / "back" / "Annotations" / "a.xml").read_text()


def test_voc_classes_are_sorted_unless_labels_txt_orders_them(tmp_path):
    objects = {"train": {"a": [("zebra", 1, 1, 10, 8)]}, "val": {"b": [("ant", 1, 1, 10, 8)]}}
    to_coco(write_voc(tmp_path / "sorted", **objects), "voc", tmp_path / "c1")
    to_coco(write_voc(tmp_path / "listed", **objects, labels=["zebra", "bee", "ant"]), "voc", tmp_path / "c2")

    assert load_coco_split(tmp_path / "c1", "train").label_names == ("ant", "zebra")
    assert load_coco_split(tmp_path / "c2", "train").label_names == ("zebra", "bee", "ant")
    assert load_coco_split(tmp_path / "c2", "val").records[0].labels.tolist() == [3]


BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  '<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><annotation>&lol2;</annotation>')


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda root: (root / "JPEGImages" / "a.jpg").unlink(),
         "Annotations/a.xml: image JPEGImages/a.jpg is missing"),
        (lambda root: (root / "Annotations" / "a.xml").unlink(),
         "ImageSets/Main/train.txt line 1: Annotations/a.xml is missing"),
        (lambda root: (root / "Annotations" / "a.xml").write_text(BILLION_LAUGHS),
         "Annotations/a.xml: refused: DOCTYPE and ENTITY declarations are not allowed"),
        (lambda root: (root / "Annotations" / "a.xml").write_text("<annotation><object>"),
         "Annotations/a.xml: cannot be parsed as XML: no element found: line 1, column 20"),
        (lambda root: (root / "labels.txt").write_text("cat\n"),
         "Annotations/b.xml object 1: unknown class 'dog', not in labels.txt"),
        (lambda root: (root / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", [("cat", 1, 1, 42, 8)])),
         "Annotations/a.xml object 1 (cat): bndbox (1, 1, 42, 8) extends outside the image (40x30)"),
        (lambda root: (root / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", [("cat", 10, 1, 9, 8)])),
         "Annotations/a.xml object 1 (cat): bndbox (10, 1, 9, 8) is degenerate: zero or negative width or height"),
        (lambda root: (root / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", [("cat", 1, 1, "x", 8)])),
         "Annotations/a.xml object 1 (cat): bndbox needs numbers xmin, ymin, xmax, ymax"),
        (lambda root: (root / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", [], size=(50, 30))),
         "Annotations/a.xml: size 50x30 differs from the image's 40x30"),
        (lambda root: (root / "ImageSets" / "Main" / "val.txt").write_text("\n"),
         "ImageSets/Main/val.txt lists no images"),
        (lambda root: (root / "ImageSets" / "Main" / "train.txt").write_text("a\na\n"),
         "ImageSets/Main/train.txt line 2: a is already listed (ImageSets/Main/train.txt line 1)"),
        (lambda root: (root / "Annotations" / "a.xml").write_text(voc_xml("../b.jpg", [])),
         "Annotations/a.xml: filename '../b.jpg' contains a '..' component"),
    ],
)
def test_voc_problems_are_reported(tmp_path, damage, expected):
    root = write_voc(tmp_path / "voc")
    damage(root)

    assert problems_of(root, "voc", tmp_path / "coco") == [expected]


# --- text format ------------------------------------------------------------------------


def test_text_class_ids_count_from_one_and_name_labels_txt_lines(tmp_path):
    root = write_text(tmp_path / "text", labels=("cat", "dog"))
    assert detect_format(root) == "text"

    to_coco(root, "text", tmp_path / "coco")

    split = load_coco_split(tmp_path / "coco", "train")
    assert split.label_names == ("cat", "dog") and split.category_ids == (1, 2)
    assert split.records[0].labels.tolist() == [1, 2]
    assert split.records[0].boxes.tolist() == [[1, 2, 11, 12], [20, 5, 30.5, 25]]
    assert split.records[0].path == tmp_path / "coco" / "train" / "a.jpg"


def test_text_sub_folders_are_flattened_into_unique_names(tmp_path):
    root = write_text(tmp_path / "text", train=["img/a.jpg", "x/img/a.jpg 1,1,5,5,1", "x/img_a.jpg"])
    for path in ("x/img/a.jpg", "x/img_a.jpg"):
        jpeg(root / path)

    to_coco(root, "text", tmp_path / "coco")

    records = load_coco_split(tmp_path / "coco", "train").records
    assert [r.path.name for r in records] == ["a.jpg", "x_img_a.jpg", "img_a.jpg"]
    assert records[1].boxes.tolist() == [[1, 1, 5, 5]]


@pytest.mark.parametrize(
    ("train", "val", "expected"),
    [
        (["img/nope.jpg 1,2,3,4,1"], None, "train.txt line 1: image img/nope.jpg is missing"),
        (["img/a.jpg 1,2,41.5,12,1"], None,
         "train.txt line 1: box 1 '1,2,41.5,12,1' extends outside the image (40x30)"),
        (["img/a.jpg 5,2,5,12,1"], None,
         "train.txt line 1: box 1 '5,2,5,12,1' is degenerate: zero or negative width or height"),
        (["img/a.jpg 1,2,11,12,0"], None,
         "train.txt line 1: box 1 '1,2,11,12,0': class id 0 is outside 1..2 (labels.txt)"),
        (["img/a.jpg 1,2,11,12,1 1,2,11,12,3"], None,
         "train.txt line 1: box 2 '1,2,11,12,3': class id 3 is outside 1..2 (labels.txt)"),
        (["img/a.jpg 1,2,11,12"], None, "train.txt line 1: box 1 '1,2,11,12' is not x1,y1,x2,y2,class"),
        (["img/a.jpg 1,2,eleven,12,1"], None, "train.txt line 1: box 1 '1,2,eleven,12,1' is not x1,y1,x2,y2,class"),
        (None, [], "val.txt lists no images"),
        (["img/a.jpg", "", "img/a.jpg 1,2,11,12,1"], None,
         "train.txt line 3: image img/a.jpg is already listed on line 1"),
        (["../a.jpg"], None, "train.txt line 1: image path '../a.jpg' contains a '..' component"),
    ],
)
def test_text_problems_are_reported(tmp_path, train, val, expected):
    root = write_text(tmp_path / "text", train=train, val=val)

    assert problems_of(root, "text", tmp_path / "coco") == [expected]


def test_text_without_labels_txt(tmp_path):
    root = write_text(tmp_path / "text")
    (root / "labels.txt").unlink()

    assert problems_of(root, "text", tmp_path / "coco") == ["labels.txt is missing; it names the classes, one per line"]


def test_all_problems_are_collected_and_the_first_20_listed(tmp_path):
    boxes = " ".join(f"{i},1,{i},5,1" for i in range(1, 26))  # 25 degenerate boxes
    root = write_text(tmp_path / "text", train=[f"img/a.jpg {boxes}"], val=["img/b.jpg 1,2,11,12,9"])

    with pytest.raises(InvalidDataset, match="dataset has 26 problems") as caught:
        to_coco(root, "text", tmp_path / "coco")
    assert len(caught.value.details) == 20


# --- command line -------------------------------------------------------------------------
