"""Export a trained network: checkpoint, MINDIR, ONNX and ``reference.npz``.

``reference.npz`` carries accuracy with the model: a few validation images as the
converted model will receive them (``images``: ``[R, S, S, 3]`` uint8 RGB at model size)
and the MindSpore inference network's outputs for them (``boxes [R, P, 4]``,
``scores [R, P, C]``), so the converter can check its artefact without MindSpore.
"""
from __future__ import annotations

from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ssdstack.datasets.coco import CocoSplit
from ssdstack.images import resize_stretch
from ssdstack.recipes import Recipe
from trainer.data import load_rgb, normalise
from trainer.network import build_inference

REFERENCE_IMAGES = 4


def reference_images(split: CocoSplit | None, size: int, count: int = REFERENCE_IMAGES) -> np.ndarray:
    """``[R, size, size, 3]`` uint8 RGB: the split's first images, or fixed noise without one."""
    if split is None or not split.records:
        return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    return np.stack([resize_stretch(load_rgb(r.path), size) for r in split.records[:count]])


def export_network(network, recipe: Recipe, images: np.ndarray, out_dir: Path,
                   formats=("MINDIR", "ONNX")) -> dict[str, str]:
    """Write artefacts into ``out_dir``, with ``images`` (see :func:`reference_images`) as the
    reference inputs; returns ``{kind: file name}``."""
    network.set_train(False)
    inference = build_inference(network, recipe)
    inference.set_train(False)
    files = {"checkpoint": "model.ckpt"}
    ms.save_checkpoint(network, str(out_dir / "model.ckpt"))

    size = recipe.image_size
    example = Tensor(np.zeros((1, 3, size, size), np.float32))
    suffixes = {"MINDIR": "mindir", "ONNX": "onnx", "AIR": "air"}
    for file_format in formats:
        ms.export(inference, example, file_name=str(out_dir / "model"), file_format=file_format)
        files[file_format.lower()] = f"model.{suffixes[file_format]}"

    boxes, scores = [], []
    for image in images:
        out_boxes, out_scores = inference(Tensor(normalise(image, recipe.mean, recipe.std)[None]))
        boxes.append(out_boxes.asnumpy()[0])
        scores.append(out_scores.asnumpy()[0])
    np.savez_compressed(out_dir / "reference.npz", images=images, boxes=np.stack(boxes), scores=np.stack(scores))
    files["reference"] = "reference.npz"
    return files
