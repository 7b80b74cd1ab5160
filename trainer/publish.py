"""The export stage: weights ready to publish (:class:`Trained`) become a model version.

The network is rebuilt from the weights file, exported (checkpoint, MINDIR, ONNX, AIR on
Ascend) with ``reference.npz`` and ``labels.txt`` into a staging folder, together with
the trained-mAP report, and published with its manifest in one atomic step.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ssdstack.datasets.coco import load_coco_split
from ssdstack.datasets.store import DatasetStore
from ssdstack.errors import JobFailed
from ssdstack.jobs.context import JobContext
from ssdstack.jobs.stage_data import Published, Trained
from ssdstack.model_store import ModelStore
from ssdstack.recipes import Recipe, get_recipe
from trainer.device import set_device
from trainer.export import export_network, reference_images
from trainer.network import build_ssd
from trainer.transfer import load_pretrained, read_checkpoint


def version_manifest(recipe: Recipe, label_names, category_ids, metrics: dict, training: dict, lineage: dict) -> dict:
    """What a published version's manifest says about the model (the store adds name,
    version, time and artefact hashes)."""
    return {
        "architecture": recipe.architecture,
        "image_size": recipe.image_size,
        "num_classes": len(label_names) + 1,
        "labels": list(label_names),
        "category_ids": list(category_ids),
        "preprocessing": {"colour_order": "RGB", "mean": list(recipe.mean), "std": list(recipe.std),
                          "resize": "stretch-bilinear", "layout": "NCHW", "scale": "(x - mean) / std on 0..255"},
        "priors": dict(recipe.priors.to_dict(), count=recipe.priors.num_priors(), format="cy,cx,h,w"),
        "outputs": {"boxes": "normalised y0,x0,y1,x1", "scores": "sigmoid per class, column 0 background"},
        "postprocess": dict(recipe.postprocess),
        "metrics": metrics,
        "training": training,
        "lineage": lineage,
        "serving": {},
    }


def published(manifest: dict) -> Published:
    """The export stage's output for a published version."""
    trained = manifest["metrics"].get("trained")
    return Published(model=manifest["name"], version=manifest["version"],
                     metrics={"trained": trained["coco"]} if trained else {}, training=manifest["training"])


def export_version(data: Trained, store_dir: Path, work_dir: Path, job_id: str, ctx: JobContext) -> Published:
    """Publish ``data`` as the next version of ``data.model``; once per job: a version the
    job already published (a delivery after a crash) is returned as it is."""
    models = ModelStore(store_dir)
    done = models.version_by_job(data.model, job_id)
    if done is not None:
        ctx.log(f"version {done['version']} was already published by an earlier delivery")
        return published(done)
    recipe = get_recipe(data.manifest["architecture"])
    set_device(data.device, work_dir)
    network = build_ssd(recipe, int(data.manifest["num_classes"]))
    load_pretrained(network, read_checkpoint(Path(store_dir) / data.weights), head_filter="none")
    network.set_train(False)
    formats = tuple(data.formats or (("AIR", "MINDIR", "ONNX") if data.device == "Ascend" else ("MINDIR", "ONNX")))
    if "AIR" in formats and data.device != "Ascend":
        raise JobFailed(f"AIR export needs an Ascend device; this trainer runs on {data.device}")
    images = _reference_inputs(data, Path(store_dir), recipe.image_size)
    with models.staging() as staged:
        artefacts = export_network(network, recipe, images, staged, formats)
        (staged / "labels.txt").write_text("\n".join(["background", *data.manifest["labels"]]) + "\n")
        artefacts["labels"] = "labels.txt"
        if data.report_root is not None:
            shutil.copytree(Path(store_dir) / data.report_root, staged, dirs_exist_ok=True)
            artefacts.update(data.report_files)
        manifest = models.publish(data.model, staged, data.manifest, artefacts)
    ctx.log(f"published {data.model} version {manifest['version']}")
    return published(manifest)


def _reference_inputs(data: Trained, store_dir: Path, size: int) -> np.ndarray:
    """``[R, S, S, 3]`` uint8: the images of ``data.reference_file``, else the first val
    images of ``data.reference_dataset``, else fixed noise."""
    if data.reference_file is not None:
        with np.load(store_dir / data.reference_file) as reference:
            return reference["images"]
    if data.reference_dataset is not None:
        val = load_coco_split(DatasetStore(store_dir).path(data.reference_dataset), "val")
        return reference_images(val, size)
    return reference_images(None, size)
