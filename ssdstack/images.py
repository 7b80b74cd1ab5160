"""Decode uploaded image bytes into the RGB array the detectors take.

Any format Pillow reads natively is accepted; whatever its mode, the result is an
``[H, W, 3]`` uint8 RGB array in the orientation a viewer would show (EXIF orientation
applied). Every way the bytes can be unusable becomes an :class:`InvalidImage`.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from ssdstack.errors import InvalidImage

# EPS is "decoded" by running Ghostscript on the upload, which we will not do for
# untrusted bytes.
_EXCLUDED_FORMATS = {"EPS"}

# What Pillow raises for malformed files, per its own fuzzing tests
# (Tests/oss-fuzz/test_fuzzers.py); MemoryError is left out so that a real shortage
# is not reported as a bad upload.
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, NotImplementedError, OverflowError)

# A JPEG decoded for a model is decoded at reduced size only while both sides stay at
# least this many times the model's input (decode_for_model). Measured on a trained model
# (tests/integration/test_jpeg_draft.py, 80 images blown up 6x and 12x): at 2 and 3 a
# weak detection moved (IoU 0.6 with the full decode's); at 4 every detection scoring
# 0.3 or more kept IoU >= 0.997 and the mAP moved by at most 0.0006.
DRAFT_MARGIN = 4

# Transparent pixels are shown over white, as a browser shows them on a page.
_BACKGROUND = (255, 255, 255, 255)


def open_image(source) -> Image.Image:
    """``Image.open`` with the formats any upload may be read as (every Pillow plugin
    but the excluded ones): what detect and dataset ingest both use."""
    Image.init()  # loads Pillow's plugins, so that Image.ID lists every format
    return Image.open(source, formats=[name for name in Image.ID if name not in _EXCLUDED_FORMATS])


def decode_image(data: bytes, max_pixels: int = 50_000_000, exif_transpose: bool = True) -> np.ndarray:
    """Decode ``data`` (the bytes of an image file) to an ``[H, W, 3]`` uint8 RGB array.
    See :func:`decode_for_model`, which may decode a large JPEG at reduced size.

    * EXIF orientation is applied, so ``H`` and ``W`` are those of the rotated image.
      Datasets pass ``exif_transpose=False``: COCO annotations are in the stored pixel
      frame, and training and evaluation must see the frame the boxes describe.
    * Animated images (GIF, WebP, APNG) give their first frame.
    * Alpha and palette transparency are composited over a white background.
    * 16-bit images (modes ``I;16*`` and ``I``) keep their high byte: 65535 -> 255.
    * Float images (mode ``F``) are read on Pillow's 0..255 scale and clipped.
    * Embedded ICC profiles are ignored: values are taken as sRGB.

    Images over ``max_pixels`` (width * height) are refused from their header, before
    any pixel is decoded. Pillow's own process-wide limit (``Image.MAX_IMAGE_PIXELS``)
    still applies on top and is reported the same way.

    Raises:
        InvalidImage: empty, not a decodable image, truncated or corrupt, or too large.
    """
    return decode_for_model(data, None, max_pixels, exif_transpose)[0]


def decode_for_model(data: bytes, image_size: int | None, max_pixels: int = 50_000_000,
                     exif_transpose: bool = True) -> tuple[np.ndarray, int, int]:
    """``(rgb, width, height)``: ``data`` decoded as :func:`decode_image` does, and the
    full size of the image (after EXIF orientation), for a model of input
    ``image_size`` (None: always the full size).

    A JPEG at least ``2 * DRAFT_MARGIN * image_size`` on both sides is decoded at 1/2,
    1/4 or 1/8 of its size (libjpeg's DCT scaling, Pillow's draft mode), the smallest
    that keeps both sides at least ``DRAFT_MARGIN * image_size``: the stretch to the
    model input that follows still downsamples, and the decode costs a fraction.
    """
    if not data:
        raise InvalidImage("empty file")
    try:
        with open_image(io.BytesIO(data)) as opened:
            _check_pixels(opened.size, max_pixels)
            width, height = opened.size
            if image_size is not None and opened.format == "JPEG":
                opened.draft(opened.mode, (DRAFT_MARGIN * image_size, DRAFT_MARGIN * image_size))
            # Decode every pixel now, inside the try: Pillow decodes lazily, and a
            # truncated file only fails when its pixels are read.
            opened.load()
            reduced = opened.size
            oriented = ImageOps.exif_transpose(opened) if exif_transpose else opened
            if oriented.size != reduced:  # turned a quarter
                width, height = height, width
            return np.array(_to_rgb(oriented)), width, height  # a writable copy; np.asarray is read-only
    except Image.UnidentifiedImageError as exc:
        raise InvalidImage("not an image Pillow can decode") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"decompression bomb rejected by Pillow: {exc}") from exc
    except _PILLOW_ERRORS as exc:
        raise InvalidImage(f"truncated or corrupt image: {exc}") from exc


def rgb_pixels(data: bytes, shape: list[int] | tuple[int, int], max_pixels: int = 50_000_000) -> np.ndarray:
    """Raw RGB pixels (``H * W * 3`` bytes, row by row) as an ``[H, W, 3]`` uint8 array.

    Raises:
        InvalidImage: a shape that is not two positive sides, over ``max_pixels``, or not
        the length of ``data``.
    """
    height, width = (int(side) for side in shape)
    if height < 1 or width < 1:
        raise InvalidImage(f"an image needs positive sides, got {height}x{width}")
    if height * width > max_pixels:
        raise InvalidImage(f"{height}x{width} is {height * width} pixels, over the limit of {max_pixels}")
    if len(data) != height * width * 3:
        raise InvalidImage(f"{len(data)} bytes are not {height}x{width} RGB pixels ({height * width * 3} bytes)")
    return np.frombuffer(data, np.uint8).reshape(height, width, 3)


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse an image whose header ``size`` (width, height) exceeds ``max_pixels``."""
    width, height = size
    pixels = width * height
    if pixels > max_pixels:
        raise InvalidImage(
            f"decompression bomb: {width}x{height} is {pixels} pixels, "
            f"over the limit of {max_pixels}",
            details={"width": width, "height": height, "max_pixels": max_pixels},
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to mode ``RGB`` (see :func:`decode_image`)."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        # Pillow's convert() clips these at 255 instead of scaling; keep the high byte,
        # as Pillow itself does when it reads 16-bit RGB PNGs.
        high_byte = np.clip(np.asarray(image), 0, 65535) >> 8
        image = Image.fromarray(high_byte.astype(np.uint8))
    if image.has_transparency_data:
        background = Image.new("RGBA", image.size, _BACKGROUND)
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def resize_stretch(image: np.ndarray, size: int) -> np.ndarray:
    """Stretch ``[H, W, 3]`` uint8 to ``[size, size, 3]`` with Pillow's bilinear filter.

    The aspect ratio is not kept, as in the zoo's SSD; trainer, reference export and
    inferencer all call this one function so that they see identical pixels.
    """
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.BILINEAR))
