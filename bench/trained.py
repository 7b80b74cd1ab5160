"""The model ``make bench`` measures: ``ssd300_mobilenet_v2`` trained by the real stack
(a pipeline job, then an INT8 convert job gated on 200 validation images) until its FP32
artefact yields at least ``DETECTIONS_PER_IMAGE`` detections per validation image at the
served score threshold. NMS and the box decoder cost what the scores make them cost, so
an untrained model would measure the wrong thing.

The stack's folder, ``bench/cache/stack`` (store and Redis), is kept: a rerun with the
same recipe reuses the model. ``bench/cache/model.json`` says which version it is, the
commit that trained it and how many detections it yields.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys

import numpy as np

from bench.report import REPO_ROOT
from bench.untrained import API_KEY, local_stack
from cli.client import Client
from cli.demo import zip_folder
from cli.localstack import LocalStack
from ssdstack.datasets.coco import load_coco_split
from ssdstack.datasets.synth import synthesize
from ssdstack.model_store import ModelStore

CACHE = REPO_ROOT / "bench" / "cache"
MODEL = "bench"
DATASET = "benchsynth"
# 500 images, 40 % of them (200, the INT8 gate's minimum) for validation.
RECIPE = {"architecture": "ssd300_mobilenet_v2", "images": 500, "val_fraction": 0.4, "classes": 3, "seed": 7,
          "epochs_per_round": 12, "batch_size": 16, "lr": 0.05, "max_rounds": 3}
# The synthetic images hold 1 to 4 objects (2.5 on average).
DETECTIONS_PER_IMAGE = 2.0


def _key() -> str:
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:16]


def stack(**env: str) -> LocalStack:
    """A (not started) local stack on the cached store, with ``env`` added."""
    return local_stack(CACHE / "stack", SSDSTACK_RATE_LIMIT="", **env)


def detections_per_image(store: ModelStore, version: int) -> float:
    """Mean FP32 detections per validation image at the served thresholds."""
    from inferencer.backends import select_engine

    manifest = store.manifest(MODEL, version)
    engine = select_engine("onnxruntime")
    engine.load(store.version_dir(MODEL, version), manifest)
    detector = engine.detector(manifest, MODEL, version)
    split = load_coco_split(store.root / "datasets" / DATASET, "val")
    return float(np.mean([len(detector.detect(r.path.read_bytes(), exif_transpose=False)["detections"])
                          for r in split.records]))


def _train(commit: str) -> dict:
    trainer = stack()
    try:
        trainer.up(wait_ready=True, timeout=180)
        client = Client(f"http://127.0.0.1:{trainer.gateway_port}", API_KEY, timeout=120)
        store = ModelStore(trainer.store_dir)
        if not (trainer.store_dir / "datasets" / DATASET).exists():
            folder = CACHE / "dataset"
            shutil.rmtree(folder, ignore_errors=True)  # what an interrupted run left
            synthesize(folder / "images", images=RECIPE["images"], classes=RECIPE["classes"], seed=RECIPE["seed"],
                       val_fraction=RECIPE["val_fraction"])
            client.upload_dataset(zip_folder(folder / "images", folder / "dataset.zip"), DATASET)
        pretrained, rounds = None, []
        for _ in range(RECIPE["max_rounds"]):
            spec = {"type": "pipeline", "dataset": DATASET, "model": MODEL, "architecture": RECIPE["architecture"],
                    "epochs": RECIPE["epochs_per_round"], "batch_size": RECIPE["batch_size"], "lr": RECIPE["lr"],
                    "backend": "onnxruntime", **({"pretrained": pretrained} if pretrained else {})}
            print(f"training {RECIPE['architecture']}: round {len(rounds) + 1}", file=sys.stderr, flush=True)
            job = client.wait(client.submit(spec)["id"], timeout=6 * 3600, interval=5)
            if job["state"] != "succeeded":
                raise RuntimeError(f"the bench model's pipeline {job['state']}: {job.get('error')}")
            version = int(job["result"]["version"])
            rounds.append({"version": version, "detections_per_image": round(detections_per_image(store, version), 2)})
            if rounds[-1]["detections_per_image"] >= DETECTIONS_PER_IMAGE:
                break
            pretrained = f"{MODEL}:{version}"
        int8 = client.wait(client.submit({"type": "convert", "model": MODEL, "version": version,
                                          "backend": "onnxruntime", "precision": "int8"})["id"],
                           timeout=3600, interval=5)
        client.close()
    finally:
        trainer.down()
    return {"key": _key(), "recipe": RECIPE, "trained_at_commit": commit, "version": version, "rounds": rounds,
            "detections_per_image": rounds[-1]["detections_per_image"], "goal_detections_per_image": DETECTIONS_PER_IMAGE,
            "int8": {"state": int8["state"], "error": int8.get("error"),
                     "gate": (int8.get("result") or {}).get("conversion", {}).get("gate")}}


def trained_model(commit: str) -> dict:
    """The cached model's record (training it first when the cache is missing or was made
    with another recipe)."""
    record_file = CACHE / "model.json"
    if record_file.exists():
        record = json.loads(record_file.read_text())
        if record["key"] == _key():
            return record
    record = _train(commit)
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    return record
