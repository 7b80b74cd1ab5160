"""What the trainer runs on: MindSpore (its one backend), and the device it trains and
exports on."""
from __future__ import annotations

from pathlib import Path

import mindspore as ms

from ssdstack.backends import Backend


class MindSporeTrainer(Backend):
    kind = "trainer backend"
    name = "mindspore"
    python_modules = ("mindspore",)
    install_hint = ("pip install 'ssdstack[trainer]' (mindspore 2.8.0), or build on an ascend-mindspore base "
                    "image with the trainer-ascend extra")


def resolve_device(requested: str, default: str = "auto") -> str:
    """The spec's device, else the worker's default; ``auto`` picks Ascend, then GPU, when
    MindSpore reports one, otherwise CPU."""
    requested = default if requested == "auto" else requested
    if requested != "auto":
        return requested
    for device in ("Ascend", "GPU"):
        try:
            if ms.hal.is_available(device):
                return device
        except (AttributeError, RuntimeError, ValueError):
            continue
    return "CPU"


def set_device(device: str, work_dir: Path) -> None:
    """Run MindSpore on ``device`` in graph mode; its compile dumps go to ``work_dir``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    ms.set_context(mode=ms.GRAPH_MODE, device_target=device, save_graphs_path=str(work_dir))
