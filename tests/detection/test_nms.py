"""NMS against ONNX Runtime's NonMaxSuppression operator, and the postprocess on a hand case."""
import numpy as np
import needs
import pytest

from ssdstack.detection.nms import PostprocessConfig, batched_nms, nms, postprocess

onnx = needs.module("onnx")
ort = needs.module("onnxruntime")


def _ort_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    from onnx import TensorProto, helper

    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou"], ["selected"])
    graph = helper.make_graph(
        [node], "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, None, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, None]),
         helper.make_tensor_value_info("max", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    selected = session.run(None, {"boxes": boxes[None], "scores": scores[None, None],
                                  "max": np.array([len(boxes)], np.int64),
                                  "iou": np.array([iou_threshold], np.float32)})[0]
    return selected[:, 2]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_matches_onnxruntime(seed, iou_threshold):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 0.7, (200, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.05, 0.3, (200, 2))], axis=1).astype(np.float32)
    scores = rng.permutation(200).astype(np.float32) / 200 + 0.001  # distinct scores: no tie-order ambiguity
    np.testing.assert_array_equal(nms(boxes, scores, iou_threshold), _ort_nms(boxes, scores, iou_threshold))


def test_batched_nms_keeps_overlapping_boxes_of_other_labels():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0.98, 1]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    labels = np.array([1, 2, 1])
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.5), [0, 1])


def test_postprocess_skips_background_and_applies_thresholds():
    boxes = np.array([[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.49], [0.5, 0.5, 1, 1]], np.float32)
    scores = np.array([[0.99, 0.9, 0.0],    # background column 0 is never a detection
                       [0.0, 0.8, 0.05],    # suppressed by box 0 (same class, IoU 0.98)
                       [0.0, 0.0, 0.3]], np.float32)
    kept_boxes, kept_scores, labels = postprocess(boxes, scores, PostprocessConfig(score_threshold=0.1))
    np.testing.assert_array_equal(labels, [1, 2])
    np.testing.assert_allclose(kept_scores, [0.9, 0.3])
    np.testing.assert_allclose(kept_boxes, boxes[[0, 2]])
    _, _, capped = postprocess(boxes, scores, PostprocessConfig(score_threshold=0.1, max_detections=1))
    assert capped.tolist() == [1]
