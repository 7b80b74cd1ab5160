"""The synthetic dataset: COCO layout, exact boxes, determinism, argument checks, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from ssdstack.datasets.synth import CLASSES, synthesize
from ssdstack.errors import InvalidInput

SPLITS = ("train", "val")
# A pixel "has the class colour" when every channel is within this many levels of the
# class's nominal colour: wide enough for colour jitter, pixel noise and JPEG, far
# narrower than the gap to the dark backgrounds and to every other class colour.
COLOUR_TOLERANCE = 60
# JPEG smears a hard edge over about a pixel, so "outside" is checked this far out.
OUTSIDE_GAP = 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """300 images of all 8 classes, generated once for the module."""
    out_dir = tmp_path_factory.mktemp("synth") / "shapes"
    return synthesize(out_dir, images=300, classes=8, seed=7)


def load(summary, split: str) -> COCO:
    return COCO(str(summary.out_dir / "annotations" / f"instances_{split}.json"))


def test_reads_back_with_pycocotools(dataset):
    assert (dataset.train_images, dataset.val_images) == (240, 60)
    assert dataset.categories == tuple(name for name, _ in CLASSES)
    for split in SPLITS:
        coco = load(dataset, split)
        assert len(coco.getImgIds()) == getattr(dataset, f"{split}_images")
        assert len(coco.getAnnIds()) == getattr(dataset, f"{split}_annotations")
        cats = coco.loadCats(coco.getCatIds())
        assert [(c["id"], c["name"], c["supercategory"]) for c in cats] == [
            (i + 1, name, "shape") for i, (name, _) in enumerate(CLASSES)
        ]
        for info in coco.loadImgs(coco.getImgIds()):
            with Image.open(dataset.out_dir / split / info["file_name"]) as picture:
                assert picture.format == "JPEG" and picture.mode == "RGB"
                assert picture.size == (info["width"], info["height"])
            anns = coco.loadAnns(coco.getAnnIds(imgIds=info["id"]))
            assert 1 <= len(anns) <= 4
            for ann in anns:
                x, y, w, h = ann["bbox"]
                assert all(isinstance(v, float) for v in ann["bbox"])
                assert 0 <= x and 0 <= y and w > 0 and h > 0
                assert x + w <= info["width"] and y + h <= info["height"]
                assert ann["area"] == w * h and ann["iscrowd"] == 0
    train_files = {i["file_name"] for i in load(dataset, "train").dataset["images"]}
    val_files = {i["file_name"] for i in load(dataset, "val").dataset["images"]}
    assert not train_files & val_files


def test_boxes_are_tight_around_the_drawn_pixels(dataset):
    """Each box edge touches the object's colour; the line OUTSIDE_GAP px beyond it does not.

    Checked on objects whose box, grown by a margin, meets no other box, so that no other
    object can hide the edge or put its own pixels next to it. A box one pixel off in any
    direction fails one of the two checks.
    """
    checked = 0
    for split in SPLITS:
        coco = load(dataset, split)
        for info in coco.loadImgs(coco.getImgIds()):
            with Image.open(dataset.out_dir / split / info["file_name"]) as picture:
                pixels = np.asarray(picture.convert("RGB"), dtype=np.int16)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=info["id"]))
            for ann in anns:
                x0, y0, w, h = (int(v) for v in ann["bbox"])
                assert (x0, y0, w, h) == tuple(ann["bbox"])  # exact pixel extents, no fractions
                x1, y1 = x0 + w - 1, y0 + h - 1  # last column and row inside the box
                others = [a["bbox"] for a in anns if a is not ann]
                if any(_overlaps((x0, y0, x1, y1), box, margin=OUTSIDE_GAP + 2) for box in others):
                    continue
                colour = np.asarray(CLASSES[ann["category_id"] - 1][1], dtype=np.int16)
                matches = np.abs(pixels - colour).max(axis=2) <= COLOUR_TOLERANCE  # [H, W]

                edges = {"left": matches[y0 : y1 + 1, x0], "right": matches[y0 : y1 + 1, x1],
                         "top": matches[y0, x0 : x1 + 1], "bottom": matches[y1, x0 : x1 + 1]}
                for side, line in edges.items():
                    assert line.any(), f"{split}/{info['file_name']} {ann['bbox']}: no object colour on {side} edge"

                height, width = matches.shape
                g = OUTSIDE_GAP
                rows = slice(max(y0 - g, 0), min(y1 + g, height - 1) + 1)
                cols = slice(max(x0 - g, 0), min(x1 + g, width - 1) + 1)
                # Sides cut by the image border (truncated objects) have no outside to check.
                outside = {"left": (rows, x0 - g - 1), "right": (rows, x1 + g + 1),
                           "top": (y0 - g - 1, cols), "bottom": (y1 + g + 1, cols)}
                for side, (r, c) in outside.items():
                    if (isinstance(r, int) and not 0 <= r < height) or (isinstance(c, int) and not 0 <= c < width):
                        continue
                    assert not matches[r, c].any(), f"{split}/{info['file_name']} {ann['bbox']}: colour beyond {side}"
                checked += 1
    assert checked > 200  # the check ran on most objects, not on a lucky few


def _overlaps(box: tuple[int, int, int, int], coco_box: list[float], margin: int) -> bool:
    """Whether inclusive pixel box ``(x0, y0, x1, y1)`` grown by ``margin`` meets COCO ``[x, y, w, h]``."""
    x, y, w, h = coco_box
    return not (x > box[2] + margin or x + w - 1 < box[0] - margin or y > box[3] + margin or y + h - 1 < box[1] - margin)


def test_objects_are_sometimes_truncated_and_images_vary_in_size(dataset):
    truncated = total = 0
    sizes = set()
    for split in SPLITS:
        coco = load(dataset, split)
        for info in coco.loadImgs(coco.getImgIds()):
            width, height = info["width"], info["height"]
            assert 160 <= width <= 400 and 160 <= height <= 400
            sizes.add((width, height))
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=info["id"])):
                x, y, w, h = ann["bbox"]
                truncated += x == 0 or y == 0 or x + w == width or y + h == height
                total += 1
                assert 0.05 <= max(w, h) / min(width, height) <= 0.7
    assert 0.05 <= truncated / total <= 0.35
    assert len(sizes) > 250
    widths = [w for w, _ in sizes]
    assert min(widths) < 200 and max(widths) > 360


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    def files(out_dir: Path) -> dict[str, bytes]:
        return {str(p.relative_to(out_dir)): p.read_bytes() for p in sorted(out_dir.rglob("*")) if p.is_file()}

    first = files(synthesize(tmp_path / "a", images=8, classes=3, seed=3).out_dir)
    again = files(synthesize(tmp_path / "b", images=8, classes=3, seed=3).out_dir)
    other = files(synthesize(tmp_path / "c", images=8, classes=3, seed=4).out_dir)
    assert len(first) == 8 + 2
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)


@pytest.mark.parametrize(
    ("images", "expected"), [(1, (1, 0)), (2, (1, 1)), (10, (8, 2)), (13, (10, 3))]
)
def test_val_split_takes_the_last_images(tmp_path, images, expected):
    summary = synthesize(tmp_path / "d", images=images, classes=2, seed=0, min_side=64, max_side=96)
    assert (summary.train_images, summary.val_images) == expected
    val = json.loads((tmp_path / "d" / "annotations" / "instances_val.json").read_text())
    assert [i["file_name"] for i in val["images"]] == [f"{n:06d}.jpg" for n in range(expected[0] + 1, images + 1)]
    assert all((tmp_path / "d" / "val" / i["file_name"]).is_file() for i in val["images"])


@pytest.mark.parametrize(
    "overrides",
    [
        {"images": 0},
        {"images": 2.5},
        {"classes": 0},
        {"classes": 9},
        {"seed": -1},
        {"val_fraction": 0.0},
        {"val_fraction": 1.0},
        {"val_fraction": "0.2"},
        {"min_side": 32},
        {"min_side": 300, "max_side": 200},
        {"format": "yolo"},
    ],
)
def test_bad_arguments_raise_invalid_input(tmp_path, overrides):
    arguments = {"out_dir": tmp_path / "e", "images": 4, "classes": 3, "seed": 0} | overrides
    with pytest.raises(InvalidInput):
        synthesize(**arguments)
    assert not (tmp_path / "e").exists()


def test_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="empty"):
        synthesize(tmp_path, images=2, classes=1, seed=0)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
