from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from ssdstack.datasets import store as store_module
from ssdstack.datasets import convert as convert_module
from ssdstack.datasets.validation import validate_coco_dataset
from ssdstack.datasets.store import DatasetStore, UploadLimits
from ssdstack.datasets.synth import synthesize
from ssdstack.errors import (
    Conflict,
    InvalidArchive,
    InvalidDataset,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
)

LIMITS = UploadLimits(max_bytes=10 << 20, max_members=100, max_unpacked_bytes=10 << 20,
                      max_pixels=1_000_000)


def zip_folder(folder: Path, prefix: str = "") -> bytes:
    """A zip of ``folder``'s files, each name starting with ``prefix``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, prefix + path.relative_to(folder).as_posix())
    return buffer.getvalue()


def tgz_folder(folder: Path, arcname: str = ".") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buffer.getvalue()


def assert_nothing_left(store_dir: Path) -> None:
    for sub in ("datasets", ".tmp"):
        folder = store_dir / sub
        assert not folder.exists() or list(folder.iterdir()) == []


class CountingReader(io.BytesIO):
    """An upload stream that records how many bytes were taken from it."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.taken = 0

    def read(self, size: int = -1) -> bytes:
        chunk = super().read(size)
        self.taken += len(chunk)
        return chunk


# --- ingest ---------------------------------------------------------------------------


def test_ingest_zip_stores_dataset_and_describes_it(tmp_path, coco_root):
    store = DatasetStore(tmp_path / "store")
    payload = zip_folder(coco_root)

    info = store.ingest_archive(io.BytesIO(payload), "pets", LIMITS)

    assert info["name"] == "pets"
    assert info["format"] == "coco"
    assert info["source_format"] == "coco"
    assert info["sha256"] == hashlib.sha256(payload).hexdigest()
    assert info["size_bytes"] == len(payload)
    assert info["created_at"].endswith("+00:00")
    assert info["splits"] == {"train": {"images": 2, "annotations": 4},
                              "val": {"images": 2, "annotations": 4}}
    assert info["label_names"] == ["class1", "class2"]
    folder = store.path("pets")
    assert folder == tmp_path / "store" / "datasets" / "pets"
    assert json.loads((folder / "dataset.json").read_text()) == info
    assert (folder / "train" / "train_1.jpg").is_file()
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []


def test_ingest_stores_a_dataset_with_warnings_and_lists_them(tmp_path, coco_root, edit_annotations):
    with edit_annotations(coco_root, "val") as doc:
        doc["annotations"][0]["bbox"] = [4, 5, 2, 6]
    store = DatasetStore(tmp_path / "store")

    info = store.ingest_archive(io.BytesIO(zip_folder(coco_root)), "pets", LIMITS)

    assert info["warnings"] == {"count": 1, "first": [
        "val: annotation 1: bbox [4, 5, 2, 6] on image 1 is under 4 px on a side; no prior matches a box this small"]}
    assert store.get("pets")["warnings"] == info["warnings"]


@pytest.mark.parametrize("pack", [lambda root: tgz_folder(root, "my-data"),
                                  lambda root: zip_folder(root, "my-data/")])
def test_ingest_archive_of_a_single_top_folder(tmp_path, coco_root, pack):
    store = DatasetStore(tmp_path / "store")

    store.ingest_archive(io.BytesIO(pack(coco_root)), "pets", LIMITS)

    folder = store.path("pets")
    assert (folder / "annotations" / "instances_train.json").is_file()
    assert not (folder / "my-data").exists()


def test_ingest_flat_tar_gz(tmp_path, coco_root):
    store = DatasetStore(tmp_path / "store")

    info = store.ingest_archive(io.BytesIO(tgz_folder(coco_root)), "pets", LIMITS)

    assert info["splits"]["val"]["images"] == 2


@pytest.mark.parametrize(("fmt", "prefix"), [("voc", ""), ("text", "my-data/")])
def test_ingest_voc_and_text_archives_stores_them_as_coco(tmp_path, fmt, prefix):
    source = synthesize(tmp_path / fmt, images=4, classes=2, seed=0, min_side=64, max_side=96, format=fmt)
    store = DatasetStore(tmp_path / "store")

    info = store.ingest_archive(io.BytesIO(zip_folder(source.out_dir, prefix)), "shapes", LIMITS)

    assert (info["format"], info["source_format"]) == ("coco", fmt)
    assert info["splits"] == {"train": {"images": 3, "annotations": source.train_annotations},
                              "val": {"images": 1, "annotations": source.val_annotations}}
    assert info["label_names"] == ["red_circle", "green_square"]
    folder = store.path("shapes")
    assert sorted(p.name for p in folder.iterdir()) == ["annotations", "dataset.json", "train", "val"]
    assert validate_coco_dataset(folder).images == {"train": 3, "val": 1}
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []


