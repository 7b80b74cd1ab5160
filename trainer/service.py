"""Train a model on a stored dataset and publish it as a model version.

``train_and_publish`` is what the ``trainer.train`` task and ``ssdstack train`` call:
load and check the dataset, train (resuming from ``<store>/jobs/<job>/checkpoints``),
measure the trained mAP with pycocotools, export MINDIR + ONNX + ``reference.npz``, and
publish the version with its manifest in one atomic step. ``import_and_publish`` and
``export_and_publish`` make versions from an existing checkpoint the same way.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ssdstack.checkpoints import CheckpointStore
from ssdstack.datasets.coco import CocoSplit, load_coco_split, validate_coco_dataset
from ssdstack.datasets.store import DatasetStore
from ssdstack.errors import InvalidDataset, InvalidInput, JobFailed
from ssdstack.jobs.context import JobCancelled, JobContext
from ssdstack.jobs.specs import ExportSpec, ImportSpec, TrainSpec
from ssdstack.model_store import ModelStore
from trainer.ascendjob import Cluster
from trainer.recipes import Recipe, get_recipe
from trainer.train import TrainConfig, TrainOutcome, train_network

# Where rank 0 of a distributed run leaves what the launching process publishes.
RANK_WEIGHTS = "final.ckpt"
RANK_OUTCOME = "outcome.json"
# The zoo's FPN training wrapper clips with clip_by_global_norm's default norm.
ZOO_CLIP_NORM = 1.0
# A bound on one distributed training run; cancelling stops it sooner.
DISTRIBUTED_TIMEOUT_S = 14 * 24 * 3600


def train_config(spec: TrainSpec, recipe: Recipe, device: str) -> TrainConfig:
    """The spec's values, each falling back to the recipe's default; AMP ``auto`` is O2 on
    Ascend (the zoo trains in float16 there) and O0 elsewhere."""
    defaults = recipe.train

    def pick(name: str):
        value = getattr(spec, name)
        return getattr(defaults, name) if value is None else value

    amp_level = spec.amp_level if spec.amp_level != "auto" else ("O2" if device == "Ascend" else "O0")
    clip = spec.clip_global_norm if spec.clip_global_norm is not None else (
        ZOO_CLIP_NORM if recipe.clip_global_norm else None)
    return TrainConfig(epochs=pick("epochs"), batch_size=pick("batch_size"), lr=pick("lr"),
                       warmup_epochs=pick("warmup_epochs"), weight_decay=pick("weight_decay"),
                       momentum=defaults.momentum, loss_scale=pick("loss_scale"),
                       checkpoint_every=spec.checkpoint_every, seed=spec.seed,
                       keep_checkpoint_max=spec.keep_checkpoint_max,
                       loss_scale_dynamic=spec.loss_scale_mode == "dynamic", amp_level=amp_level,
                       clip_global_norm=clip, freeze_backbone=spec.freeze == "backbone", eval_every=spec.eval_every)


def checkpoint_path(store_dir: Path, reference: str) -> Path:
    """An uploaded ``name.ckpt`` in ``<store>/checkpoints``, or ``<model>:<version>``'s weights."""
    if reference.endswith(".ckpt"):
        return CheckpointStore(store_dir).path(reference)
    name, version = reference.rsplit(":", 1)
    return ModelStore(store_dir).artefact_path(name, int(version), "checkpoint")


def _initialiser(spec: TrainSpec, store_dir: Path, ctx: JobContext):
    """The ``initialise`` hook for :func:`train_network`: pretrained, then backbone weights."""
    if spec.pretrained is None and spec.backbone_checkpoint is None:
        return None

    def initialise(network) -> dict:
        from trainer.transfer import load_backbone, load_pretrained, read_checkpoint

        report = {}
        if spec.pretrained is not None:
            loaded = load_pretrained(network, read_checkpoint(checkpoint_path(store_dir, spec.pretrained)),
                                     spec.head_filter)
            report["pretrained"] = dict(loaded.to_dict(), source=spec.pretrained)
            ctx.log(f"loaded {loaded.loaded} parameters from {spec.pretrained}; "
                    f"{len(loaded.skipped)} head parameters start fresh")
        if spec.backbone_checkpoint is not None:
            loaded = load_backbone(network, read_checkpoint(checkpoint_path(store_dir, spec.backbone_checkpoint)))
            report["backbone"] = dict(loaded.to_dict(), source=spec.backbone_checkpoint)
            ctx.log(f"loaded {loaded.loaded} backbone parameters from {spec.backbone_checkpoint}")
        return report

    return initialise


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
    trained = manifest["metrics"].get("trained")
    return {"model": manifest["name"], "version": manifest["version"],
            "metrics": {"trained": trained["coco"]} if trained else {}, "training": manifest["training"]}


