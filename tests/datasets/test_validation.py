"""Checking a COCO dataset (``ssdstack.datasets.validation``): errors refuse it, warnings do not."""
from __future__ import annotations

import shutil

import pytest

from ssdstack.datasets.validation import validate_coco_dataset
from ssdstack.errors import InvalidDataset


def problems_of(root, **kwargs) -> list[str]:
    with pytest.raises(InvalidDataset) as caught:
        validate_coco_dataset(root, **kwargs)
    return caught.value.details


# --- validate_coco_dataset -----------------------------------------------------------


def test_validate_summarises_a_valid_dataset(tmp_path, make_coco):
    root = make_coco(tmp_path / "ds", category_ids=(7, 3), images_per_split=3)

    summary = validate_coco_dataset(root)

    assert summary.images == {"train": 3, "val": 3}
    assert summary.annotations == {"train": 6, "val": 6}
    assert summary.label_names == ("class3", "class7")


def test_validate_accepts_box_within_one_pixel_of_the_border(coco_root, edit_annotations):
    with edit_annotations(coco_root, "train") as doc:
        doc["annotations"][0]["bbox"] = [-0.5, 0, 64.5, 48.9]

    validate_coco_dataset(coco_root)


def test_validate_missing_image(coco_root):
    (coco_root / "train" / "train_2.jpg").unlink()

    assert problems_of(coco_root) == ["train: image 2 (train_2.jpg): file is missing"]


def test_validate_unreadable_image(coco_root):
    (coco_root / "val" / "val_1.jpg").write_bytes(b"not an image at all")

    [problem] = problems_of(coco_root)
    assert problem.startswith("val: image 1 (val_1.jpg): cannot be decoded")


def test_validate_truncated_jpeg(coco_root):
    path = coco_root / "train" / "train_1.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    [problem] = problems_of(coco_root)
    assert problem.startswith("train: image 1 (train_1.jpg): cannot be decoded")
    assert "truncated" in problem


def test_validate_image_size_differs_from_json(coco_root, edit_annotations):
    with edit_annotations(coco_root, "val") as doc:
        doc["images"][1]["width"] = 640

    assert problems_of(coco_root) == ["val: image 2 (val_2.jpg): is 64x48 but the json says 640x48"]


def test_validate_image_over_pixel_limit(coco_root):
    problems = problems_of(coco_root, max_pixels=1000)

    assert len(problems) == 4
    assert problems[0] == "train: image 1 (train_1.jpg): has 3072 pixels, more than the limit of 1000"


def test_validate_box_outside_image(coco_root, edit_annotations):
    with edit_annotations(coco_root, "train") as doc:
        doc["annotations"][2]["bbox"] = [60, 40, 10, 10]

    assert problems_of(coco_root) == [
        "train: annotation 3: bbox [60, 40, 10, 10] extends outside image 2 (64x48)"
    ]


@pytest.mark.parametrize(
    ("bbox", "expected"),
    [
        ([1, 2, 3], "must be 4 finite numbers"),
        ([1, 2, float("nan"), 3], "must be 4 finite numbers"),
        ([1, 2, "3", 4], "must be 4 finite numbers"),
        ([1, 2, 0, 4], "zero or negative"),
        ([1, 2, 3, -4], "zero or negative"),
    ],
)
def test_validate_malformed_bbox(coco_root, edit_annotations, bbox, expected):
    with edit_annotations(coco_root, "val") as doc:
        doc["annotations"][0]["bbox"] = bbox

    [problem] = problems_of(coco_root)
    assert problem.startswith("val: annotation 1: bbox")
    assert expected in problem


def test_validate_unknown_category_and_image(coco_root, edit_annotations):
    with edit_annotations(coco_root, "train") as doc:
        doc["annotations"][0]["category_id"] = 99
        doc["annotations"][1]["image_id"] = 42

    assert problems_of(coco_root) == [
        "train: annotation 1: refers to unknown category 99",
        "train: annotation 2: refers to unknown image 42",
    ]


def test_validate_empty_train_split(coco_root, edit_annotations):
    with edit_annotations(coco_root, "train") as doc:
        doc["annotations"] = []

    assert problems_of(coco_root) == [
        "train: has no annotations; training needs at least one box"
    ]


