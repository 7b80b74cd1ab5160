"""Training and evaluation batches from a COCO split.

Every sample goes: decode -> (train: IoU crop, flip, colour jitter) -> resize ->
normalise -> CHW, with SSD targets encoded against the recipe's priors. Batches are
built by a background thread, so decoding overlaps the MindSpore step.

Training reads its images through a :class:`SampleSource`: the split's own JPEG files
(:class:`ImageFiles`), or the split converted to MindRecord
(``trainer.mindrecord.MindRecordSource``). Both hand over the original file bytes, which
are decoded here, so both give identical batches.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ssdstack.datasets.coco import CocoSplit, ImageRecord
from ssdstack.detection.matching import encode_targets
from ssdstack.detection.priors import prior_boxes
from ssdstack.images import decode_image, resize_stretch
from ssdstack.recipes import Recipe
from trainer.augment import colour_jitter, random_crop, random_flip

SAMPLE_THREADS = 3


def load_rgb(path: Path) -> np.ndarray:
    """A dataset image as ``[H, W, 3]`` uint8 RGB in its stored frame (the annotations' frame),
    decoded exactly as the served evaluation decodes it."""
    return decode_rgb(Path(path).read_bytes())


def decode_rgb(data: bytes) -> np.ndarray:
    """:func:`load_rgb` for the bytes of a dataset image file."""
    return decode_image(data, exif_transpose=False)


def normalise(image: np.ndarray, mean, std) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB -> ``[3, H, W]`` float32 ``(x - mean) / std``."""
    out = (image.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


@dataclass
class Batch:
    images: np.ndarray         # [N, 3, S, S] float32
    loc: np.ndarray            # [N, P, 4] float32
    labels: np.ndarray         # [N, P] int32
    num_positives: np.ndarray  # [N] int32


class SampleSource(Protocol):
    """A split's records and the bytes of their image files, for :class:`TrainBatches`."""

    @property
    def name(self) -> str:
        """The split's name, for messages."""

    @property
    def records(self) -> Sequence[ImageRecord]:
        """Every image of the split, in the split's order, boxes included."""

    def read_images(self, indices: Sequence[int]) -> Generator[bytes, None, None]:
        """The image file bytes of ``records[i]`` for each ``i`` in ``indices``, in that
        order; closed when an epoch stops early."""


class ImageFiles:
    """A :class:`SampleSource` reading a COCO split's image files."""

    def __init__(self, split: CocoSplit):
        self.name = split.split
        self.records = split.records

    def read_images(self, indices: Sequence[int]) -> Generator[bytes, None, None]:
        for index in indices:
            yield Path(self.records[index].path).read_bytes()


class TrainBatches:
    """Endless-per-epoch batch source; epoch ``e`` is reproducible from ``(seed, e)``.

    ``split`` is a :class:`CocoSplit` (its JPEG files are read) or any
    :class:`SampleSource`; sources holding the same records give identical batches.
    Images without a box are left out.

    Data-parallel rank ``rank`` of ``group_size`` takes its ``batch_size`` slice of each
    global batch of one permutation shared by all ranks; every rank runs the same number
    of steps, which the all-reduce needs.
    """

    def __init__(self, split: CocoSplit | SampleSource, recipe: Recipe, batch_size: int, seed: int,
                 rank: int = 0, group_size: int = 1):
        if not 0 <= rank < group_size:
            raise ValueError(f"rank {rank} is not in a group of {group_size}")
        source = ImageFiles(split) if isinstance(split, CocoSplit) else split
        rows = [row for row, record in enumerate(source.records) if record.boxes.shape[0] > 0]
        if not rows:
            raise ValueError(f"split {source.name!r} has no image with a usable box")
        self.source = source
        self.rows = rows  # records[i] is source.records[rows[i]]
        self.records = [source.records[row] for row in rows]
        self.recipe = recipe
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.group_size = group_size
        self.priors = prior_boxes(recipe.priors)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.records) // (self.batch_size * self.group_size))

    def sample(self, record: ImageRecord, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """One training sample from ``record`` and its decoded ``[H, W, 3]`` uint8 image:
        ``(pixels [3, S, S] float32, loc [P, 4], labels [P], positives)``."""
        image, boxes, labels = random_crop(image, record.boxes, record.labels, rng)
        image, boxes = random_flip(image, boxes, rng)
        height, width = image.shape[:2]
        normalised = np.stack([boxes[:, 1] / height, boxes[:, 0] / width,
                               boxes[:, 3] / height, boxes[:, 2] / width], axis=1).astype(np.float32)
        loc, target_labels, positives = encode_targets(
            normalised, labels, self.priors, self.recipe.priors.prior_scaling, self.recipe.match_threshold)
        # Photometric jitter at model size: the same effect for a fraction of the work on a
        # large photo (at full size it was two thirds of the pipeline's time).
        resized = colour_jitter(resize_stretch(image, self.recipe.image_size), rng)
        return normalise(resized, self.recipe.mean, self.recipe.std), loc, target_labels, positives

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Batches of one epoch, from ``start_step`` on, prepared one batch ahead."""
        rng = np.random.default_rng([self.seed, epoch])
        global_batch = self.batch_size * self.group_size
        # A set smaller than one global batch repeats images, so every rank fills its batch.
        shared = np.resize(rng.permutation(len(self.records)), max(len(self.records), global_batch))
        starts = range(self.rank * self.batch_size, self.steps_per_epoch * global_batch, global_batch)
        order = np.concatenate([shared[start:start + self.batch_size] for start in starts])
        first, stop_at = start_step * self.batch_size, self.steps_per_epoch * self.batch_size
        ready: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()

        def put(item) -> None:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.5)
                    return
                except queue.Full:
                    continue

        def produce() -> None:
            # One read of the whole epoch, so that a source with a set-up cost (a
            # MindDataset pipeline) pays it once per epoch rather than per batch.
            images = self.source.read_images([self.rows[i] for i in order[first:stop_at]])

            def prepare(index: int, data: bytes) -> tuple[np.ndarray, ...]:
                return self.sample(self.records[index], decode_rgb(data),
                                   np.random.default_rng([self.seed, epoch, int(index)]))

            # Decoding and resizing release the GIL: a few threads keep ahead of the step.
            pool = ThreadPoolExecutor(SAMPLE_THREADS, thread_name_prefix="samples")
            try:
                for start in range(first, stop_at, self.batch_size):
                    if stop.is_set():
                        return
                    indices = order[start:start + self.batch_size]
                    samples = list(pool.map(prepare, indices, [next(images) for _ in indices]))
                    batch = Batch(*(np.stack(column) for column in zip(*samples)))
                    batch.num_positives = batch.num_positives.astype(np.int32)
                    put(batch)
                put(None)
            except Exception as error:  # surfaced in the consumer thread
                put(error)
            finally:
                pool.shutdown(cancel_futures=True)
                images.close()

        thread = threading.Thread(target=produce, name="batches", daemon=True)
        thread.start()
        try:
            while True:
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=30)


def eval_inputs(record: ImageRecord, recipe: Recipe) -> np.ndarray:
    """One image as the inference network takes it: ``[1, 3, S, S]`` float32."""
    return normalise(resize_stretch(load_rgb(record.path), recipe.image_size), recipe.mean, recipe.std)[None]
