"""Tests for ssdstack.images.decode_image: bad uploads and unusual valid images."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, features

from ssdstack.errors import InvalidImage
from ssdstack.images import decode_for_model, decode_image, rgb_pixels

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _noise_jpeg() -> bytes:
    # Noise keeps the entropy-coded data long, so cutting it lands inside the pixels.
    return _encode(Image.effect_noise((128, 128), 64).convert("RGB"), "JPEG")


def _png_claiming_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR claims ``width`` x ``height``; its pixel data stays 1x1."""
    png = _encode(Image.new("1", (1, 1)), "PNG")
    # Layout: 8-byte signature, IHDR length (4), b"IHDR" (4), width, height, 5 more
    # bytes of IHDR data, then the CRC of type + data, which Pillow checks.
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def _decode_error(data: bytes, **kwargs) -> str:
    with pytest.raises(InvalidImage) as caught:
        decode_image(data, **kwargs)
    return caught.value.message


# --- bad input --------------------------------------------------------------------


def test_empty_bytes():
    assert _decode_error(b"") == "empty file"


def test_not_an_image():
    assert "not an image" in _decode_error(b"name,box\ncat,1 2 3 4\n")


def test_eps_is_refused_rather_than_run_through_ghostscript():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert "not an image" in _decode_error(eps)


def test_jpeg_cut_in_half_is_truncated():
    jpeg = _noise_jpeg()
    assert "truncated or corrupt" in _decode_error(jpeg[: len(jpeg) // 2])


def test_png_with_damaged_pixel_data_is_corrupt():
    png = bytearray(_encode(Image.effect_noise((64, 64), 64), "PNG"))
    idat = png.index(b"IDAT")
    png[idat + 20 : idat + 40] = bytes(20)
    assert "truncated or corrupt" in _decode_error(bytes(png))


def test_decompression_bomb_is_refused_from_the_header():
    # Were the pixels decoded, the 1x1 pixel data would fail as truncated instead.
    message = _decode_error(_png_claiming_size(2000, 2000), max_pixels=1_000_000)
    assert "decompression bomb" in message
    assert "4000000" in message and "1000000" in message


def test_decompression_bomb_over_pillows_own_limit():
    message = _decode_error(_png_claiming_size(20000, 20000), max_pixels=10**12)
    assert "decompression bomb" in message
    assert "400000000" in message


# --- valid images -----------------------------------------------------------------


def test_rgb_png_is_returned_exactly():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = decode_image(_encode(Image.fromarray(pixels), "PNG"))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, pixels)
    out[0, 0] = 0  # callers may normalise in place


def test_exif_orientation_is_applied():
    # Stored 40 wide x 20 high with a red top-left corner; orientation 6 means
    # "rotate 90 degrees clockwise to view", which moves that corner to the top right.
    image = Image.new("RGB", (40, 20), BLUE)
    image.paste(RED, (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    out = decode_image(_encode(image, "JPEG", quality=95, exif=exif))
    assert out.shape == (40, 20, 3)
    np.testing.assert_allclose(out[3, 16], RED, atol=12)
    np.testing.assert_allclose(out[3, 3], BLUE, atol=12)


@pytest.mark.parametrize(
    "fmt, options",
    [
        ("GIF", {}),
        ("PNG", {}),  # APNG
        pytest.param(
            "WEBP",
            {"lossless": True},
            marks=pytest.mark.skipif(not features.check("webp"), reason="no WebP"),
        ),
    ],
)
def test_animation_gives_first_frame(fmt, options):
    red, blue = Image.new("RGB", (6, 4), RED), Image.new("RGB", (6, 4), BLUE)
    data = _encode(red, fmt, save_all=True, append_images=[blue], **options)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = decode_image(data)
    assert out.shape == (4, 6, 3)
    assert tuple(out[2, 3]) == RED


def test_grayscale():
    out = decode_image(_encode(Image.new("L", (3, 2), 77), "PNG"))
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    assert tuple(out[1, 2]) == (77, 77, 77)


def test_one_bit():
    image = Image.new("1", (8, 2), 0)
    image.putpixel((5, 1), 1)
    out = decode_image(_encode(image, "PNG"))
    assert out.shape == (2, 8, 3)
    assert tuple(out[1, 5]) == WHITE
    assert tuple(out[0, 0]) == (0, 0, 0)


def test_grayscale_with_alpha_is_composited_over_white():
    image = Image.new("LA", (2, 1), (0, 255))
    image.putpixel((1, 0), (0, 0))
    out = decode_image(_encode(image, "PNG"))
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert tuple(out[0, 1]) == WHITE


def test_rgba_is_composited_over_white():
    image = Image.new("RGBA", (3, 1))
    image.putdata([(*BLUE, 255), (*RED, 0), (0, 0, 0, 128)])
    out = decode_image(_encode(image, "PNG"))
    assert out.shape == (1, 3, 3)
    assert tuple(out[0, 0]) == BLUE
    assert tuple(out[0, 1]) == WHITE
    np.testing.assert_allclose(out[0, 2], (127, 127, 127), atol=1)


def test_palette_with_transparent_index():
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *GREEN])
    image.putdata([0, 1])
    out = decode_image(_encode(image, "PNG", transparency=1))
    assert out.shape == (1, 2, 3)
    assert tuple(out[0, 0]) == RED
    assert tuple(out[0, 1]) == WHITE


def test_cmyk_jpeg():
    cyan = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    data = _encode(cyan, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data)
    assert out.shape == (8, 8, 3)
    np.testing.assert_allclose(out[4, 4], (0, 255, 255), atol=3)


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = decode_image(data)
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])


