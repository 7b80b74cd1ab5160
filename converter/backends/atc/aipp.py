"""The AIPP config that ATC bakes into an ``.om``: colour conversion and normalisation
done by the NPU's preprocessing unit, generated from a version's manifest.

Facts from ../shared/ASCEND.md ("AIPP config"): the file is ``aipp_op { key : value }``;
the hardware swaps channels, converts colour, then normalises as
``out = (in - mean_chn - min_chn) * var_reci_chn``. ``mean_chn`` takes integers, so the
manifest's mean is split into its integer part (``mean_chn``) and the rest (``min_chn``),
which keeps the exported network's ``(x - mean) / std`` exact.

Image formats: ``rgb`` (RGB888 as sent), ``bgr`` (RGB888 layout with the channels
swapped, ``rbuv_swap_switch`` on), ``yuv420sp`` (what the DVPP JPEG decoder emits:
colour-space conversion to RGB with the BT.601 full-range matrix).
"""
from __future__ import annotations

import math

IMAGE_FORMATS = ("rgb", "bgr", "yuv420sp")
# YUV420SP -> RGB, in 1/256 units, rows R, G, B (ASCEND.md: 256,0,359 / 256,-88,-183 / 256,454,0).
YUV_TO_RGB = ((256, 0, 359), (256, -88, -183), (256, 454, 0))
YUV_INPUT_BIAS = (0, 128, 128)


def aipp_settings(manifest: dict, image_format: str) -> dict[str, object]:
    """The ``aipp_op`` keys, in the order they are written, for a version whose manifest
    has ``image_size`` and ``preprocessing.mean`` / ``std`` (RGB, 0..255)."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format {image_format!r} is not one of {IMAGE_FORMATS}")
    preprocessing = manifest["preprocessing"]
    if preprocessing.get("colour_order", "RGB") != "RGB":
        raise ValueError(f"the model expects {preprocessing['colour_order']} input; AIPP here produces RGB")
    size = int(manifest["image_size"])
    settings: dict[str, object] = {
        "aipp_mode": "static",
        "input_format": "YUV420SP_U8" if image_format == "yuv420sp" else "RGB888_U8",
        "src_image_size_w": size,
        "src_image_size_h": size,
        "csc_switch": image_format == "yuv420sp",
        "rbuv_swap_switch": image_format == "bgr",
    }
    if image_format == "yuv420sp":
        settings["related_input_rank"] = 0
        for row, coefficients in enumerate(YUV_TO_RGB):
            for column, value in enumerate(coefficients):
                settings[f"matrix_r{row}c{column}"] = value
        for channel, bias in enumerate(YUV_INPUT_BIAS):
            settings[f"input_bias_{channel}"] = bias
    for channel, (mean, std) in enumerate(zip(preprocessing["mean"], preprocessing["std"])):
        whole = math.floor(mean)
        settings[f"mean_chn_{channel}"] = whole
        settings[f"min_chn_{channel}"] = round(mean - whole, 6)
        settings[f"var_reci_chn_{channel}"] = round(1.0 / std, 9)
    return settings


def render_aipp(settings: dict[str, object]) -> str:
    """``aipp_op { key : value }`` text, one key per line; booleans as ``true``/``false``."""
    lines = ["aipp_op {"]
    for key, value in settings.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        lines.append(f"    {key} : {text}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def parse_aipp(text: str) -> dict[str, str]:
    """The ``key : value`` pairs of an ``aipp_op`` block, as strings (for checks and tests)."""
    body = text.split("{", 1)[1].rsplit("}", 1)[0]
    pairs = {}
    for line in body.splitlines():
        if ":" in line:
            key, value = (part.strip() for part in line.split(":", 1))
            if key in pairs:
                raise ValueError(f"AIPP key {key!r} appears twice")
            pairs[key] = value
    return pairs
