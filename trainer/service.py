"""The trainer's stages that produce weights to publish (:class:`Trained`): train, import
and load. :mod:`trainer.publish` holds the export stage that publishes them.

``train_weights`` loads and checks the dataset, trains (resuming from
``<store>/jobs/<job>/checkpoints``), measures the trained mAP with pycocotools and
leaves the weights and the report in the job's run folder. ``import_weights`` checks an
existing checkpoint against an architecture; ``load_version`` takes a published
version's weights to export them again.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import mindspore as ms

from ssdstack.checkpoints import CheckpointStore
from ssdstack.datasets.coco import CocoSplit, load_coco_split
from ssdstack.datasets.store import DatasetStore
from ssdstack.datasets.validation import validate_coco_dataset
from ssdstack.errors import InvalidDataset
from ssdstack.evaluation import EngineEvaluation, report_dir, stage_report
from ssdstack.jobs.context import JobContext
from ssdstack.jobs.records import JOB_ID
from ssdstack.jobs.specs import ExportSpec, ImportSpec, TrainSpec
from ssdstack.jobs.stage_data import Trained
from ssdstack.model_store import ModelStore
from ssdstack.recipes import Recipe, get_recipe
from trainer.ascendjob import Cluster
from trainer.data import TrainBatches
from trainer.device import resolve_device, set_device
from trainer.evaluate import evaluate_network
from trainer.mindrecord import MindRecordSource, mindrecord_for
from trainer.network import build_ssd
from trainer.publish import version_manifest
from trainer.ranks import train_on_ascendjob, train_on_ranks
from trainer.train import TrainConfig, TrainOutcome, train_network
from trainer.transfer import load_backbone, load_pretrained, read_checkpoint

# The zoo's FPN training wrapper clips with clip_by_global_norm's default norm.
ZOO_CLIP_NORM = 1.0
# In the job's run folder: the weights the export stage publishes, and the report beside them.
TRAINED_WEIGHTS = "trained.ckpt"
REPORT_FOLDER = "report"


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


def run_dir_for(store_dir: Path, job_id: str) -> Path:
    """The job's folder on the store: checkpoints, the trained weights and their report."""
    return Path(store_dir) / "jobs" / job_id


def remove_job_folders(store_dir: Path, work_dir: Path, job_id: str) -> None:
    """Delete the job's run folder and its scratch in ``work_dir``, once nothing will resume it."""
    shutil.rmtree(run_dir_for(store_dir, job_id), ignore_errors=True)
    shutil.rmtree(Path(work_dir) / job_id, ignore_errors=True)


def remove_unneeded_job_folders(store_dir: Path, work_dir: Path, done_here: Callable[[str], bool]) -> list[str]:
    """Delete the run folders and scratch of every job ``done_here`` says no trainer stage
    needs any more (a job the reaper ended, or one whose worker died after it ended); the
    job ids whose folders went."""
    folders = [Path(store_dir) / "jobs", Path(work_dir)]
    ids = sorted({entry.name for folder in folders if folder.is_dir() for entry in folder.iterdir()
                  if entry.is_dir() and JOB_ID.fullmatch(entry.name)})
    removed = [job_id for job_id in ids if done_here(job_id)]
    for job_id in removed:
        remove_job_folders(store_dir, work_dir, job_id)
    return removed


def checked_dataset(name: str, store_dir: Path, ctx: JobContext) -> tuple[dict, object, CocoSplit, CocoSplit]:
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
    cached = mindrecord_for(store_dir, spec.dataset, "train")
    ctx.log(f"{'reusing' if cached.reused else 'wrote'} MindRecord {cached.file.name}")
    batches = TrainBatches(MindRecordSource(cached.file), recipe, config.batch_size, config.seed, rank, group_size)

    def val_map(network) -> float:
        return evaluate_network(network, recipe, val_split, ctx).scores.coco["AP"]

    return train_network(recipe, train_split, config, run_dir, ctx, batches=batches,
                         initialise=_initialiser(spec, store_dir, ctx),
                         evaluate=val_map if config.eval_every and rank == 0 else None,
                         rank=rank, group_size=group_size)


def _in_store(path: Path, store_dir: Path) -> str:
    """``path`` relative to the store when it lies inside it (the store may be mounted
    elsewhere on another worker), else absolute."""
    path, store_dir = path.resolve(), store_dir.resolve()
    return path.relative_to(store_dir).as_posix() if path.is_relative_to(store_dir) else str(path)