def test_validate_split_without_images(coco_root, edit_annotations):
    with edit_annotations(coco_root, "val") as doc:
        doc["images"], doc["annotations"] = [], []

    assert problems_of(coco_root) == ["val: has no images"]


def test_validate_missing_and_malformed_annotation_files(coco_root):
    (coco_root / "annotations" / "instances_train.json").write_text("{not json")
    (coco_root / "annotations" / "instances_val.json").unlink()

    problems = problems_of(coco_root)

    assert problems[0].startswith("train: annotations/instances_train.json cannot be read as JSON")
    assert problems[1] == "val: annotations/instances_val.json is missing"


def test_validate_json_without_required_lists(coco_root):
    (coco_root / "annotations" / "instances_val.json").write_text('{"images": []}')

    assert problems_of(coco_root) == [
        "val: annotations/instances_val.json lacks the list(s) annotations, categories"
    ]


def test_validate_categories_must_match_between_splits(coco_root, edit_annotations):
    with edit_annotations(coco_root, "val") as doc:
        doc["categories"][1]["name"] = "renamed"

    assert problems_of(coco_root) == ["val: categories [2] differ from train's"]


@pytest.mark.parametrize("file_name", ["../escape.jpg", "/etc/passwd", "C:/x.jpg", "a\\b.jpg"])
def test_validate_rejects_unsafe_file_names(coco_root, edit_annotations, file_name):
    with edit_annotations(coco_root, "train") as doc:
        doc["images"][0]["file_name"] = file_name

    [problem] = problems_of(coco_root)
    assert problem.startswith(f"train: image 1: file_name {file_name!r}")


def test_validate_collects_every_problem_and_caps_details(coco_root, edit_annotations):
    (coco_root / "train" / "train_1.jpg").unlink()
    with edit_annotations(coco_root, "val") as doc:
        for ann in doc["annotations"]:
            ann["category_id"] = 99

    with pytest.raises(InvalidDataset) as caught:
        validate_coco_dataset(coco_root, max_problems=3)

    assert caught.value.message == "dataset has 5 errors"
    assert caught.value.details[0] == "train: image 1 (train_1.jpg): file is missing"
    assert len(caught.value.details) == 3


def test_validate_reports_every_kind_of_error_in_one_pass(tmp_path, make_coco, edit_annotations):
    root = make_coco(tmp_path / "ds", images_per_split=3)
    # Annotation ids: image i has 2i - 1 (category 1) and 2i (category 2).
    (root / "train" / "train_2.jpg").unlink()
    (root / "val" / "val_1.jpg").write_bytes(b"not an image at all")
    shutil.copyfile(root / "train" / "train_1.jpg", root / "val" / "val_3.jpg")
    with edit_annotations(root, "train") as doc:
        doc["images"][2]["file_name"] = "train_1.jpg"
        doc["annotations"][0]["bbox"] = [60, 40, 10, 10]
        doc["annotations"][1]["bbox"] = [14, 5, 0, 6]
        doc["annotations"][2]["category_id"] = 99
        doc["annotations"][3]["image_id"] = 42
        doc["annotations"][5]["id"] = 5
    with edit_annotations(root, "val") as doc:
        doc["annotations"] = []

    with pytest.raises(InvalidDataset) as caught:
        validate_coco_dataset(root, max_problems=100)

    details = caught.value.details
    assert caught.value.message == "dataset has 10 errors"
    assert details[7].startswith("val: image 1 (val_1.jpg): cannot be decoded")
    assert details[:7] + details[8:] == [
        "train: image 2 (train_2.jpg): file is missing",
        "train: image 3 (train_1.jpg): file_name is also used by image 1",
        "train: annotation 1: bbox [60, 40, 10, 10] extends outside image 1 (64x48)",
        "train: annotation 2: bbox [14, 5, 0, 6] has zero or negative width or height",
        "train: annotation 3: refers to unknown category 99",
        "train: annotation 4: refers to unknown image 42",
        "train: annotation 5: duplicate id",
        "val: has no annotations; mAP needs at least one box",
        "val: image 3 (val_3.jpg): same file as train image 1 (train_1.jpg); "
        "an image in both splits makes the val mAP over-optimistic",
    ]


