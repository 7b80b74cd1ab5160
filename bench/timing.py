"""Latency summaries for the benchmarks."""
from __future__ import annotations

import numpy as np


def summarise(latencies_s: list[float], wall_s: float | None = None) -> dict:
    """images/s (from wall time when requests overlapped, else from the latencies),
    p50 and p99 in milliseconds."""
    latencies = np.asarray(latencies_s)
    wall = wall_s if wall_s is not None else float(latencies.sum())
    return {"requests": int(latencies.size), "images_per_s": round(latencies.size / wall, 2),
            "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
            "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2)}
