"""``ssdstack demo``: the whole product on a laptop, driven over REST.

Starts the local stack if it is not up, generates a synthetic dataset, uploads it, runs
one pipeline job (train -> export -> convert -> evaluate -> deploy) with the reduced
recipe, shows its progress, then detects objects in a held-out image with known boxes.
It fails loudly unless the served mAP@0.5 reaches the bar and a detection matches a known
box.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cli.client import Client
from ssdstack.datasets.coco import load_coco_split
from ssdstack.datasets.synth import synthesize
from ssdstack.detection.boxes import box_iou

MIN_MAP50 = 0.5
MIN_IOU = 0.5


@dataclass(frozen=True)
class DemoConfig:
    """Embedded defaults: sized so the pipeline finishes in a few minutes on 2 CPU cores."""

    images: int = 400
    classes: int = 3
    seed: int = 7
    architecture: str = "ssd_lite_mobilenet_v2"
    epochs: int = 15
    batch_size: int = 16
    lr: float = 0.05
    model: str = "demo"
    timeout_s: float = 1500


def upload_synthetic(client: Client, folder: Path, name: str, images: int, classes: int, seed: int):
    """Generate a synthetic dataset in ``folder``, zip it and upload it as ``name``;
    ``(its summary, the gateway's description)``."""
    summary = synthesize(folder / "dataset", images=images, classes=classes, seed=seed)
    return summary, client.upload_dataset(zip_folder(folder / "dataset", folder / "dataset.zip"), name)


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out.write(path, path.relative_to(folder).as_posix())
    return archive


class ProgressView:
    """A progress bar on a terminal; plain lines (at most one per epoch or stage) otherwise.
    Each line starts with the job's stage and its place in the job (``[2/5] export``)."""

    def __init__(self, stream=sys.stdout):
        self.stream = stream
        self.tty = stream.isatty()
        self.last_key = None

    def __call__(self, job: dict) -> None:
        p = job.get("progress") or {}
        names = [entry["name"] for entry in job.get("stages") or []]
        stage = job.get("stage") if job.get("stage") in names else p.get("stage", job["state"])
        place = f"[{names.index(stage) + 1}/{len(names)}] " if stage in names else ""
        if p.get("stage") == "train" and "epoch" in p:
            done = ((p["epoch"] - 1) * p["steps_per_epoch"] + p["step"]) / (p["epochs"] * p["steps_per_epoch"])
            bar = "#" * int(done * 30)
            text = (f"{place}train [{bar:<30}] {done:6.1%} epoch {p['epoch']}/{p['epochs']} step {p['step']}/"
                    f"{p['steps_per_epoch']} loss {p['loss']:.4f} {p.get('images_per_s', 0):.1f} img/s "
                    f"ETA {int(p.get('eta_s', 0)) // 60}:{int(p.get('eta_s', 0)) % 60:02d}")
            key = ("train", p["epoch"])
        elif "evaluated" in p and p.get("stage") in ("evaluate", "evaluate_trained"):
            text = f"{place}{stage}: {p['evaluated']}/{p['to_evaluate']} images"
            key = (stage, p.get("stage"), job.get("worker"))
        else:
            step = p.get("stage")
            shown = f"{stage}: {step}" if step and step != stage and not step.startswith("queued:") else stage
            text = f"{place}{shown} ({job['state']})"
            key = (stage, step)
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
        elif key != self.last_key:
            self.stream.write(text + "\n")
            self.stream.flush()
        self.last_key = key

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def held_out_image(folder: Path, seed: int, classes: int) -> tuple[bytes, np.ndarray, list[str], list[int]]:
    """A fresh synthetic image the model never saw, with its boxes (pixels x1,y1,x2,y2) and labels."""
    synthesize(folder, images=2, classes=classes, seed=seed)
    split = load_coco_split(folder, "train")
    record = split.records[0]
    labels = [split.label_names[label - 1] for label in record.labels]
    return record.path.read_bytes(), record.boxes, labels, [record.width, record.height]


def best_match(detections: list[dict], boxes: np.ndarray, labels: list[str]) -> tuple[float, dict | None]:
    """Highest IoU between a detection and a known box of the same label."""
    best, found = 0.0, None
    for det in detections:
        iou = box_iou(np.asarray([det["box"]], np.float32), boxes)[0]
        for index, value in enumerate(iou):
            if labels[index] == det["label"] and value > best:
                best, found = float(value), det
    return best, found


def run_demo(client: Client, work: Path, config: DemoConfig, out=sys.stdout) -> int:
    """Returns a process exit status: 0 when every check passed."""
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    started = time.monotonic()
    name = f"synth-{int(time.time())}"
    summary, info = upload_synthetic(client, work, name, config.images, config.classes, config.seed)
    say(f"generated {summary.train_images} train + {summary.val_images} val images of {', '.join(summary.categories)}")
    say(f"uploaded dataset {info['name']} ({info['size_bytes'] / 1e6:.1f} MB)")

    spec = {"type": "pipeline", "dataset": name, "model": config.model, "architecture": config.architecture,
            "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr, "checkpoint_every": 5}
    job = client.submit(spec)
    say(f"pipeline job {job['id']} submitted: {' -> '.join(stage['name'] for stage in job['stages'])}")
    view = ProgressView(out)
    try:
        job = client.wait(job["id"], timeout=config.timeout_s, on_update=view)
    finally:
        view.close()
    if job["state"] != "succeeded":
        say(f"FAILED: pipeline job {job['state']}: {json.dumps(job.get('error'), indent=2)}")
        return 1
    result = job["result"]
    trained, served = result["metrics"]["trained"], result["metrics"]["served"]
    say(f"model {result['model']} version {result['version']} deployed; converter check "
        f"{json.dumps(result['conversion']['check'])}")
    say(f"trained mAP (MindSpore) {trained['AP']:.3f}  mAP@0.5 {trained['AP50']:.3f}")
    say(f"served  mAP (ONNX Runtime) {served['AP']:.3f}  mAP@0.5 {served['AP50']:.3f}")

    image, boxes, labels, size = held_out_image(work / "held-out", seed=config.seed + 1000, classes=config.classes)
    answer = client.detect(image, filename="held-out.jpg", model=config.model)
    say(f"POST /v1/detect on a held-out {size[0]}x{size[1]} image with {len(labels)} known objects "
        f"({answer['latency_ms']} ms):")
    for det in answer["detections"][:10]:
        say(f"  {det['label']:<16} {det['score']:.3f}  box {det['box']}")
    iou, matched = best_match(answer["detections"], boxes, labels)
    checks = [(served["AP50"] >= MIN_MAP50, f"served mAP@0.5 {served['AP50']:.3f} >= {MIN_MAP50}"),
              (iou >= MIN_IOU, f"a detection matches a known box at IoU {iou:.2f} >= {MIN_IOU}")]
    for passed, text in checks:
        say(("ok   " if passed else "FAIL ") + text)
    say(f"demo took {time.monotonic() - started:.0f} s")
    return 0 if all(passed for passed, _ in checks) else 1
