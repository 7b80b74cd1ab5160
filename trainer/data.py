"""Training and evaluation batches from a COCO split.

Every sample goes: decode -> (train: IoU crop, flip, colour jitter) -> resize ->
normalise -> CHW, with SSD targets encoded against the recipe's priors. Batches are
built by a background thread, so decoding overlaps the MindSpore step.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssdstack.datasets.coco import CocoSplit, ImageRecord
from ssdstack.detection.matching import encode_targets
from ssdstack.detection.priors import prior_boxes
from ssdstack.images import decode_image, resize_stretch
from trainer.augment import colour_jitter, random_crop, random_flip
from trainer.recipes import Recipe


def load_rgb(path: Path) -> np.ndarray:
    """A dataset image as ``[H, W, 3]`` uint8 RGB in its stored frame (the annotations' frame),
    decoded exactly as the served evaluation decodes it."""
    return decode_image(Path(path).read_bytes(), exif_transpose=False)


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


class TrainBatches:
    """Endless-per-epoch batch source; epoch ``e`` is reproducible from ``(seed, e)``."""

    def __init__(self, split: CocoSplit, recipe: Recipe, batch_size: int, seed: int):
        records = [r for r in split.records if r.boxes.shape[0] > 0]
        if not records:
            raise ValueError(f"split {split.split!r} has no image with a usable box")
        self.records = records
        self.recipe = recipe
        self.batch_size = batch_size
        self.seed = seed
        self.priors = prior_boxes(recipe.priors)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.records) // self.batch_size)

    def sample(self, record: ImageRecord, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        image = load_rgb(record.path)
        image, boxes, labels = random_crop(image, record.boxes, record.labels, rng)
        image, boxes = random_flip(image, boxes, rng)
        image = colour_jitter(image, rng)
        height, width = image.shape[:2]
        size = self.recipe.image_size
        normalised = np.stack([boxes[:, 1] / height, boxes[:, 0] / width,
                               boxes[:, 3] / height, boxes[:, 2] / width], axis=1).astype(np.float32)
        loc, target_labels, positives = encode_targets(
            normalised, labels, self.priors, self.recipe.priors.prior_scaling, self.recipe.match_threshold)
        pixels = normalise(resize_stretch(image, size), self.recipe.mean, self.recipe.std)
        return pixels, loc, target_labels, positives

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Batches of one epoch, from ``start_step`` on, prepared one batch ahead."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.records))
        starts = range(start_step * self.batch_size, self.steps_per_epoch * self.batch_size, self.batch_size)
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
            try:
                for start in starts:
                    if stop.is_set():
                        return
                    samples = [self.sample(self.records[i], np.random.default_rng([self.seed, epoch, int(i)]))
                               for i in order[start:start + self.batch_size]]
                    batch = Batch(*(np.stack(column) for column in zip(*samples)))
                    batch.num_positives = batch.num_positives.astype(np.int32)
                    put(batch)
                put(None)
            except Exception as error:  # surfaced in the consumer thread
                put(error)

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