def test_a_dataset_in_another_format_than_the_one_named_is_refused(tmp_path):
    source = synthesize(tmp_path / "voc", images=4, classes=2, seed=0, min_side=64, max_side=96, format="voc")
    store = DatasetStore(tmp_path / "store")

    with pytest.raises(InvalidDataset, match="holds a voc dataset, not text") as caught:
        store.ingest_archive(io.BytesIO(zip_folder(source.out_dir)), "shapes", LIMITS, expected_format="text")

    assert "Annotations" in caught.value.details[0]
    assert_nothing_left(tmp_path / "store")
    assert store.ingest_archive(io.BytesIO(zip_folder(source.out_dir)), "shapes", LIMITS,
                                expected_format="voc")["source_format"] == "voc"


def test_upload_over_max_bytes_stops_reading_and_leaves_nothing(tmp_path):
    store = DatasetStore(tmp_path / "store")
    source = CountingReader(bytes(5 << 20))
    limits = UploadLimits(max_bytes=2 << 20, max_members=100, max_unpacked_bytes=10 << 20,
                          max_pixels=1_000_000)

    with pytest.raises(PayloadTooLarge):
        store.ingest_archive(source, "big", limits)

    assert source.taken <= (2 << 20) + store_module.CHUNK_BYTES
    assert_nothing_left(tmp_path / "store")


def test_invalid_archive_leaves_nothing(tmp_path):
    store = DatasetStore(tmp_path / "store")

    with pytest.raises(InvalidArchive):
        store.ingest_archive(io.BytesIO(b"definitely not an archive"), "junk", LIMITS)

    assert_nothing_left(tmp_path / "store")


def test_invalid_dataset_reports_every_problem_and_leaves_nothing(tmp_path, coco_root,
                                                                  edit_annotations):
    (coco_root / "val" / "val_2.jpg").unlink()
    with edit_annotations(coco_root, "train") as doc:
        doc["annotations"][0]["category_id"] = 99
    store = DatasetStore(tmp_path / "store")

    with pytest.raises(InvalidDataset) as caught:
        store.ingest_archive(io.BytesIO(zip_folder(coco_root)), "broken", LIMITS)

    assert caught.value.details == [
        "train: annotation 1: refers to unknown category 99",
        "val: image 2 (val_2.jpg): file is missing",
    ]
    assert_nothing_left(tmp_path / "store")


@pytest.mark.parametrize("name", ["", "Pets", "-pets", ".hidden", "a/b", "../x", "x" * 64])
def test_invalid_names_are_refused(tmp_path, coco_root, name):
    store = DatasetStore(tmp_path / "store")

    with pytest.raises(InvalidInput, match="invalid dataset name"):
        store.ingest_archive(io.BytesIO(zip_folder(coco_root)), name, LIMITS)


def test_existing_name_is_a_conflict(tmp_path, coco_root):
    store = DatasetStore(tmp_path / "store")
    payload = zip_folder(coco_root)
    first = store.ingest_archive(io.BytesIO(payload), "pets", LIMITS)

    with pytest.raises(Conflict):
        store.ingest_archive(io.BytesIO(payload), "pets", LIMITS)

    assert store.get("pets") == dict(first, state="ready")


def test_upload_that_loses_the_race_is_a_conflict(tmp_path, coco_root, monkeypatch):
    store = DatasetStore(tmp_path / "store")
    winner = tmp_path / "store" / "datasets" / "pets"
    validate = convert_module.validate_coco_dataset

    def validate_while_another_upload_finishes(root, **kwargs):
        winner.mkdir(parents=True)
        (winner / "dataset.json").write_text('{"name": "pets", "winner": true}')
        return validate(root, **kwargs)

    monkeypatch.setattr(convert_module, "validate_coco_dataset", validate_while_another_upload_finishes)

    with pytest.raises(Conflict):
        store.ingest_archive(io.BytesIO(zip_folder(coco_root)), "pets", LIMITS)

    assert store.get("pets") == {"name": "pets", "winner": True, "state": "ready"}
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []


# --- list / get / path ----------------------------------------------------------------


def test_list_is_sorted_and_skips_folders_without_dataset_json(tmp_path, coco_root):
    store = DatasetStore(tmp_path / "store")
    assert store.list() == []
    payload = zip_folder(coco_root)
    store.ingest_archive(io.BytesIO(payload), "zebra", LIMITS)
    store.ingest_archive(io.BytesIO(payload), "ants", LIMITS)
    (tmp_path / "store" / "datasets" / "half-copied").mkdir()

    assert [info["name"] for info in store.list()] == ["ants", "zebra"]
    assert store.get("ants")["name"] == "ants"


@pytest.mark.parametrize("name", ["missing", "half-copied", "../datasets", ""])
def test_get_and_path_of_absent_dataset_are_not_found(tmp_path, name):
    store = DatasetStore(tmp_path / "store")
    (tmp_path / "store" / "datasets" / "half-copied").mkdir(parents=True)

    with pytest.raises(NotFound):
        store.get(name)
    with pytest.raises(NotFound):
        store.path(name)
