"""Detection with the image decoded on the NPU (DVPP): which JPEGs the device's JPEG
decoder (JPEGD) takes, read from the file's markers, a baseline JPEG for the images it
does not take, and the :class:`DvppDetector` that sends the file bytes to the stream.

Vendor facts (CANN "JPEGD functions and restrictions"): Huffman-coded JPEG only, YUV
sampling 4:4:4, 4:2:2, 4:2:0, 4:0:0 or 4:4:0; no arithmetic coding, no progressive JPEG,
no JPEG 2000; 32 x 32 to 8192 x 8192 pixels. An image in another format or coding is
decoded on the host and sent again as a baseline JPEG (:func:`baseline_jpeg`), so that
DVPP serving takes whatever Pillow decodes, as every other engine does; only sizes the
device cannot take at all are refused.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ssdstack.detection.detector import DEFAULT_MAX_PIXELS, Detector
from ssdstack.detection.nms import batched_nms
from ssdstack.errors import InvalidImage, InvalidInput
from ssdstack.images import decode_image, open_image

MIN_SIDE, MAX_SIDE = 32, 8192
_BASELINE_SOF = {0xC0: "baseline", 0xC1: "extended sequential"}
_OTHER_SOF = {0xC2: "progressive", 0xC3: "lossless", 0xC5: "differential sequential",
              0xC6: "differential progressive", 0xC7: "differential lossless", 0xC9: "arithmetic-coded",
              0xCA: "arithmetic-coded progressive", 0xCB: "arithmetic-coded lossless",
              0xCD: "arithmetic-coded differential", 0xCE: "arithmetic-coded differential progressive",
              0xCF: "arithmetic-coded differential lossless"}
# Luma (h, v) sampling factors with chroma at 1x1 -> the subsampling JPEGD supports.
_SAMPLING = {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (1, 2): "4:4:0"}
ADVICE = ("resize it, or serve with host preprocessing: a version converted with atc image_format rgb, and "
          "SSDSTACK_MXSDK_PREPROCESSING=cpu or auto")
# Quality of the host's re-encoding: visually lossless; its 4:2:0 sampling is what DVPP
# decodes to YUV420SP anyway.
REENCODE_QUALITY = 95


class UnsupportedByDvpp(InvalidImage):
    """A usable image in a format or coding DVPP does not decode (see :func:`baseline_jpeg`)."""


@dataclass(frozen=True)
class JpegInfo:
    width: int
    height: int
    sampling: str
    orientation: int  # EXIF orientation, 1 = as stored


def dvpp_jpeg_info(data: bytes, max_pixels: int) -> JpegInfo:
    """Size, sampling and EXIF orientation of a JPEG that DVPP can decode.

    Raises InvalidImage naming why DVPP cannot take ``data`` (not a JPEG, progressive or
    arithmetic coding, CMYK, 12-bit, unsupported subsampling, size out of range) or why
    it is unusable anyway (over ``max_pixels``, truncated header).
    """
    if not data.startswith(b"\xff\xd8"):
        kind = _format_name(data)
        raise UnsupportedByDvpp(f"DVPP decodes JPEG only and this is {kind}")
    frame = _start_of_frame(data)
    marker, precision, height, width, components = frame
    if marker in _OTHER_SOF:
        raise UnsupportedByDvpp(f"DVPP cannot decode a {_OTHER_SOF[marker]} JPEG")
    if precision != 8:
        raise UnsupportedByDvpp(f"DVPP decodes 8-bit JPEGs; this one has {precision}-bit samples")
    if len(components) == 1:
        sampling = "4:0:0"
    elif len(components) == 3 and all(c == (1, 1) for c in components[1:]) and components[0] in _SAMPLING:
        sampling = _SAMPLING[components[0]]
    else:
        raise UnsupportedByDvpp(f"DVPP cannot decode a JPEG with {len(components)} components sampled "
                                f"{components} (CMYK or unusual subsampling)")
    _check_size(width, height)
    if width * height > max_pixels:
        raise InvalidImage(f"decompression bomb: {width}x{height} is over the limit of {max_pixels} pixels")
    return JpegInfo(width, height, sampling, _orientation(data))


def baseline_jpeg(data: bytes, max_pixels: int, exif_transpose: bool) -> tuple[bytes, int, int]:
    """Decode ``data`` on the host (any format Pillow reads; EXIF orientation applied unless
    ``exif_transpose`` is False) and encode it as a baseline 4:2:0 JPEG for DVPP.

    Returns ``(jpeg, width, height)``. Raises InvalidImage for undecodable bytes or a size
    DVPP cannot take.
    """
    rgb = decode_image(data, max_pixels=max_pixels, exif_transpose=exif_transpose)
    height, width = rgb.shape[:2]
    _check_size(width, height)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=REENCODE_QUALITY, subsampling=2, progressive=False)
    return buffer.getvalue(), width, height


def _check_size(width: int, height: int) -> None:
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise InvalidImage(f"DVPP decodes {MIN_SIDE}x{MIN_SIDE} to {MAX_SIDE}x{MAX_SIDE} pixels; "
                           f"this image is {width}x{height}: {ADVICE}")


def _start_of_frame(data: bytes) -> tuple[int, int, int, int, list[tuple[int, int]]]:
    """``(marker, precision, height, width, [(h, v) per component])`` of the first SOF segment."""
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            break
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        length = int.from_bytes(data[offset + 2:offset + 4], "big")
        if marker in _BASELINE_SOF or marker in _OTHER_SOF:
            segment = data[offset + 4:offset + 2 + length]
            if len(segment) < 6:
                break
            count = segment[5]
            components = [(segment[6 + 3 * i + 1] >> 4, segment[6 + 3 * i + 1] & 0x0F)
                          for i in range(count) if 6 + 3 * i + 1 < len(segment)]
            height, width = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big")
            return marker, segment[0], height, width, components
        if marker == 0xDA:  # start of scan before any frame header
            break
        offset += 2 + length
    raise InvalidImage("truncated or corrupt JPEG: no frame header")


def _orientation(data: bytes) -> int:
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
            return int(image.getexif().get(0x0112, 1))
    except (OSError, SyntaxError, ValueError):
        return 1


def _format_name(data: bytes) -> str:
    try:
        with open_image(io.BytesIO(data)) as image:
            return image.format or "an unknown format"
    except (OSError, SyntaxError, ValueError):
        return "not an image Pillow recognises"


class DvppDetector(Detector):
    """The detector of an engine that decodes JPEGs on the NPU (MindX with DVPP): it sends
    file bytes, and the device's SSD postprocessor returns boxes in original pixels."""

    def detect(self, image_bytes: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, score_threshold: float | None = None,
               iou_threshold: float | None = None, max_detections: int | None = None,
               exif_transpose: bool = True) -> dict:
        """As :meth:`Detector.detect`. The device decodes, resizes, thresholds and runs NMS
        with the manifest's settings; a stricter score or IoU threshold and
        ``max_detections`` apply here afterwards.

        JPEGs DVPP takes go as they are. Other images, and JPEGs with an EXIF orientation
        to apply (whether the device decoder applies it is not verified), are decoded here
        and sent as a baseline JPEG, so boxes are always in the frame the API promises.
        """
        config = self._config(score_threshold, iou_threshold, max_detections)
        try:
            info = dvpp_jpeg_info(image_bytes, max_pixels)
            width, height = info.width, info.height
            reencode = exif_transpose and info.orientation != 1
        except UnsupportedByDvpp:
            reencode = True
        if config.score_threshold < self.postprocess.score_threshold:
            raise InvalidInput(f"the device postprocessor keeps scores >= {self.postprocess.score_threshold}; "
                               "a lower score_threshold needs cpu preprocessing")
        if config.iou_threshold > self.postprocess.iou_threshold:
            raise InvalidInput(f"the device postprocessor already ran NMS at IoU {self.postprocess.iou_threshold}; "
                               "a higher iou_threshold needs cpu preprocessing")
        if reencode:
            image_bytes, width, height = baseline_jpeg(image_bytes, max_pixels, exif_transpose)
        boxes, scores, labels = self.engine.detect_encoded(image_bytes, self.labels)
        keep = np.flatnonzero(scores > config.score_threshold)  # as the shared postprocess compares
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, config.iou_threshold)[:config.max_detections]
        limits = np.asarray([width, height, width, height], np.float32)
        boxes = np.clip(boxes[keep], 0, limits)
        return self._answer(boxes, scores[keep], labels[keep], width, height)

    def detect_array(self, rgb: np.ndarray, score_threshold: float | None = None, iou_threshold: float | None = None,
                     max_detections: int | None = None) -> dict:
        raise InvalidInput(f"the {self.engine.name} engine decodes images on the device: send the file bytes")