def _set_device(device: str, work_dir: Path) -> None:
    import mindspore as ms

    work_dir.mkdir(parents=True, exist_ok=True)
    ms.set_context(mode=ms.GRAPH_MODE, device_target=device, save_graphs_path=str(work_dir))


def _publish(models: ModelStore, name: str, network, recipe: Recipe, split: CocoSplit | None, device: str,
             formats: tuple[str, ...] | None, manifest: dict, ctx: JobContext, images=None,
             evaluation=None, dataset: str | None = None) -> dict:
    """Export ``network`` into a staging folder, with the report of ``evaluation`` (on
    ``dataset``'s val split) when given, and publish it with ``manifest`` (see
    :func:`version_manifest`)."""
    from ssdstack.evaluation import stage_report
    from trainer.export import export_network, reference_images

    ctx.progress(stage="export")
    formats = formats or (("AIR", "MINDIR", "ONNX") if device == "Ascend" else ("MINDIR", "ONNX"))
    if "AIR" in formats and device != "Ascend":
        raise JobFailed(f"AIR export needs an Ascend device; this trainer runs on {device}")
    images = reference_images(split, recipe.image_size) if images is None else images
    with models.staging() as staged:
        artefacts = export_network(network, recipe, images, staged, formats)
        (staged / "labels.txt").write_text("\n".join(["background", *manifest["labels"]]) + "\n")
        artefacts["labels"] = "labels.txt"
        if evaluation is not None:
            artefacts.update(stage_report(staged, evaluation, dataset, "val"))
        manifest = models.publish(name, staged, manifest, artefacts)
    ctx.log(f"published {name} version {manifest['version']}")
    return manifest


def _checked_dataset(name: str, store_dir: Path, ctx: JobContext) -> tuple[dict, object, CocoSplit, CocoSplit]:
    """``(dataset info, validation summary, train split, val split)``.

    Checked at upload too; the store's files may have changed since. Errors fail the job
    with every problem found (first 20); warnings are logged and kept with the version.
    """
    datasets = DatasetStore(store_dir)
    dataset_dir = datasets.path(name)
    info = datasets.get(name)
    ctx.progress(stage="validate")
    summary = validate_coco_dataset(dataset_dir)
    for warning in summary.warnings:
        ctx.log(f"dataset warning: {warning}")
    if summary.warning_count > len(summary.warnings):
        ctx.log(f"... and {summary.warning_count - len(summary.warnings)} more dataset warnings")
    return info, summary, load_coco_split(dataset_dir, "train"), load_coco_split(dataset_dir, "val")


def train_on_store(spec: TrainSpec, recipe: Recipe, config: TrainConfig, store_dir: Path, run_dir: Path,
                   train_split: CocoSplit, val_split: CocoSplit, ctx: JobContext, rank: int = 0,
                   group_size: int = 1) -> TrainOutcome:
    """The training itself, from the dataset's cached MindRecord; what one process does, or
    each data-parallel rank (``trainer.rank_main``)."""
    from trainer.data import TrainBatches
    from trainer.evaluate import evaluate_network
    from trainer.mindrecord import MindRecordSource, mindrecord_for

    cached = mindrecord_for(store_dir, spec.dataset, "train")
    ctx.log(f"{'reusing' if cached.reused else 'wrote'} MindRecord {cached.file.name}")
    batches = TrainBatches(MindRecordSource(cached.file), recipe, config.batch_size, config.seed, rank, group_size)

    def val_map(network) -> float:
        return evaluate_network(network, recipe, val_split, ctx).scores.coco["AP"]

    return train_network(recipe, train_split, config, run_dir, ctx, batches=batches,
                         initialise=_initialiser(spec, store_dir, ctx),
                         evaluate=val_map if config.eval_every and rank == 0 else None,
                         rank=rank, group_size=group_size)


