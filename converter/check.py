"""Check a converted model against the MindSpore outputs stored in ``reference.npz``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ssdstack.errors import JobFailed


def check_against_reference(session_or_path, reference_npz: Path, tolerance: float = 1e-4,
                            score_tolerance: float | None = None) -> dict:
    """Run the served model on each reference image and compare with the stored outputs.

    ``session_or_path``: an ``onnxruntime.InferenceSession`` or the path of a served ONNX
    model, taking ``image`` uint8 ``[B, S, S, 3]`` RGB and giving ``boxes`` ``[B, P, 4]``,
    ``scores`` ``[B, P, C]``. ``reference_npz`` holds ``images [R, S, S, 3]`` uint8 and
    the expected ``boxes [R, P, 4]``, ``scores [R, P, C]``.

    Each image is run alone; a model whose batch axis is not fixed also runs them all in
    one batch. Returns ``{"max_abs_diff_boxes", "max_abs_diff_scores", "tolerance",
    "score_tolerance", "images", "batched", "passed"}``: the maxima of the images run
    alone; ``batched`` is None for a model of batch 1, else ``{"images", "error",
    "max_abs_diff_boxes", "max_abs_diff_scores"}`` of the batch (``error``: why it did not
    run, or None); ``passed`` when every boxes maximum is ``<= tolerance``, every scores
    maximum ``<= score_tolerance`` (default: ``tolerance``) and the batch ran.
    """
    import onnxruntime as ort  # optional runtime: importing the converter must not need it

    session = session_or_path
    if isinstance(session_or_path, (str, Path)):
        # Default session options, as the inferencer's engine uses them.
        session = ort.InferenceSession(str(session_or_path), providers=["CPUExecutionProvider"])
    with np.load(reference_npz) as reference:
        images, want_boxes, want_scores = reference["images"], reference["boxes"], reference["scores"]
    diff_boxes = diff_scores = 0.0
    for image, expected_boxes, expected_scores in zip(images, want_boxes, want_scores):
        boxes, scores = session.run(["boxes", "scores"], {"image": image[None]})
        if boxes.shape[1:] != expected_boxes.shape or scores.shape[1:] != expected_scores.shape:
            raise JobFailed(f"converted model gives boxes {list(boxes.shape)}, scores {list(scores.shape)}; "
                            f"the reference has {list(expected_boxes.shape)}, {list(expected_scores.shape)} per image")
        diff_boxes = max(diff_boxes, _max_abs_diff(boxes[0], expected_boxes))
        diff_scores = max(diff_scores, _max_abs_diff(scores[0], expected_scores))
    batched = None
    if not isinstance(session.get_inputs()[0].shape[0], int):
        batched = _run_batched(session, images, want_boxes, want_scores)
    score_tolerance = tolerance if score_tolerance is None else score_tolerance
    batch_passed = batched is None or (batched["error"] is None and batched["max_abs_diff_boxes"] <= tolerance
                                       and batched["max_abs_diff_scores"] <= score_tolerance)
    return {
        "max_abs_diff_boxes": diff_boxes,
        "max_abs_diff_scores": diff_scores,
        "tolerance": tolerance,
        "score_tolerance": score_tolerance,
        "images": int(len(images)),
        "batched": batched,
        "passed": bool(len(images) > 0 and diff_boxes <= tolerance and diff_scores <= score_tolerance
                       and batch_passed),
    }


def _run_batched(session, images: np.ndarray, want_boxes: np.ndarray, want_scores: np.ndarray) -> dict:
    """The reference images in one batch, against the expected outputs."""
    batched = {"images": int(len(images)), "error": None, "max_abs_diff_boxes": None, "max_abs_diff_scores": None}
    try:
        boxes, scores = session.run(["boxes", "scores"], {"image": images})
    except Exception as error:  # a graph that pins batch 1 inside fails here
        batched["error"] = f"{type(error).__name__}: {error}"
        return batched
    if boxes.shape != want_boxes.shape or scores.shape != want_scores.shape:
        batched["error"] = f"a batch of {len(images)} gives boxes {list(boxes.shape)}, scores {list(scores.shape)}"
        return batched
    batched["max_abs_diff_boxes"] = _max_abs_diff(boxes, want_boxes)
    batched["max_abs_diff_scores"] = _max_abs_diff(scores, want_scores)
    return batched


def _max_abs_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference; infinity if any value is NaN, so NaNs never pass."""
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    return float("inf") if np.isnan(diff).any() else float(diff.max(initial=0.0))