def test_validate_details_hold_the_first_n_errors(tmp_path, make_coco):
    root = make_coco(tmp_path / "ds", images_per_split=15)
    for split in ("train", "val"):
        for path in (root / split).iterdir():
            path.unlink()

    with pytest.raises(InvalidDataset) as caught:
        validate_coco_dataset(root)

    assert caught.value.message == "dataset has 30 errors"
    assert len(caught.value.details) == 20
    assert caught.value.details[-1] == "val: image 5 (val_5.jpg): file is missing"


def test_validate_same_file_in_both_splits_is_an_error_whatever_its_name(coco_root):
    shutil.copyfile(coco_root / "train" / "train_2.jpg", coco_root / "val" / "val_1.jpg")

    assert problems_of(coco_root) == [
        "val: image 1 (val_1.jpg): same file as train image 2 (train_2.jpg); "
        "an image in both splits makes the val mAP over-optimistic"
    ]


def test_validate_same_name_in_both_splits_is_fine_when_the_files_differ(coco_root, edit_annotations):
    (coco_root / "val" / "val_1.jpg").rename(coco_root / "val" / "train_1.jpg")
    with edit_annotations(coco_root, "val") as doc:
        doc["images"][0]["file_name"] = "train_1.jpg"

    assert validate_coco_dataset(coco_root).warning_count == 0


def test_validate_split_with_only_crowd_annotations(coco_root, edit_annotations):
    with edit_annotations(coco_root, "train") as doc:
        for ann in doc["annotations"]:
            ann["iscrowd"] = 1

    assert problems_of(coco_root) == ["train: has only crowd annotations; training needs at least one box"]


def test_validate_warnings_are_returned_and_do_not_raise(tmp_path, make_coco, edit_annotations):
    root = make_coco(tmp_path / "ds", category_ids=(1, 2, 3), images_per_split=3)
    # Annotation ids: image i has 3i - 2, 3i - 1 and 3i for categories 1, 2 and 3.
    shutil.copyfile(root / "val" / "val_1.jpg", root / "val" / "val_2.jpg")
    with edit_annotations(root, "train") as doc:
        doc["annotations"][0]["bbox"] = [4, 5, 3, 6]
        doc["annotations"] = [ann for ann in doc["annotations"]
                              if ann["category_id"] != 3 and ann["image_id"] != 2]
        for ann in doc["annotations"]:
            ann["iscrowd"] = int(ann["image_id"] == 3)

    summary = validate_coco_dataset(root)

    assert summary.warnings == (
        "train: annotation 1: bbox [4, 5, 3, 6] on image 1 is under 4 px on a side; "
        "no prior matches a box this small",
        "train: image 2 (train_2.jpg): has no boxes; training leaves it out",
        "train: image 3 (train_3.jpg): has only crowd boxes; training leaves it out",
        "train: category 3 ('class3') has no box; the model cannot learn it",
        "val: image 2 (val_2.jpg): same file as image 1 (val_1.jpg); it counts twice in mAP",
    )
    assert summary.warning_count == 5
    assert summary.images == {"train": 3, "val": 3}


def test_validate_keeps_the_first_n_warnings_and_counts_all(tmp_path, make_coco, edit_annotations):
    root = make_coco(tmp_path / "ds", images_per_split=4)
    with edit_annotations(root, "val") as doc:
        for ann in doc["annotations"]:
            ann["bbox"] = [4, 5, 2, 2]

    summary = validate_coco_dataset(root, max_problems=3)

    assert summary.warning_count == 8
    assert summary.warnings == tuple(
        f"val: annotation {i}: bbox [4, 5, 2, 2] on image {(i + 1) // 2} is under 4 px on a side; "
        "no prior matches a box this small" for i in (1, 2, 3)
    )


def test_validate_valid_dataset_has_no_warnings(coco_root):
    summary = validate_coco_dataset(coco_root)

    assert (summary.warnings, summary.warning_count) == ((), 0)