def _train_distributed(spec: TrainSpec, recipe: Recipe, device: str, store_dir: Path, work_dir: Path,
                       job_id: str, run_dir: Path, ctx: JobContext) -> TrainOutcome:
    """Run ``spec.devices`` ranks of :mod:`trainer.rank_main` and wait for them; rank 0
    leaves the weights to publish in ``run_dir/final.ckpt`` and its outcome beside them."""
    from trainer.distributed import LaunchPlan, free_port, launch, relay_to

    job_file = work_dir / "rank-job.json"
    _write_rank_job(job_file, spec, store_dir, work_dir, job_id, device)
    rank_table = os.environ.get("RANK_TABLE_FILE")
    try:
        plan = LaunchPlan(devices=spec.devices, log_dir=work_dir / "ranks", launcher=spec.launcher,
                          device_target=device, master_port=free_port(),
                          rank_table_file=Path(rank_table) if rank_table else None)
    except ValueError as error:
        raise JobFailed(f"cannot launch {spec.devices} ranks: {error}") from error
    ctx.log(f"launching {spec.devices} data-parallel ranks with {spec.launcher}; logs in {plan.log_dir}")
    launch(plan, ["-m", "trainer.rank_main", str(job_file)], timeout_s=DISTRIBUTED_TIMEOUT_S,
           on_line=relay_to(ctx), cancelled=ctx.cancelled)
    return _rank_outcome(recipe, run_dir)


def _train_on_ascendjob(spec: TrainSpec, recipe: Recipe, store_dir: Path, job_id: str, run_dir: Path,
                        cluster: Cluster | None, ctx: JobContext, poll_s: float = 10.0) -> TrainOutcome:
    """Render the AscendJob for ``spec.nodes x spec.devices`` ranks into ``run_dir``, then
    wait (cancellable, at most DISTRIBUTED_TIMEOUT_S) for rank 0's weights there."""
    from trainer.ascendjob import render_ascendjob

    if spec.device not in ("auto", "Ascend"):
        raise InvalidInput(f"multi-node training runs on Ascend 910 nodes (an AscendJob), not on {spec.device}")
    if cluster is None or not cluster.image:
        raise JobFailed("multi-node training needs the Ascend trainer image its pods run: set "
                        "SSDSTACK_TRAINER_IMAGE on the trainer")
    run_dir.mkdir(parents=True, exist_ok=True)
    job_file = run_dir / "rank-job.json"
    _write_rank_job(job_file, spec, store_dir, Path(f"/tmp/ssdstack-work/{job_id}"), job_id, "Ascend")
    manifest = run_dir / "ascendjob.yaml"
    manifest.write_text(render_ascendjob(job_id, cluster, spec.nodes * spec.devices, job_file))
    ctx.log(f"{spec.nodes * spec.devices} ranks on {spec.nodes} nodes run as an AscendJob: submit it with "
            f"`kubectl apply -f {manifest}`; this job waits for rank 0's weights")
    ctx.progress(stage="waiting_for_ascendjob", manifest=str(manifest))
    deadline = time.monotonic() + DISTRIBUTED_TIMEOUT_S
    while not (run_dir / RANK_OUTCOME).exists():
        if ctx.cancelled():
            raise JobCancelled(f"cancelled while waiting for the AscendJob; delete it with "
                               f"`kubectl delete -f {manifest}`")
        if time.monotonic() > deadline:
            raise JobFailed(f"the AscendJob gave no weights within {DISTRIBUTED_TIMEOUT_S} s")
        time.sleep(poll_s)
    return _rank_outcome(recipe, run_dir)