def _save_weights(network, store_dir: Path, run_dir: Path) -> str:
    """Save ``network`` as the run's weights to publish; their :class:`Trained` path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    partial = run_dir / f".partial-{TRAINED_WEIGHTS}"
    ms.save_checkpoint(network, str(partial))
    partial.replace(run_dir / TRAINED_WEIGHTS)
    return _in_store(run_dir / TRAINED_WEIGHTS, store_dir)


def _save_report(evaluation: EngineEvaluation, dataset: str, store_dir: Path, run_dir: Path) -> dict:
    """Write the trained-mAP report into the run folder; the :class:`Trained` fields naming it."""
    report = run_dir / REPORT_FOLDER
    shutil.rmtree(report, ignore_errors=True)  # a crashed delivery's
    return {"report_files": stage_report(report, evaluation, dataset, "val"),
            "report_root": _in_store(report, store_dir)}


def train_weights(spec: TrainSpec, store_dir: Path, work_dir: Path, ctx: JobContext,
                  default_device: str = "auto", cluster: Cluster | None = None) -> Trained:
    """The train stage. ``cluster``: where the ranks of a multi-node job (``spec.nodes > 1``) run."""
    store_dir = Path(store_dir)
    recipe = get_recipe(spec.architecture)
    dataset_info, summary, train_split, val_split = checked_dataset(spec.dataset, store_dir, ctx)
    device = resolve_device(spec.device, default_device)
    set_device(device, work_dir)
    config = train_config(spec, recipe, device)
    run_dir = run_dir_for(store_dir, ctx.job_id)
    ctx.log(f"training {spec.architecture} on {spec.dataset} ({len(train_split.records)} images, "
            f"{len(train_split.label_names)} classes) on {device} for {config.epochs} epochs, AMP {config.amp_level}")
    if spec.nodes > 1:
        outcome = train_on_ascendjob(spec, recipe, store_dir, ctx.job_id, run_dir, cluster, ctx)
    elif spec.devices > 1:
        outcome = train_on_ranks(spec, recipe, device, store_dir, work_dir, ctx.job_id, run_dir, ctx)
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
                "resumed_from_epoch": outcome.resumed_from_epoch, "resumed_from_step": outcome.resumed_from_step,
                "seconds": round(outcome.seconds, 1), "input_wait_s": round(outcome.input_wait_s, 2),
                "input_wait_share": round(outcome.input_wait_s / max(outcome.seconds, 1e-9), 4),
                "initialised": outcome.initialised, "best": outcome.best, "eval_history": outcome.history,
                "dataset_warnings": {"count": summary.warning_count, "first": summary.warnings}}
    lineage = {"job_id": ctx.job_id, "dataset": spec.dataset, "dataset_sha256": dataset_info.get("sha256"),
               "parent_version": None, "pretrained": spec.pretrained, "backbone_checkpoint": spec.backbone_checkpoint}
    manifest = version_manifest(recipe, train_split.label_names, train_split.category_ids, {"trained": trained},
                                training, lineage)
    return Trained(model=spec.model, manifest=manifest, device=device, reference_dataset=spec.dataset,
                   weights=_save_weights(network, store_dir, run_dir),
                   **_save_report(evaluation, spec.dataset, store_dir, run_dir))


def import_weights(spec: ImportSpec, store_dir: Path, work_dir: Path, ctx: JobContext,
                   default_device: str = "auto", checkpoint: Path | None = None) -> Trained:
    """The import stage: check an existing checkpoint against ``spec.architecture`` with
    ``len(spec.labels)`` classes (every parameter present, every shape equal) and measure
    its mAP on ``spec.dataset``'s val split when one is named.

    ``checkpoint`` overrides the uploaded file (the CLI imports a local path).
    """
    store_dir = Path(store_dir)
    recipe = get_recipe(spec.architecture)
    path = checkpoint or checkpoint_path(store_dir, spec.checkpoint)
    val_split = None
    if spec.dataset is not None:
        val_split = load_coco_split(DatasetStore(store_dir).path(spec.dataset), "val")
        if list(val_split.label_names) != list(spec.labels):
            raise InvalidDataset(f"dataset {spec.dataset!r} has classes {list(val_split.label_names)}, "
                                 f"the import names {list(spec.labels)}")
    device = resolve_device(spec.device, default_device)
    set_device(device, work_dir)
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
    lineage = {"job_id": ctx.job_id, "dataset": spec.dataset, "dataset_sha256": None, "parent_version": None}
    manifest = version_manifest(recipe, spec.labels, category_ids, metrics, training, lineage)
    report = {} if evaluation is None else _save_report(evaluation, spec.dataset, store_dir,
                                                          run_dir_for(store_dir, ctx.job_id))
    return Trained(model=spec.model, manifest=manifest, device=device, reference_dataset=spec.dataset,
                   weights=_in_store(path, store_dir), **report)


def load_version(spec: ExportSpec, store_dir: Path, ctx: JobContext, default_device: str = "auto") -> Trained:
    """The load stage: a version's weights, to export again in ``spec.formats`` as a new
    version of the same model whose lineage names the source; its reference images are the
    source's, and its trained mAP carries over (served figures belong to the source's
    conversions)."""
    store_dir = Path(store_dir)
    models = ModelStore(store_dir)
    source = models.manifest(spec.model, spec.version)
    device = resolve_device(spec.device, default_device)
    manifest = {key: value for key, value in source.items()
                if key not in ("name", "version", "created_at", "schema", "schema_version", "artefacts", "serving",
                               "metrics")}
    manifest["metrics"] = {key: value for key, value in source.get("metrics", {}).items() if key == "trained"}
    manifest["serving"] = {}
    manifest["lineage"] = dict(source.get("lineage", {}), job_id=ctx.job_id, parent_version=spec.version)
    manifest["training"] = dict(source.get("training", {}), exported_on=device)
    ctx.log(f"exporting {spec.model} v{spec.version} again as {', '.join(spec.formats)} on {device}")
    folder = models.version_dir(spec.model, spec.version).relative_to(store_dir)
    return Trained(model=spec.model, manifest=manifest, device=device, formats=list(spec.formats),
                   weights=(folder / source["artefacts"]["checkpoint"]["file"]).as_posix(),
                   reference_file=(folder / source["artefacts"]["reference"]["file"]).as_posix())
