"""Time MindSpore's own inference of a version's MINDIR (the reference engine).

    python -m bench.mindspore_engine VERSION_DIR ITERATIONS THREADS  -> one JSON line on stdout

Each iteration is what a MindSpore-served request costs: normalise the resized uint8
image in numpy, then run the MINDIR graph.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from bench.timing import summarise


def main(version_dir: str, iterations: str, threads: str) -> None:
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", runtime_num_threads=int(threads))
    folder = Path(version_dir)
    manifest = json.loads((folder / "manifest.json").read_text())
    graph = nn.GraphCell(ms.load(str(folder / manifest["artefacts"]["mindir"]["file"])))
    images = np.load(folder / manifest["artefacts"]["reference"]["file"])["images"]
    mean = np.asarray(manifest["preprocessing"]["mean"], np.float32)
    std = np.asarray(manifest["preprocessing"]["std"], np.float32)

    def run(image: np.ndarray) -> None:
        x = ((image.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None]
        boxes, scores = graph(Tensor(np.ascontiguousarray(x)))
        boxes.asnumpy(), scores.asnumpy()

    for image in images[:3]:
        run(image)  # compile and warm up
    latencies = []
    for i in range(int(iterations)):
        started = time.perf_counter()
        run(images[i % len(images)])
        latencies.append(time.perf_counter() - started)
    print(json.dumps(summarise(latencies)))


if __name__ == "__main__":
    main(*sys.argv[1:4])