def _write_rank_job(job_file: Path, spec: TrainSpec, store_dir: Path, work_dir: Path, job_id: str,
                    device: str) -> None:
    """The file every :mod:`trainer.rank_main` reads: the job and where its ranks work."""
    job_file.write_text(json.dumps({"type": spec.type, "spec": spec.model_dump(), "store_dir": str(store_dir),
                                    "work_dir": str(work_dir), "job_id": job_id, "device": device}))


def _rank_outcome(recipe: Recipe, run_dir: Path) -> TrainOutcome:
    """What rank 0 left in ``run_dir``: the trained network and its outcome."""
    from trainer.network import build_ssd
    from trainer.transfer import load_pretrained, read_checkpoint

    outcome = json.loads((run_dir / RANK_OUTCOME).read_text())
    network = build_ssd(recipe, len(outcome.pop("labels")) + 1)
    load_pretrained(network, read_checkpoint(run_dir / RANK_WEIGHTS), head_filter="none")
    return TrainOutcome(network=network, **outcome)


def train_and_publish(spec: TrainSpec, store_dir: Path, work_dir: Path, job_id: str, ctx: JobContext,
                      default_device: str = "auto", cluster: Cluster | None = None) -> dict:
    """Returns :func:`published_result` of the new version. ``cluster``: where the ranks of
    a multi-node job (``spec.nodes > 1``) run."""
    from ssdstack.evaluation import report_dir
    from trainer.evaluate import evaluate_network

    recipe = get_recipe(spec.architecture)
    dataset_info, summary, train_split, val_split = _checked_dataset(spec.dataset, store_dir, ctx)
    device = resolve_device(spec.device, default_device)
    _set_device(device, work_dir)
    config = train_config(spec, recipe, device)
    run_dir = run_dir_for(store_dir, job_id)
    ctx.log(f"training {spec.architecture} on {spec.dataset} ({len(train_split.records)} images, "
            f"{len(train_split.label_names)} classes) on {device} for {config.epochs} epochs, AMP {config.amp_level}")
    if spec.nodes > 1:
        outcome = _train_on_ascendjob(spec, recipe, store_dir, job_id, run_dir, cluster, ctx)
    elif spec.devices > 1:
        outcome = _train_distributed(spec, recipe, device, store_dir, work_dir, job_id, run_dir, ctx)
    else:
        outcome = train_on_store(spec, recipe, config, store_dir, run_dir, train_split, val_split, ctx)

    network = outcome.network
    network.set_train(False)
    ctx.progress(stage="evaluate_trained")
    evaluation = evaluate_network(network, recipe, val_split, ctx)
    trained = dict(evaluation.summary(), report=report_dir("mindspore", spec.dataset, "val"))
    ctx.log(f"trained mAP {trained['coco']['AP']:.4f}, mAP@0.5 {trained['coco']['AP50']:.4f}")

    training = {"device": device, "devices": spec.devices, "epochs": config.epochs, "batch_size": config.batch_size,
                "lr": config.lr, "warmup_epochs": config.warmup_epochs, "weight_decay": config.weight_decay,
                "loss_scale": config.loss_scale, "loss_scale_mode": spec.loss_scale_mode,
                "amp_level": config.amp_level, "clip_global_norm": config.clip_global_norm,
                "freeze": spec.freeze, "seed": config.seed, "final_loss": outcome.final_loss,
                "resumed_from_epoch": outcome.resumed_from_epoch, "seconds": round(outcome.seconds, 1),
                "initialised": outcome.initialised, "best": outcome.best, "eval_history": outcome.history,
                "dataset_warnings": {"count": summary.warning_count, "first": summary.warnings}}
    lineage = {"job_id": job_id, "dataset": spec.dataset, "dataset_sha256": dataset_info.get("sha256"),
               "parent_version": None, "pretrained": spec.pretrained, "backbone_checkpoint": spec.backbone_checkpoint}
    manifest = version_manifest(recipe, train_split.label_names, train_split.category_ids, {"trained": trained},
                                training, lineage)
    manifest = _publish(ModelStore(store_dir), spec.model, network, recipe, val_split, device, None, manifest, ctx,
                        evaluation=evaluation, dataset=spec.dataset)
    return published_result(manifest)