def test_thirty_two_bit_integer_tiff_is_read_as_sixteen_bit():
    values = np.array([[-5, 32768, 65535, 100_000]], dtype=np.int32)
    data = _encode(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    np.testing.assert_array_equal(decode_image(data)[0, :, 0], [0, 128, 255, 255])


def test_float_tiff_uses_pillows_eight_bit_scale():
    values = np.array([[0.0, 200.0, 300.0]], dtype=np.float32)
    data = _encode(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    np.testing.assert_array_equal(decode_image(data)[0, :, 1], [0, 200, 255])


def test_ycbcr_tiff():
    data = _encode(Image.new("RGB", (4, 4), RED).convert("YCbCr"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "YCbCr"
    out = decode_image(data)
    assert out.shape == (4, 4, 3)
    np.testing.assert_allclose(out[1, 1], RED, atol=3)


def test_raw_pixels_are_rows_of_rgb_triples():
    rgb = rgb_pixels(bytes(range(12)), [2, 2])
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 1].tolist() == [3, 4, 5] and rgb[1, 0].tolist() == [6, 7, 8]


@pytest.mark.parametrize("data, shape, named", [(bytes(11), [2, 2], "11 bytes are not 2x2"),
                                                (b"", [0, 5], "positive sides"),
                                                (bytes(30), [2, 5], "over the limit of 9")])
def test_raw_pixels_of_the_wrong_size_are_refused(data, shape, named):
    with pytest.raises(InvalidImage, match=named):
        rgb_pixels(data, shape, max_pixels=9)


@pytest.mark.parametrize("size, fmt, orientation, decoded, full", [
    ((2560, 1920), "JPEG", 1, (1280, 960), (2560, 1920)),  # 1/2: 1/4 would leave a side under 4 * 160
    ((5200, 2800), "JPEG", 1, (1300, 700), (5200, 2800)),  # 1/4
    ((2560, 1920), "JPEG", 6, (960, 1280), (1920, 2560)),  # turned a quarter, reduced as stored
    ((1200, 1200), "JPEG", 1, (1200, 1200), (1200, 1200)),  # under 8 * 160 a side: whole
    ((2560, 1920), "PNG", 1, (2560, 1920), (2560, 1920)),  # only JPEGs have DCT scaling
])
def test_a_large_jpeg_is_decoded_for_the_model_at_reduced_size(size, fmt, orientation, decoded, full):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(Image.new("RGB", size, BLUE), fmt, **({"exif": exif} if fmt == "JPEG" else {}))
    rgb, width, height = decode_for_model(data, 160)
    assert (rgb.shape[1], rgb.shape[0]) == decoded and (width, height) == full
    assert decode_for_model(data, None)[0].shape == (full[1], full[0], 3)
