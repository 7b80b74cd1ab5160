"""``make bench``: engine and service benchmarks, written to ``bench/results.json``.

1. ONNX Runtime (the converted, preprocessing-folded model) vs MindSpore MINDIR inference
   of the same ``ssd300_mobilenet_v2``: images/s, p50, p99 (goal: ORT >= 3x).
2. ``POST /v1/detect`` through the real stack (gateway -> Redis -> inferencer) at
   concurrency 4 and 16 vs the in-process detector at the same concurrency (goal >= 0.85x).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from bench.timing import summarise
from cli.localstack import LocalStack
from cli.processes import free_port
from converter.service import convert_version
from inferencer.backends import select_engine
from ssdstack.datasets.synth import synthesize
from ssdstack.detection.detector import Detector
from ssdstack.jobs.context import LocalContext
from ssdstack.model_store import ModelStore

REPO_ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = "ssd300_mobilenet_v2"
API_KEY = "bench-key-0123"


def _python_module(module: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), GLOG_v="3")
    done = subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def stack_serving_a_model(work: Path, **env: str) -> tuple[LocalStack, ModelStore, int]:
    """A local stack (not started) in a fresh ``work``, whose store holds model "bench"
    (an untrained ARCHITECTURE, converted for ONNX Runtime) deployed; its version."""
    shutil.rmtree(work, ignore_errors=True)
    stack = LocalStack(work / "stack", redis_port=free_port(), gateway_port=free_port(), api_key=API_KEY,
                       extra_env={"SSDSTACK_INFER_BACKEND": "onnxruntime", **env})
    store = ModelStore(stack.store_dir)
    version = int(_python_module("bench.build_model", str(stack.store_dir), "bench", ARCHITECTURE))
    convert_version(store, "bench", version, "onnxruntime", LocalContext(quiet=True))
    store.deploy("bench", version)
    return stack, store, version


def sample_images(work: Path) -> list[bytes]:
    """The JPEG files the detect benchmarks send: synthetic shapes, 20 sizes."""
    synthesize(work / "images", images=20, classes=3, seed=11)
    return [p.read_bytes() for p in sorted((work / "images" / "train").glob("*.jpg"))]


def engine_benchmark(version_dir: Path, manifest: dict, iterations: int) -> dict:
    engine = select_engine("onnxruntime")
    engine.load(version_dir, manifest)
    images = np.load(version_dir / manifest["artefacts"]["reference"]["file"])["images"]
    for image in images[:3]:
        engine.predict(image)
    latencies = []
    for i in range(iterations):
        started = time.perf_counter()
        engine.predict(images[i % len(images)])
        latencies.append(time.perf_counter() - started)
    ort = summarise(latencies)
    mindspore = json.loads(_python_module("bench.mindspore_engine", str(version_dir), str(iterations)))
    return {"onnxruntime": ort, "mindspore_mindir": mindspore,
            "speedup": round(ort["images_per_s"] / mindspore["images_per_s"], 2), "goal": ">= 3x",
            "note": "single stream, batch 1, 300x300; MindSpore time includes numpy normalisation, "
                    "ONNX Runtime has it folded into the graph"}


def _concurrent(call, payloads: list[bytes], concurrency: int) -> dict:
    latencies: list[float] = []

    def one(data: bytes) -> None:
        started = time.perf_counter()
        call(data)
        latencies.append(time.perf_counter() - started)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, payloads[:concurrency]))  # warm up every thread and connection
        latencies.clear()
        started = time.perf_counter()
        list(pool.map(one, payloads))
        wall = time.perf_counter() - started
    return summarise(latencies, wall)


def service_benchmark(stack: LocalStack, detector: Detector, images: list[bytes], requests: int) -> dict:
    payloads = [images[i % len(images)] for i in range(requests)]
    base = f"http://127.0.0.1:{stack.gateway_port}"
    results = {}
    for concurrency in (4, 16):
        in_process = _concurrent(lambda data: detector.detect(data), payloads, concurrency)
        with httpx.Client(base_url=base, headers={"X-API-Key": API_KEY}, timeout=60,
                          limits=httpx.Limits(max_connections=concurrency)) as http:
            def post(data: bytes) -> None:
                response = http.post("/v1/detect", files={"file": ("image.jpg", data)})
                response.raise_for_status()
            rest = _concurrent(post, payloads, concurrency)
        results[f"concurrency_{concurrency}"] = {
            "rest": rest, "in_process": in_process,
            "ratio": round(rest["images_per_s"] / in_process["images_per_s"], 3), "goal": ">= 0.85x"}
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    work = REPO_ROOT / "bench" / "work"
    stack, store, version = stack_serving_a_model(work)
    manifest = store.manifest("bench", version)
    version_dir = store.version_dir("bench", version)

    results = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                           "python": platform.python_version()},
               "model": {"architecture": ARCHITECTURE, "image_size": manifest["image_size"],
                         "priors": manifest["priors"]["count"]},
               "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    results["engine"] = engine_benchmark(version_dir, manifest, args.iterations)
    print(json.dumps(results["engine"], indent=2), flush=True)

    images = sample_images(work)
    engine = select_engine("onnxruntime")
    engine.load(version_dir, manifest)
    detector = engine.detector(manifest, "bench", version)
    try:
        stack.up(wait_ready=True, timeout=180)
        results["detect_service"] = service_benchmark(stack, detector, images, args.requests)
    finally:
        stack.down()
    print(json.dumps(results["detect_service"], indent=2), flush=True)
    out = Path(args.out)
    if out.exists():  # `make bench-train` writes its own section: keep it
        results = dict(json.loads(out.read_text()), **results)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
