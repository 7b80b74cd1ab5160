"""MindRecord conversion, its cache in the store, and training batches read from it."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import needs
import pytest

needs.module("mindspore")

from mindspore.mindrecord import FileReader  # noqa: E402

from ssdstack.datasets.coco import CocoSplit, ImageRecord, load_coco_split  # noqa: E402
from ssdstack.datasets.store import DatasetStore  # noqa: E402
from ssdstack.datasets.synth import synthesize  # noqa: E402
from trainer import mindrecord  # noqa: E402
from trainer.data import TrainBatches  # noqa: E402
from trainer.mindrecord import MindRecordSource, mindrecord_for  # noqa: E402
from ssdstack.recipes import get_recipe  # noqa: E402

@pytest.fixture(scope="module")
def stored(tmp_path_factory, store_dataset) -> tuple[Path, Path]:
    """(store dir, dataset folder) of a 12-image synthetic dataset stored as ``shapes``."""
    base = tmp_path_factory.mktemp("mindrecord")
    synthesize(base / "source", images=12, classes=3, seed=2, min_side=64, max_side=120)
    return base / "store", store_dataset(base / "store", base / "source", "shapes")


@pytest.fixture
def counted_writes(monkeypatch) -> list[str]:
    """The split names write_mindrecord is called for, from here on."""
    calls: list[str] = []
    write = mindrecord.write_mindrecord

    def counting(split, file):
        calls.append(split.split)
        return write(split, file)

    monkeypatch.setattr(mindrecord, "write_mindrecord", counting)
    return calls


def test_conversion_holds_the_split_records_and_image_bytes(stored):
    store_dir, folder = stored
    split = load_coco_split(folder, "train")

    cache = mindrecord_for(store_dir, "shapes", "train")

    reader = FileReader(str(cache.file), num_consumer=1)
    rows = list(reader.get_next())
    reader.close()
    assert len(rows) == len(split.records) == 10
    for row, record in zip(rows, split.records):
        assert row["image"] == record.path.read_bytes()
        assert (row["image_id"], row["width"], row["height"]) == (record.image_id, record.width, record.height)
        assert row["boxes"].dtype == np.float32 and row["labels"].dtype == np.int32
        np.testing.assert_array_equal(row["boxes"].reshape(-1, 4), record.boxes)
        np.testing.assert_array_equal(row["labels"], record.labels)
    source = MindRecordSource(cache.file)
    assert [r.image_id for r in source.records] == [r.image_id for r in split.records]
    assert list(source.read_images([3, 0, 3])) == [split.records[i].path.read_bytes() for i in (3, 0, 3)]


def test_cache_is_keyed_by_hash_and_split_and_reused(stored, counted_writes):
    store_dir, _ = stored
    sha256 = DatasetStore(store_dir).get("shapes")["sha256"]

    first = mindrecord_for(store_dir, "shapes", "val")
    mtime = first.file.stat().st_mtime_ns
    second = mindrecord_for(store_dir, "shapes", "val")

    assert first.file == store_dir / "cache" / "mindrecord" / f"{sha256[:16]}-val-v1" / "val.mindrecord"
    assert (first.reused, second.reused) == (False, True)
    assert second.file == first.file and second.file.stat().st_mtime_ns == mtime
    assert counted_writes == ["val"]
    marker = json.loads((first.file.parent / "cache.json").read_text())
    assert (marker["dataset_sha256"], marker["split"], marker["images"]) == (sha256, "val", 2)
    assert sorted(p.name for p in first.file.parent.parent.iterdir() if p.name.startswith(".")) == []


def test_changed_dataset_hash_builds_a_new_cache(tmp_path, counted_writes, store_dataset):
    synthesize(tmp_path / "source", images=4, classes=2, seed=0, min_side=64, max_side=64)
    folder = store_dataset(tmp_path / "store", tmp_path / "source", "small")
    old = mindrecord_for(tmp_path / "store", "small", "train")
    info = json.loads((folder / "dataset.json").read_text())
    info["sha256"] = "f" * 64
    (folder / "dataset.json").write_text(json.dumps(info))

    new = mindrecord_for(tmp_path / "store", "small", "train")

    assert not new.reused and new.file != old.file and new.file.parent.name == "ffffffffffffffff-train-v1"
    assert old.file.is_file()
    assert counted_writes == ["train", "train"]


def test_incomplete_cache_and_crashed_build_are_replaced(tmp_path, counted_writes, store_dataset):
    synthesize(tmp_path / "source", images=4, classes=2, seed=0, min_side=64, max_side=64)
    store_dataset(tmp_path / "store", tmp_path / "source", "small")
    built = mindrecord_for(tmp_path / "store", "small", "train")
    (built.file.parent / "cache.json").unlink()
    crashed = built.file.parent.parent / f".build-{built.file.parent.name}-dead"
    crashed.mkdir()

    again = mindrecord_for(tmp_path / "store", "small", "train")

    assert not again.reused and again.file == built.file and (built.file.parent / "cache.json").is_file()
    assert not crashed.exists()
    assert counted_writes == ["train", "train"]


def test_concurrent_requests_build_once(tmp_path, counted_writes, store_dataset):
    synthesize(tmp_path / "source", images=6, classes=2, seed=1, min_side=64, max_side=64)
    store_dataset(tmp_path / "store", tmp_path / "source", "small")
    results = []

    def request() -> None:
        results.append(mindrecord_for(tmp_path / "store", "small", "train"))

    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert counted_writes == ["train"]
    assert sorted(r.reused for r in results) == [False, True, True, True]
    assert len({r.file for r in results}) == 1


def test_mindrecord_batches_equal_jpeg_batches(stored):
    store_dir, folder = stored
    split = load_coco_split(folder, "train")
    recipe = get_recipe("ssd_lite_mobilenet_v2")
    cache = mindrecord_for(store_dir, "shapes", "train")
    from_jpeg = TrainBatches(split, recipe, batch_size=3, seed=7)
    from_mindrecord = TrainBatches(MindRecordSource(cache.file), recipe, batch_size=3, seed=7)

    assert from_mindrecord.steps_per_epoch == from_jpeg.steps_per_epoch == 3
    for epoch, start_step in ((0, 0), (1, 1)):
        jpeg_batches = list(from_jpeg.epoch(epoch, start_step))
        mindrecord_batches = list(from_mindrecord.epoch(epoch, start_step))
        assert len(jpeg_batches) == len(mindrecord_batches) == 3 - start_step
        for want, got in zip(jpeg_batches, mindrecord_batches):
            for field in ("images", "loc", "labels", "num_positives"):
                np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


def test_stopping_an_epoch_early_releases_the_reader(stored):
    store_dir, _ = stored
    cache = mindrecord_for(store_dir, "shapes", "train")
    batches = TrainBatches(MindRecordSource(cache.file), get_recipe("ssd_lite_mobilenet_v2"), batch_size=2, seed=0)

    epoch = batches.epoch(0)
    first = next(epoch)
    epoch.close()

    assert first.images.shape == (2, 3, 160, 160)
    assert next(batches.epoch(0)).images.shape == (2, 3, 160, 160)


def test_rows_larger_than_the_default_page_are_written(tmp_path):
    # The writer does not decode: any bytes stand in for an image over MindRecord's 32 MB pages.
    big, small = tmp_path / "big.jpg", tmp_path / "small.jpg"
    big.write_bytes(np.random.default_rng(0).bytes(33 << 20))
    small.write_bytes(b"\xff\xd8 ends with NULs \x00\x00")
    records = tuple(ImageRecord(image_id, path, 10, 10, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
                    for image_id, path in enumerate([small, big]))
    split = CocoSplit(tmp_path, "train", tmp_path / "instances_train.json", (1,), ("a",), records)

    assert mindrecord.write_mindrecord(split, tmp_path / "train.mindrecord") == 2

    source = MindRecordSource(tmp_path / "train.mindrecord")
    assert list(source.read_images([1, 0])) == [big.read_bytes(), small.read_bytes()]
    assert source.records[1].boxes.shape == (0, 4)
