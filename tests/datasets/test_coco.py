"""Loading a split of a COCO dataset (``ssdstack.datasets.coco``)."""
from __future__ import annotations

import numpy as np
import pytest

from ssdstack.datasets.coco import load_coco_split
from ssdstack.errors import InvalidDataset


# --- load_coco_split ---------------------------------------------------------------


def test_load_maps_sparse_category_ids_to_contiguous_labels(tmp_path, make_coco):
    root = make_coco(tmp_path / "ds", category_ids=(12, 3, 7))

    split = load_coco_split(root, "train")

    assert split.category_ids == (3, 7, 12)
    assert split.label_names == ("class3", "class7", "class12")
    record = split.records[0]
    # write_coco gives box k to category_ids[k] = 12, 3, 7 -> labels 3, 1, 2.
    assert record.labels.tolist() == [3, 1, 2]
    assert record.labels.dtype == np.int64


def test_load_converts_boxes_to_corners(coco_root):
    split = load_coco_split(coco_root, "val")

    record = split.records[0]
    assert record.boxes.dtype == np.float32
    np.testing.assert_array_equal(record.boxes, [[4, 5, 12, 11], [14, 5, 22, 11]])
    assert record.path == coco_root / "val" / "val_1.jpg"
    assert (record.width, record.height) == (64, 48)
    assert split.annotation_file == coco_root / "annotations" / "instances_val.json"


def test_load_leaves_out_crowd_and_zero_area_boxes(coco_root, edit_annotations):
    with edit_annotations(coco_root, "train") as doc:
        doc["annotations"][0]["iscrowd"] = 1
        doc["annotations"][1]["bbox"] = [4, 5, 0, 6]

    record = load_coco_split(coco_root, "train").records[0]

    assert record.boxes.shape == (0, 4)
    assert record.labels.shape == (0,)


def test_load_missing_annotation_file_names_it(coco_root):
    (coco_root / "annotations" / "instances_val.json").unlink()

    with pytest.raises(InvalidDataset, match="instances_val.json is missing"):
        load_coco_split(coco_root, "val")
