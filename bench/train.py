"""``make bench-train``: training figures, written to the ``training`` section of
``bench/results.json`` (the other sections are kept).

1. Every architecture at its real input size, batch 8, on this machine's CPU: train step
   time, images/s, peak memory, and the data pipeline's images/s against what a step
   consumes (goal >= 3x, so that training never waits for data).
2. The reduced recipe on the synthetic set: mAP@0.5 and mAP@[.5:.95] on the val split
   against minutes of CPU training, one point per epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ssdstack.datasets.synth import synthesize

REPO_ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURES = ("ssd300_mobilenet_v2", "ssd_vgg16", "ssd_resnet34", "ssd_mobilenet_v1_fpn", "ssd_resnet50_fpn",
                 "ssd_lite_mobilenet_v2")
DATA_GOAL = 3.0


def probe(architecture: str, dataset: Path, steps: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), GLOG_v="3")
    done = subprocess.run([sys.executable, "-m", "bench.train_probe", architecture, str(dataset),
                           "--steps", str(steps)], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        return {"architecture": architecture, "error": done.stderr.strip().splitlines()[-1:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["data_goal_met"] = result["data_over_train"] >= DATA_GOAL
    return result


def map_curve(dataset: Path, epochs: int, work: Path) -> dict:
    """Train the reduced recipe as the demo does and evaluate after every epoch."""
    import mindspore as ms

    from ssdstack.datasets.coco import load_coco_split
    from ssdstack.jobs.context import LocalContext
    from ssdstack.recipes import get_recipe
    from trainer.evaluate import evaluate_network
    from trainer.train import TrainConfig, train_network

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", save_graphs_path=str(work))
    recipe = get_recipe("ssd_lite_mobilenet_v2")
    train, val = load_coco_split(dataset, "train"), load_coco_split(dataset, "val")
    config = TrainConfig(epochs=epochs, batch_size=16, lr=0.05, warmup_epochs=1, weight_decay=4e-5, momentum=0.9,
                         loss_scale=1024.0, checkpoint_every=epochs, seed=0, eval_every=1)
    points, evaluating = [], [0.0]
    started = time.monotonic()

    def evaluate(network) -> float:
        began = time.monotonic()
        training_min = (began - started - evaluating[0]) / 60  # evaluation time is not training time
        coco = evaluate_network(network, recipe, val, LocalContext(quiet=True)).scores.coco
        evaluating[0] += time.monotonic() - began
        points.append({"epoch": len(points) + 1, "train_minutes": round(training_min, 2),
                       "AP50": round(coco["AP50"], 4), "AP": round(coco["AP"], 4)})
        return coco["AP"]

    train_network(recipe, train, config, work / "run", LocalContext(quiet=True), evaluate=evaluate)
    return {"architecture": recipe.architecture, "input_size": recipe.image_size, "train_images": len(train.records),
            "val_images": len(val.records), "batch_size": 16, "points": points}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per architecture after the first")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of the reduced mAP curve")
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES))
    args = parser.parse_args()

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        scratch = Path(scratch)
        # Photos of the sizes SSD is trained on: resized to 300 or 640 like real data.
        probe_set = synthesize(scratch / "probe", images=64, classes=3, seed=1, val_fraction=0.1,
                               min_side=480, max_side=800).out_dir
        architectures = []
        for architecture in args.architectures:
            print(f"probing {architecture}", file=sys.stderr, flush=True)
            architectures.append(probe(architecture, probe_set, args.steps))
            print(json.dumps(architectures[-1]), file=sys.stderr, flush=True)
        curve_set = synthesize(scratch / "curve", images=400, classes=3, seed=7, val_fraction=0.2).out_dir
        curve = map_curve(curve_set, args.epochs, scratch)
    results["training"] = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": "synthetic images (3 classes + background); CPU, float32 (AMP O0)",
        "architectures": architectures,
        "reduced_map_curve": curve,
    }
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["training"], indent=2))


if __name__ == "__main__":
    main()
