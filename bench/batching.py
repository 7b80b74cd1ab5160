"""Dynamic batching on and off: ``POST /v1/detect`` images/s through the real stack at
client concurrency 1, 4, 16 and 64, the same inferencer (4 threads) either way:
``python -m bench.batching [--requests N]``; results under ``batching`` in
``bench/results.json``. The model is ``bench.run``'s (an untrained ARCHITECTURE)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import httpx

from bench.run import API_KEY, REPO_ROOT, _concurrent, sample_images, stack_serving_a_model

CONCURRENCY = (1, 4, 16, 64)
THREADS = 4


def detect_rates(port: int, images: list[bytes], requests: int) -> dict:
    payloads = [images[i % len(images)] for i in range(requests)]
    rates = {}
    for concurrency in CONCURRENCY:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": API_KEY}, timeout=60,
                          limits=httpx.Limits(max_connections=concurrency)) as http:
            def post(data: bytes) -> None:
                http.post("/v1/detect", files={"file": ("image.jpg", data)}).raise_for_status()
            rates[concurrency] = _concurrent(post, payloads, concurrency)
    return rates


def _commit() -> str:
    """The commit measured, with ``-dirty`` when the tree has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--requests", type=int, default=256)
    args = parser.parse_args()
    work = REPO_ROOT / "bench" / "work"
    images = None
    measured = {}
    for mode, env in (("on", {"SSDSTACK_INFER_BATCHING": "true", "SSDSTACK_INFER_MAX_BATCH": str(THREADS)}),
                      ("off", {"SSDSTACK_INFER_BATCHING": "false"})):
        stack, _, _ = stack_serving_a_model(work / mode, **env)
        images = images or sample_images(work)
        try:
            stack.up(wait_ready=True, timeout=180)
            measured[mode] = detect_rates(stack.gateway_port, images, args.requests)
        finally:
            stack.down()
    result = {"commit": _commit(), "inferencer_threads": THREADS, "requests": args.requests,
              "load_average_after": [round(value, 2) for value in os.getloadavg()], "model": "untrained",
              "by_concurrency": {str(c): {"on": measured["on"][c], "off": measured["off"][c],
                                          "on_over_off": round(measured["on"][c]["images_per_s"]
                                                               / measured["off"][c]["images_per_s"], 3)}
                                 for c in CONCURRENCY}}
    print(json.dumps(result, indent=1))
    out = Path(args.out)
    known = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps(dict(known, batching=result), indent=2) + "\n")


if __name__ == "__main__":
    main()
