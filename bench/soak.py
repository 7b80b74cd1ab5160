"""``make soak``: detect load held at 80 % of the measured maximum for five minutes, on
the local stack over loopback; written to ``bench/soak.json`` with the commit.

1. The maximum: ``POST /v1/detect`` at concurrency 16 until ``--probe`` requests have
   been answered (images/s).
2. The soak: requests started at 80 % of that rate (open loop: a new request every
   1 / rate seconds, whatever the answers do), for ``--seconds``, at most
   ``rate * seconds`` of them, with at most 64 in flight. Every answer that is not 200
   counts as an error.
3. The resident memory (RSS) of every process of the stack after a warm-up and at the
   end; the goal is under 10 % growth each, and 0 errors.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.report import REPO_ROOT
from bench.timing import summarise
from bench.untrained import API_KEY, sample_images, stack_serving_a_model
from cli.localstack import LocalStack

MAX_IN_FLIGHT = 64
RSS_GOAL = 0.10


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def stack_rss(stack: LocalStack) -> dict[str, int]:
    """Each service's process (the worker or gateway its supervisor runs; Redis itself)."""
    pids = {spec.name: stack.supervised_pid(spec.name) or stack.status()[spec.name]["pid"]
            for spec in stack.services()}
    return {name: rss_bytes(pid) for name, pid in pids.items()}


def maximum(http: httpx.Client, images: list[bytes], requests: int) -> float:
    def one(i: int) -> None:
        http.post("/v1/detect", files={"file": ("image.jpg", images[i % len(images)])}).raise_for_status()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(32)))  # warm every thread and connection
        started = time.perf_counter()
        list(pool.map(one, range(requests)))
        return requests / (time.perf_counter() - started)


def soak(http: httpx.Client, images: list[bytes], rate: float, seconds: float) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)

    def one(i: int) -> None:
        started = time.perf_counter()
        try:
            answer = http.post("/v1/detect", files={"file": ("image.jpg", images[i % len(images)])})
            outcome = "ok" if answer.status_code == 200 else f"http {answer.status_code}"
        except httpx.HTTPError as error:
            outcome = type(error).__name__
        finally:
            slots.release()
        with lock:
            if outcome == "ok":
                latencies.append(time.perf_counter() - started)
            else:
                errors[outcome] = errors.get(outcome, 0) + 1

    total = int(rate * seconds)
    started = time.perf_counter()
    with ThreadPoolExecutor(MAX_IN_FLIGHT) as pool:
        for i in range(total):
            time.sleep(max(0.0, started + i / rate - time.perf_counter()))
            if not slots.acquire(timeout=60):
                errors["no free slot in 60 s"] = errors.get("no free slot in 60 s", 0) + 1
                continue
            pool.submit(one, i)
    wall = time.perf_counter() - started
    return dict(summarise(latencies, wall), offered=total, errors=errors, error_count=sum(errors.values()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench/soak.json")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--probe", type=int, default=300)
    args = parser.parse_args()

    work = REPO_ROOT / "bench" / "work"
    stack, version = stack_serving_a_model(work, "ssd300_mobilenet_v2", SSDSTACK_RATE_LIMIT="")
    images = sample_images(work)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    try:
        stack.up(wait_ready=True, timeout=180)
        with httpx.Client(base_url=f"http://127.0.0.1:{stack.gateway_port}", headers={"X-API-Key": API_KEY},
                          timeout=60, limits=httpx.Limits(max_connections=MAX_IN_FLIGHT)) as http:
            top = maximum(http, images, args.probe)
            before = stack_rss(stack)
            held = soak(http, images, 0.8 * top, args.seconds)
            after = stack_rss(stack)
    finally:
        stack.down()
    growth = {name: round((after[name] - before[name]) / before[name], 4) for name in before}
    results = {
        "commit": commit, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"name": "bench", "version": version},
        "maximum_images_per_s": round(top, 2), "target_images_per_s": round(0.8 * top, 2),
        "seconds": args.seconds, "soak": held,
        "rss_bytes": {"after_warm_up": before, "at_end": after}, "rss_growth": growth,
        "goals": {"errors": 0, "rss_growth_below": RSS_GOAL},
        "met": held["error_count"] == 0 and all(value < RSS_GOAL for value in growth.values()),
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
