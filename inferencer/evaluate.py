"""Served mAP: the deployed engine (not MindSpore) on a dataset split, scored by pycocotools.

Each image goes through the path ``/v1/detect`` uses (file bytes -> decode -> resize ->
engine -> NMS -> original pixels), so the number is what users get; only EXIF rotation
is left out, because COCO boxes are in the stored pixel frame.

The report (``ssdstack.evaluation.write_report``) is stored with the version under
``evaluation/<engine>-<dataset>-<split>/`` and listed in its manifest's artefacts.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

from inferencer.backends import select_engine
from ssdstack.datasets.coco import load_coco_split
from ssdstack.datasets.store import DatasetStore
from ssdstack.errors import InvalidInput
from ssdstack.evaluation import EngineEvaluation, evaluate_detections, report_dir, served_results, stage_report
from ssdstack.jobs.context import JobCancelled, JobContext
from ssdstack.model_store import ModelStore, sha256_file, utc_now


def evaluate_served(store_dir, name: str, version: int, dataset: str | None, split: str, engine_name: str,
                    ctx: JobContext, max_pixels: int = 50_000_000, engine_options: dict | None = None) -> dict:
    """Evaluate, store the report with the version and record ``metrics.served``; returns that record.

    The record: ``{"coco": 12 numbers, "per_class": table, "engine", "dataset", "split",
    "images", "images_per_s", "evaluated_at", "report": folder in the version}``.
    """
    models = ModelStore(store_dir)
    manifest = models.manifest(name, version)
    dataset = dataset or manifest["lineage"]["dataset"]
    data = load_coco_split(DatasetStore(store_dir).path(dataset), split)
    if list(data.label_names) != manifest["labels"] or list(data.category_ids) != manifest["category_ids"]:
        raise InvalidInput(f"dataset {dataset!r} has categories {dict(zip(data.category_ids, data.label_names))}, "
                           f"model {name} v{version} was trained on "
                           f"{dict(zip(manifest['category_ids'], manifest['labels']))}")
    engine = select_engine(engine_name, engine_options, manifest)
    engine.load(models.version_dir(name, version), manifest)
    detector = engine.detector(manifest, name, version)
    started = time.monotonic()

    def each(done: int) -> None:
        if ctx.cancelled():
            raise JobCancelled("cancelled during evaluation")
        ctx.progress(stage="evaluate", evaluated=done, to_evaluate=len(data.records))

    results = served_results(detector, data.records, manifest["category_ids"], max_pixels, each)
    seconds = time.monotonic() - started
    evaluation = EngineEvaluation(engine=engine.name, images=len(data.records),
                                  images_per_s=round(len(data.records) / max(seconds, 1e-9), 2), results=results,
                                  scores=evaluate_detections(data.annotation_file, results))
    metrics = dict(evaluation.summary(), dataset=dataset, split=split, evaluated_at=utc_now(),
                   report=report_dir(engine.name, dataset, split))

    def record_metrics(current: dict) -> None:
        current.setdefault("metrics", {})["served"] = metrics

    add_report(models, name, version, evaluation, dataset, split, record_metrics)
    ctx.log(f"served mAP {metrics['coco']['AP']:.4f}, mAP@0.5 {metrics['coco']['AP50']:.4f} ({engine.name}); "
            f"report in {metrics['report']}")
    return metrics


def add_report(models: ModelStore, name: str, version: int, evaluation: EngineEvaluation, dataset: str,
               split: str, update: Callable[[dict], None]) -> dict:
    """Store the report in the published version, list its files as artefacts, apply ``update``.

    A report of the same engine, dataset and split is replaced. The folder is written in
    staging and renamed in under the manifest lock, so readers see a whole report; only a
    crash between that rename and the manifest write leaves files the manifest describes
    with old hashes (``ModelStore.verify`` names them, and evaluating again repairs it).
    Returns the new manifest.
    """
    folder = report_dir(evaluation.engine, dataset, split)
    version_folder = models.version_dir(name, version)
    with models.staging() as staged:
        artefacts = stage_report(staged, evaluation, dataset, split)

        def swap_in(manifest: dict) -> None:
            target, replaced = version_folder / folder, staged / "replaced"  # removed with staging
            target.parent.mkdir(exist_ok=True)
            if target.exists():
                os.rename(target, replaced)
            try:
                os.rename(staged / folder, target)
            except OSError:
                if replaced.exists():
                    os.rename(replaced, target)
                raise
            listed = manifest["artefacts"]
            for kind in [kind for kind, entry in listed.items() if entry["file"].startswith(f"{folder}/")]:
                del listed[kind]
            # ModelStore.add_artefacts copies flat files by name; these live in a subfolder.
            listed.update({kind: {"file": file, "sha256": sha256_file(version_folder / file),
                                  "bytes": (version_folder / file).stat().st_size}
                           for kind, file in artefacts.items()})
            update(manifest)

        return models.update_manifest(name, version, swap_in)
