"""A tiny valid COCO dataset that tests then break in one place each."""
from __future__ import annotations

import json
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
from PIL import Image

IMAGE_SIZE = (64, 48)  # width, height


def write_coco(
    root: Path,
    category_ids: tuple[int, ...] = (1, 2),
    images_per_split: int = 2,
    seed: int = 0,
) -> Path:
    """Write ``root`` in COCO layout: noise JPEGs of IMAGE_SIZE, one box per category each.

    Box ``k`` of an image is ``[4 + 10k, 5, 8, 6]`` (x, y, w, h) with category
    ``category_ids[k]``; image ids and annotation ids count from 1 across each split.
    """
    rng = np.random.default_rng(seed)
    width, height = IMAGE_SIZE
    categories = [{"id": cid, "name": f"class{cid}"} for cid in category_ids]
    for split in ("train", "val"):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, images_per_split + 1):
            file_name = f"{split}_{image_id}.jpg"
            pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / file_name, quality=90)
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            for k, cid in enumerate(category_ids):
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": cid,
                    "bbox": [4 + 10 * k, 5, 8, 6], "area": 48, "iscrowd": 0,
                })
        (root / "annotations").mkdir(exist_ok=True)
        doc = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


@contextmanager
def annotations_of(root: Path, split: str) -> Iterator[dict]:
    """Yield a split's annotation json for editing in place; written back on exit."""
    path = root / "annotations" / f"instances_{split}.json"
    doc = json.loads(path.read_text())
    yield doc
    path.write_text(json.dumps(doc))


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    """A valid two-category dataset with two images per split."""
    return write_coco(tmp_path / "ds")


@pytest.fixture
def make_coco() -> Callable[..., Path]:
    """:func:`write_coco`, for tests that need other categories or sizes."""
    return write_coco


@pytest.fixture
def edit_annotations() -> Callable[[Path, str], AbstractContextManager[dict]]:
    """``with edit_annotations(root, "train") as doc: ...`` changes the json on disk."""
    return annotations_of
