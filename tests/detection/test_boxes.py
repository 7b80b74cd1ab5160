"""Box coder round trip, and IoU against pycocotools' independent implementation."""
import numpy as np
from pycocotools import mask as coco_mask

from ssdstack.detection.boxes import box_iou, decode_boxes, encode_boxes, normalised_to_pixels
from ssdstack.detection.priors import prior_boxes
from ssdstack.recipes import ssd300_mobilenet_v2


def _random_boxes(rng, n):
    corner = rng.uniform(0, 0.8, (n, 2))
    size = rng.uniform(0.02, 0.2, (n, 2))
    return np.concatenate([corner, corner + size], axis=1).astype(np.float32)


def test_iou_matches_pycocotools():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 30) * 500, _random_boxes(rng, 40) * 500
    to_xywh = lambda boxes: np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)
    expected = coco_mask.iou(to_xywh(a), to_xywh(b), [0] * len(b))
    np.testing.assert_allclose(box_iou(a, b), expected, atol=1e-6)


def test_iou_hand_case():
    a = np.array([[0, 0, 2, 2]], np.float32)
    b = np.array([[1, 1, 3, 3], [2, 2, 3, 3], [0, 0, 2, 2]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 0, 1]], atol=1e-7)


def test_encode_decode_round_trip():
    priors = prior_boxes(ssd300_mobilenet_v2().priors)
    rng = np.random.default_rng(1)
    boxes = _random_boxes(rng, priors.shape[0])
    offsets = encode_boxes(boxes, priors, (0.1, 0.2))
    np.testing.assert_allclose(decode_boxes(offsets, priors, (0.1, 0.2)), boxes, atol=1e-5)


def test_encode_hand_case():
    prior = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)        # cy, cx, h, w
    box = np.array([[0.42, 0.34, 0.62, 0.74]], np.float32)      # centre (0.52, 0.54), size (0.2, 0.4)
    np.testing.assert_allclose(encode_boxes(box, prior, (0.1, 0.2)), [[1.0, 1.0, 0.0, 0.0]], atol=1e-5)


def test_decode_clips_to_unit_square():
    prior = np.array([[0.05, 0.95, 0.2, 0.2]], np.float32)
    decoded = decode_boxes(np.zeros((1, 4), np.float32), prior, (0.1, 0.2))
    np.testing.assert_allclose(decoded, [[0.0, 0.85, 0.15, 1.0]], atol=1e-6)


def test_normalised_to_pixels_swaps_axes():
    boxes = np.array([[0.1, 0.2, 0.5, 1.0]], np.float32)  # y0, x0, y1, x1
    np.testing.assert_allclose(normalised_to_pixels(boxes, width=200, height=100), [[40, 10, 200, 50]])
