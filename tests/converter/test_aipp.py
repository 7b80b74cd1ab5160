"""The generated AIPP config against values written by hand from ../shared/ASCEND.md
("AIPP config": keys, the hardware formula ``(in - mean_chn - min_chn) * var_reci_chn``,
the RGB / BGR / YUV420SP variants and the YUV matrix)."""
from __future__ import annotations

import pytest

from converter.backends.atc.aipp import aipp_settings, parse_aipp, render_aipp

# The manifest fields a published version carries (ImageNet statistics on RGB, 0..255).
MANIFEST = {"image_size": 300, "preprocessing": {"colour_order": "RGB", "mean": [123.675, 116.28, 103.53],
                                                 "std": [58.395, 57.12, 57.375]}}

# mean 123.675 = mean_chn 123 + min_chn 0.675, and so on; var_reci = 1 / std
# (1/58.395 = 0.017124754, 1/57.12 = 0.017507003, 1/57.375 = 0.017429194).
NORMALISATION = {
    "mean_chn_0": "123", "min_chn_0": "0.675", "var_reci_chn_0": "0.017124754",
    "mean_chn_1": "116", "min_chn_1": "0.28", "var_reci_chn_1": "0.017507003",
    "mean_chn_2": "103", "min_chn_2": "0.53", "var_reci_chn_2": "0.017429194",
}
RGB = {"aipp_mode": "static", "input_format": "RGB888_U8", "src_image_size_w": "300", "src_image_size_h": "300",
       "csc_switch": "false", "rbuv_swap_switch": "false", **NORMALISATION}
BGR = dict(RGB, rbuv_swap_switch="true")
YUV420SP = dict(RGB, input_format="YUV420SP_U8", csc_switch="true", related_input_rank="0",
                matrix_r0c0="256", matrix_r0c1="0", matrix_r0c2="359",
                matrix_r1c0="256", matrix_r1c1="-88", matrix_r1c2="-183",
                matrix_r2c0="256", matrix_r2c1="454", matrix_r2c2="0",
                input_bias_0="0", input_bias_1="128", input_bias_2="128")


@pytest.mark.parametrize("image_format, expected", [("rgb", RGB), ("bgr", BGR), ("yuv420sp", YUV420SP)])
def test_generated_config_equals_the_hand_written_one(image_format, expected):
    text = render_aipp(aipp_settings(MANIFEST, image_format))
    assert text.startswith("aipp_op {\n") and text.endswith("}\n")
    assert parse_aipp(text) == expected


def test_normalisation_reproduces_the_exported_networks_one():
    settings = aipp_settings(MANIFEST, "rgb")
    for channel, (mean, std) in enumerate(zip(MANIFEST["preprocessing"]["mean"], MANIFEST["preprocessing"]["std"])):
        for pixel in (0, 77, 255):
            aipp = (pixel - settings[f"mean_chn_{channel}"] - settings[f"min_chn_{channel}"]) \
                * settings[f"var_reci_chn_{channel}"]
            assert aipp == pytest.approx((pixel - mean) / std, abs=1e-6)


@pytest.mark.parametrize("manifest, image_format, words", [
    (MANIFEST, "png", "not one of"),
    ({"image_size": 300, "preprocessing": dict(MANIFEST["preprocessing"], colour_order="BGR")}, "rgb", "expects BGR"),
])
def test_what_aipp_cannot_do_is_refused(manifest, image_format, words):
    with pytest.raises(ValueError, match=words):
        aipp_settings(manifest, image_format)


def test_a_repeated_key_is_refused_when_parsing():
    with pytest.raises(ValueError, match="appears twice"):
        parse_aipp("aipp_op {\n  csc_switch : true\n  csc_switch : false\n}\n")
