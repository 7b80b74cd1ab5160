"""Train a model on a stored dataset and publish it as a model version.

``train_and_publish`` is what the ``trainer.train`` task and ``ssdstack train`` call:
load and check the dataset, train (resuming from ``<store>/jobs/<job>/checkpoints``),
measure the trained mAP with pycocotools, export MINDIR + ONNX + ``reference.npz``, and
publish the version with its manifest in one atomic step.
"""
from __future__ import annotations

from pathlib import Path

from ssdstack.datasets.coco import load_coco_split
from ssdstack.datasets.store import DatasetStore
from ssdstack.errors import InvalidDataset
from ssdstack.jobs.context import JobContext
from ssdstack.jobs.specs import TrainSpec
from ssdstack.model_store import ModelStore
from trainer.recipes import Recipe, get_recipe
from trainer.train import TrainConfig, train_network


def train_config(spec: TrainSpec, recipe: Recipe) -> TrainConfig:
    """The spec's values, each falling back to the recipe's default."""
    defaults = recipe.train

    def pick(name: str):
        value = getattr(spec, name)
        return getattr(defaults, name) if value is None else value

    return TrainConfig(epochs=pick("epochs"), batch_size=pick("batch_size"), lr=pick("lr"),
                       warmup_epochs=pick("warmup_epochs"), weight_decay=pick("weight_decay"),
                       momentum=defaults.momentum, loss_scale=pick("loss_scale"),
                       checkpoint_every=spec.checkpoint_every, seed=spec.seed)


def resolve_device(requested: str, default: str = "auto") -> str:
    """The spec's device, else the worker's default; ``auto`` picks Ascend, then GPU, when
    MindSpore reports one, otherwise CPU."""
    requested = default if requested == "auto" else requested
    if requested != "auto":
        return requested
    import mindspore as ms

    for device in ("Ascend", "GPU"):
        try:
            if ms.hal.is_available(device):
                return device
        except (AttributeError, RuntimeError, ValueError):
            continue
    return "CPU"


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


def run_dir_for(store_dir: Path, job_id: str) -> Path:
    return Path(store_dir) / "jobs" / job_id


def published_result(manifest: dict) -> dict:
    """The job result for a published version: ``{"model", "version", "metrics", "training"}``."""
    return {"model": manifest["name"], "version": manifest["version"],
            "metrics": {"trained": manifest["metrics"]["trained"]["coco"]}, "training": manifest["training"]}


def train_and_publish(spec: TrainSpec, store_dir: Path, work_dir: Path, job_id: str, ctx: JobContext,
                      default_device: str = "auto") -> dict:
    """Returns :func:`published_result` of the new version."""
    import mindspore as ms

    from trainer.evaluate import evaluate_mindspore
    from trainer.export import export_network
    from trainer.network import build_inference

    recipe = get_recipe(spec.architecture)
    datasets = DatasetStore(store_dir)
    dataset_dir = datasets.path(spec.dataset)
    dataset_info = datasets.get(spec.dataset)
    train_split = load_coco_split(dataset_dir, "train")
    val_split = load_coco_split(dataset_dir, "val")
    if not any(r.boxes.shape[0] for r in train_split.records):
        raise InvalidDataset(f"dataset {spec.dataset!r} has no training image with a box")
    if not val_split.records:
        raise InvalidDataset(f"dataset {spec.dataset!r} has an empty val split; it is needed for mAP")

    device = resolve_device(spec.device, default_device)
    work_dir.mkdir(parents=True, exist_ok=True)
    ms.set_context(mode=ms.GRAPH_MODE, device_target=device, save_graphs_path=str(work_dir))
    config = train_config(spec, recipe)
    run_dir = run_dir_for(store_dir, job_id)
    ctx.log(f"training {spec.architecture} on {spec.dataset} ({len(train_split.records)} images, "
            f"{len(train_split.label_names)} classes) on {device} for {config.epochs} epochs")
    outcome = train_network(recipe, train_split, config, run_dir, ctx)

    network = outcome.network
    network.set_train(False)
    inference = build_inference(network, recipe)
    inference.set_train(False)
    ctx.progress(stage="evaluate_trained")
    trained = evaluate_mindspore(inference, recipe, val_split, ctx)
    ctx.log(f"trained mAP {trained['coco']['AP']:.4f}, mAP@0.5 {trained['coco']['AP50']:.4f}")

    ctx.progress(stage="export")
    models = ModelStore(store_dir)
    with models.staging() as staged:
        formats = ("AIR", "MINDIR", "ONNX") if device == "Ascend" else ("MINDIR", "ONNX")
        artefacts = export_network(network, recipe, val_split, staged, formats)
        (staged / "labels.txt").write_text("\n".join(("background",) + train_split.label_names) + "\n")
        artefacts["labels"] = "labels.txt"
        training = {"device": device, "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
                    "warmup_epochs": config.warmup_epochs, "weight_decay": config.weight_decay,
                    "loss_scale": config.loss_scale, "seed": config.seed, "final_loss": outcome.final_loss,
                    "resumed_from_epoch": outcome.resumed_from_epoch, "seconds": round(outcome.seconds, 1)}
        lineage = {"job_id": job_id, "dataset": spec.dataset, "dataset_sha256": dataset_info.get("sha256"),
                   "parent_version": None}
        manifest = version_manifest(recipe, train_split.label_names, train_split.category_ids,
                                    {"trained": trained}, training, lineage)
        manifest = models.publish(spec.model, staged, manifest, artefacts)
    ctx.log(f"published {spec.model} version {manifest['version']}")
    return published_result(manifest)
