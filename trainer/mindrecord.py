"""A stored dataset's split as MindRecord, cached in the store and keyed by content hash.

The zoo's SSD trains from MindRecord; here it is a cache that :class:`TrainBatches`
reads through :class:`MindRecordSource`. One row per image, in the split's order:

    image     bytes            the image file as stored; decoded at training time
    image_id  int64            COCO image id
    boxes     float32 [K, 4]   pixels (x1, y1, x2, y2), as ``CocoSplit`` records hold them
    labels    int32 [K]        1..num_classes, as ``CocoSplit`` assigns them
    width     int32            pixels
    height    int32            pixels

Layout under the store::

    cache/mindrecord/<sha256[:16]>-<split>-v<SCHEMA_VERSION>/
        <split>.mindrecord  <split>.mindrecord.db  cache.json
    cache/mindrecord/<key>.lock           flock'd while <key> is built
    cache/mindrecord/.build-<key>-<hex>/  a build in progress, renamed to <key> when whole

The key is the dataset's ``sha256`` (of its uploaded archive): a stored dataset never
changes, so its cache stays valid until the schema version changes.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import mindspore.dataset as ds
import numpy as np
from mindspore.mindrecord import FileReader, FileWriter

from ssdstack.datasets.coco import SPLITS, CocoSplit, ImageRecord, load_coco_split
from ssdstack.datasets.store import DatasetStore
from ssdstack.errors import InvalidDataset, InvalidInput

SCHEMA_VERSION = 1
SCHEMA = {
    "image": {"type": "bytes"},
    "image_id": {"type": "int64"},
    "boxes": {"type": "float32", "shape": [-1, 4]},
    "labels": {"type": "int32", "shape": [-1]},
    "width": {"type": "int32"},
    "height": {"type": "int32"},
}
CACHE_DIR = Path("cache") / "mindrecord"
MARKER = "cache.json"
ROWS_PER_WRITE = 64  # image bytes held in memory at once while writing
# A row must fit in one page. Pages are sparse on disk, so a large one costs nothing.
MIN_PAGE_BYTES, MAX_PAGE_BYTES = 32 << 20, 256 << 20


class CachedMindRecord(NamedTuple):
    file: Path  # the .mindrecord file, for MindRecordSource or mindspore.dataset.MindDataset
    reused: bool  # False when this call wrote it


def mindrecord_for(store_dir: Path, dataset_name: str, split: str) -> CachedMindRecord:
    """Split ``split`` of stored dataset ``dataset_name`` as MindRecord, written on first use.

    A complete cache is reused as it is. Otherwise it is built under a lock on
    ``<key>.lock``, so that concurrent jobs build it once (the others wait, then reuse
    it), in a scratch folder renamed into place when complete, so that no reader ever
    sees half of one. Raises NotFound for an unknown dataset, InvalidInput for an unknown
    split, InvalidDataset if the split cannot be loaded or has no images.
    """
    if split not in SPLITS:
        raise InvalidInput(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    datasets = DatasetStore(store_dir)
    sha256 = datasets.get(dataset_name)["sha256"]
    key = f"{sha256[:16]}-{split}-v{SCHEMA_VERSION}"
    cache_dir = Path(store_dir) / CACHE_DIR
    folder = cache_dir / key
    file = folder / f"{split}.mindrecord"
    if _complete(folder, file):
        return CachedMindRecord(file, reused=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache_dir / f"{key}.lock"):
        if _complete(folder, file):  # built by the job we waited for
            return CachedMindRecord(file, reused=True)
        # Left by builders that died while holding the lock (the lock died with them).
        for stale in cache_dir.glob(f".build-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if folder.exists():  # renames leave no partial cache; this one was damaged by hand
            shutil.rmtree(folder)
        build = cache_dir / f".build-{key}-{uuid.uuid4().hex}"
        build.mkdir()
        try:
            started = time.monotonic()
            coco = load_coco_split(datasets.path(dataset_name), split)
            write_mindrecord(coco, build / file.name)
            marker = {
                "dataset": dataset_name, "dataset_sha256": sha256, "split": split,
                "schema_version": SCHEMA_VERSION, "images": len(coco.records),
                "boxes": int(sum(r.boxes.shape[0] for r in coco.records)),
                "seconds": round(time.monotonic() - started, 3),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            (build / MARKER).write_text(json.dumps(marker, indent=2))
            for written in build.iterdir():
                _fsync(written)  # the rename must not reach the disk before the data
            try:
                os.rename(build, folder)
            except OSError as exc:
                # Only where the lock does not hold (some network filesystems): another
                # host renamed its copy first, and that one is as good as ours.
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not _complete(folder, file):
                    raise
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return CachedMindRecord(file, reused=False)


def write_mindrecord(split: CocoSplit, file: Path) -> int:
    """Write ``split`` as a MindRecord ``file`` (plus ``file.db``) with :data:`SCHEMA`;
    returns the number of rows. ``file`` must not exist."""
    if not split.records:
        raise InvalidDataset(f"split {split.split!r} has no images")
    largest = max(split.records, key=lambda record: Path(record.path).stat().st_size)
    row_bytes = Path(largest.path).stat().st_size + (1 << 20)  # the boxes and labels fit in the margin
    if row_bytes > MAX_PAGE_BYTES:
        raise InvalidDataset(f"{split.split}: image {largest.image_id} ({largest.path.name}) is too large for "
                             f"MindRecord, whose rows hold at most {MAX_PAGE_BYTES >> 20} MB")
    writer = FileWriter(str(file), shard_num=1, overwrite=False)
    writer.set_page_size(max(MIN_PAGE_BYTES, 1 << (row_bytes - 1).bit_length()))
    writer.add_schema(SCHEMA, f"ssdstack coco {split.split} v{SCHEMA_VERSION}")
    rows = []
    for record in split.records:
        rows.append({
            "image": Path(record.path).read_bytes(),
            "image_id": int(record.image_id),
            "boxes": np.ascontiguousarray(record.boxes, dtype=np.float32).reshape(-1, 4),
            "labels": np.ascontiguousarray(record.labels, dtype=np.int32).reshape(-1),
            "width": int(record.width),
            "height": int(record.height),
        })
        if len(rows) == ROWS_PER_WRITE:
            writer.write_raw_data(rows)
            rows = []
    if rows:
        writer.write_raw_data(rows)
    writer.commit()
    for written in (file, file.with_name(file.name + ".db")):
        os.chmod(written, 0o644)  # FileWriter makes them 0600: other services' users read the store too
    return len(split.records)


class MindRecordSource:
    """A ``trainer.data.SampleSource`` over a file written by :func:`write_mindrecord`.

    Records are read once, without image bytes; ``path`` of each is the MindRecord file.
    Images are read per epoch through ``mindspore.dataset.MindDataset`` in the order asked.
    """

    def __init__(self, file: Path, num_parallel_workers: int = 2):
        self.file = Path(file)
        self.name = self.file.stem
        self.num_parallel_workers = num_parallel_workers
        reader = FileReader(str(self.file), num_consumer=1,
                            columns=["image_id", "boxes", "labels", "width", "height"])
        try:
            self.records = tuple(
                ImageRecord(
                    image_id=int(row["image_id"]),
                    path=self.file,
                    width=int(row["width"]),
                    height=int(row["height"]),
                    boxes=np.asarray(row["boxes"], dtype=np.float32).reshape(-1, 4),
                    labels=np.asarray(row["labels"], dtype=np.int64).reshape(-1),
                )
                for row in reader.get_next()
            )
        finally:
            reader.close()

    def read_images(self, indices: Sequence[int]) -> Generator[bytes, None, None]:
        """The stored image file bytes of ``records[i]`` for each ``i`` in ``indices``."""
        indices = [int(i) for i in indices]
        if not indices:
            return
        dataset = ds.MindDataset(str(self.file), columns_list=["image", "image_id"],
                                 sampler=ds.SubsetSampler(indices),
                                 num_parallel_workers=self.num_parallel_workers)
        iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
        try:
            for index, (image, image_id) in zip(indices, iterator):
                if int(image_id) != self.records[index].image_id:
                    raise RuntimeError(f"{self.file}: row {index} holds image {int(image_id)}, "
                                       f"expected {self.records[index].image_id}")
                # A bytes column arrives as a length-1 array of fixed-width bytes, whose
                # item would drop trailing NULs; its buffer is the value exactly.
                yield image.tobytes()
        finally:
            iterator.stop()


def _complete(folder: Path, file: Path) -> bool:
    return (folder / MARKER).is_file() and file.is_file() and file.with_name(file.name + ".db").is_file()


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_file``; released at exit, or by the kernel if the
    process dies. flock (not lockf) also excludes other threads of this process."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
