"""Facts about the Ascend host a process runs on, shared by the converter and the inferencer.

Reads ``npu-smi info`` (the driver's tool; the only way to name the chip without CANN's
Python packages). Its table has one row per NPU whose first cell is ``<npu id> <name>``,
e.g. ``| 0       310P3                 | OK  ...``; ATC's ``--soc_version`` is that name
prefixed with ``Ascend`` (see ../shared/ASCEND.md).
"""
from __future__ import annotations

import re
import shutil
import subprocess

from ssdstack.errors import BackendUnavailable

# Chips ATC targets (``--soc_version``; ``npu-smi info`` shows the name without "Ascend").
SOC_VERSIONS = ("Ascend310", "Ascend310P1", "Ascend310P3", "Ascend310B1", "Ascend310B2", "Ascend310B3",
                "Ascend310B4", "Ascend910", "Ascend910A", "Ascend910B", "Ascend910ProA", "Ascend910ProB",
                "Ascend910PremiumA", "Ascend910B1", "Ascend910B2", "Ascend910B3", "Ascend910B4")
_NPU_ROW = re.compile(r"^\|\s*(\d+)\s+((?:310|910)\w*)\s*\|")
# DVPP's resizer writes widths that are multiples of 16 and heights that are multiples of 2.
DVPP_WIDTH_ALIGN, DVPP_HEIGHT_ALIGN = 16, 2


def parse_npu_smi(text: str) -> list[str]:
    """Chip names (``310P3``, ``910B3``, ``310``) of the NPU rows of ``npu-smi info``, in order."""
    return [match.group(2) for line in text.splitlines() if (match := _NPU_ROW.match(line.strip()))]


def npu_chips(timeout_s: float = 20.0) -> list[str]:
    """The chips ``npu-smi info`` lists here; ``[]`` when npu-smi is not installed.

    Raises BackendUnavailable when npu-smi is installed but fails (driver not loaded,
    device not mapped into the container), with its message.
    """
    program = shutil.which("npu-smi")
    if program is None:
        return []
    try:
        done = subprocess.run([program, "info"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise BackendUnavailable(f"npu-smi info did not answer within {timeout_s:g} s") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        raise BackendUnavailable(f"npu-smi info failed (exit status {done.returncode}): "
                                 f"{output[-1] if output else 'no output'}")
    return parse_npu_smi(done.stdout)


def host_soc_version() -> str | None:
    """``Ascend<chip>`` of this host's first NPU, or None without npu-smi or NPUs."""
    chips = npu_chips()
    return f"Ascend{chips[0]}" if chips else None


def dvpp_fits(width: int, height: int) -> bool:
    """Whether DVPP can resize straight to ``width x height`` (the model's input)."""
    return width % DVPP_WIDTH_ALIGN == 0 and height % DVPP_HEIGHT_ALIGN == 0
