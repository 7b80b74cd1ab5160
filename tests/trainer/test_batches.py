"""How training batches are shared out between data-parallel ranks."""
from __future__ import annotations

import numpy as np
import pytest

from ssdstack.datasets.coco import load_coco_split
from ssdstack.datasets.synth import synthesize
from trainer.data import TrainBatches
from ssdstack.recipes import get_recipe


class ImageIds(TrainBatches):
    """Batches of image ids instead of pixels, to see which images each rank gets."""

    def sample(self, record, image, rng):
        return np.array(record.image_id), np.zeros(4, np.float32), np.zeros(1, np.int32), 0


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    synthesize(root, images=23, classes=2, seed=4, val_fraction=0.1, min_side=64, max_side=96)
    return load_coco_split(root, "train")


def _ids(batches: TrainBatches, epoch: int) -> list[list[int]]:
    return [batch.images.tolist() for batch in batches.epoch(epoch)]


def test_ranks_split_each_global_batch_of_one_shared_order(split):
    recipe = get_recipe("ssd_lite_mobilenet_v2")
    alone = ImageIds(split, recipe, batch_size=4, seed=9)
    ranks = [ImageIds(split, recipe, batch_size=2, seed=9, rank=r, group_size=2) for r in range(2)]
    assert ranks[0].steps_per_epoch == ranks[1].steps_per_epoch == alone.steps_per_epoch == len(alone.records) // 4
    for epoch in range(2):
        single = _ids(alone, epoch)
        per_rank = [_ids(r, epoch) for r in ranks]
        assert [a + b for a, b in zip(*per_rank)] == single
        assert not set(sum(per_rank[0], [])) & set(sum(per_rank[1], []))


def test_a_set_smaller_than_a_global_batch_still_fills_every_rank(split):
    recipe = get_recipe("ssd_lite_mobilenet_v2")
    ranks = [ImageIds(split, recipe, batch_size=16, seed=0, rank=r, group_size=2) for r in range(2)]
    batches = [_ids(r, 0) for r in ranks]
    assert [len(b) for b in batches] == [1, 1] and [len(b[0]) for b in batches] == [16, 16]


def test_a_rank_outside_the_group_is_refused(split):
    with pytest.raises(ValueError, match="rank 2 is not in a group of 2"):
        TrainBatches(split, get_recipe("ssd_lite_mobilenet_v2"), 2, 0, rank=2, group_size=2)