def import_and_publish(spec: ImportSpec, store_dir: Path, work_dir: Path, job_id: str, ctx: JobContext,
                       default_device: str = "auto", checkpoint: Path | None = None) -> dict:
    """Check an existing checkpoint against ``spec.architecture`` with ``len(spec.labels)``
    classes (every parameter present, every shape equal), export and publish it.

    ``checkpoint`` overrides the uploaded file (the CLI imports a local path).
    """
    from ssdstack.evaluation import report_dir
    from trainer.evaluate import evaluate_network
    from trainer.network import build_ssd
    from trainer.transfer import load_pretrained, read_checkpoint

    recipe = get_recipe(spec.architecture)
    path = checkpoint or checkpoint_path(store_dir, spec.checkpoint)
    val_split = None
    if spec.dataset is not None:
        val_split = load_coco_split(DatasetStore(store_dir).path(spec.dataset), "val")
        if list(val_split.label_names) != list(spec.labels):
            raise InvalidDataset(f"dataset {spec.dataset!r} has classes {list(val_split.label_names)}, "
                                 f"the import names {list(spec.labels)}")
    device = resolve_device(spec.device, default_device)
    _set_device(device, work_dir)
    network = build_ssd(recipe, len(spec.labels) + 1)
    report = load_pretrained(network, read_checkpoint(path), head_filter="none")
    ctx.log(f"{path.name}: {report.loaded} parameters fit {spec.architecture} with {len(spec.labels)} classes"
            + (" (matched layer by layer: the names differ)" if report.mapped_by_position else ""))
    network.set_train(False)
    metrics, evaluation = {}, None
    if val_split is not None:
        evaluation = evaluate_network(network, recipe, val_split, ctx)
        metrics["trained"] = dict(evaluation.summary(), report=report_dir("mindspore", spec.dataset, "val"))
    category_ids = val_split.category_ids if val_split is not None else tuple(range(1, len(spec.labels) + 1))
    training = {"device": device, "imported_from": path.name, "load": report.to_dict()}
    lineage = {"job_id": job_id, "dataset": spec.dataset, "dataset_sha256": None, "parent_version": None}
    manifest = version_manifest(recipe, spec.labels, category_ids, metrics, training, lineage)
    manifest = _publish(ModelStore(store_dir), spec.model, network, recipe, val_split, device, None, manifest, ctx,
                        evaluation=evaluation, dataset=spec.dataset)
    return published_result(manifest)


def export_and_publish(spec: ExportSpec, store_dir: Path, work_dir: Path, job_id: str, ctx: JobContext,
                       default_device: str = "auto") -> dict:
    """Export a version's checkpoint again in ``spec.formats``, as a new version of the
    same model whose lineage names the source; its reference images are the source's."""
    import numpy as np

    from trainer.network import build_ssd
    from trainer.transfer import load_pretrained, read_checkpoint

    models = ModelStore(store_dir)
    source = models.manifest(spec.model, spec.version)
    recipe = get_recipe(source["architecture"])
    device = resolve_device(spec.device, default_device)
    _set_device(device, work_dir)
    network = build_ssd(recipe, int(source["num_classes"]))
    load_pretrained(network, read_checkpoint(models.artefact_path(spec.model, spec.version, "checkpoint")),
                    head_filter="none")
    network.set_train(False)
    with np.load(models.artefact_path(spec.model, spec.version, "reference")) as reference:
        images = reference["images"]

    manifest = {key: value for key, value in source.items()
                if key not in ("name", "version", "created_at", "schema", "artefacts", "serving", "metrics")}
    # The weights' trained mAP carries over; served figures belong to the source's conversions.
    manifest["metrics"] = {key: value for key, value in source.get("metrics", {}).items() if key == "trained"}
    manifest["serving"] = {}
    manifest["lineage"] = dict(source.get("lineage", {}), job_id=job_id, parent_version=spec.version)
    manifest["training"] = dict(source.get("training", {}), exported_on=device)
    manifest = _publish(models, spec.model, network, recipe, None, device, tuple(spec.formats), manifest, ctx,
                        images=images)
    return published_result(manifest)
