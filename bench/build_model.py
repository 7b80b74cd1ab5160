"""Publish an untrained (He-initialised) model version for benchmarks: speed does not
depend on the weights, and this needs no training run.

    python -m bench.build_model STORE_DIR NAME ARCHITECTURE
"""
from __future__ import annotations

import sys
from pathlib import Path

import mindspore as ms
import numpy as np

from ssdstack.datasets.coco import load_coco_split
from ssdstack.datasets.synth import synthesize
from ssdstack.model_store import ModelStore
from ssdstack.recipes import get_recipe
from trainer.export import export_network, reference_images
from trainer.network import build_ssd
from trainer.publish import version_manifest


def main(store_dir: str, name: str, architecture: str) -> None:
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    models = ModelStore(Path(store_dir))
    recipe = get_recipe(architecture)
    with models.staging() as staged:
        synthesize(staged / "dataset", images=8, classes=3, seed=0, val_fraction=0.5)
        split = load_coco_split(staged / "dataset", "val")
        ms.set_seed(0)
        network = build_ssd(recipe, len(split.label_names) + 1)
        rng = np.random.default_rng(0)
        for param in network.trainable_params():
            if param.ndim == 4:
                fan_in = int(np.prod(param.shape[1:]))
                param.set_data(ms.Tensor(rng.normal(0, (2 / fan_in) ** 0.5, param.shape).astype(np.float32)))
        export_dir = staged / "export"
        export_dir.mkdir()
        artefacts = export_network(network, recipe, reference_images(split, recipe.image_size), export_dir)
        manifest = version_manifest(recipe, split.label_names, split.category_ids, {}, {"untrained": True},
                                    {"job_id": None, "dataset": None, "parent_version": None})
        published = models.publish(name, export_dir, manifest, artefacts)
    print(published["version"])


if __name__ == "__main__":
    main(*sys.argv[1:4])
