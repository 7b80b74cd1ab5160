"""Check a converted model against the MindSpore outputs stored in ``reference.npz``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ssdstack.errors import JobFailed


def check_against_reference(session_or_path, reference_npz: Path, tolerance: float = 1e-4,
                            score_tolerance: float | None = None, statistic: str = "max") -> dict:
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

    ``statistic="mean"`` bounds each image's mean absolute difference instead (the
    largest over the images, and over the batch), reported as ``mean_abs_diff_boxes`` and
    ``mean_abs_diff_scores`` beside the maxima: a quantised graph is off by a little
    everywhere and by more at a few priors, a broken one is off everywhere.
    """
    if statistic not in ("max", "mean"):
        raise ValueError(f"statistic is 'max' or 'mean', not {statistic!r}")
    import onnxruntime as ort  # optional runtime: importing the converter must not need it

    session = session_or_path
    if isinstance(session_or_path, (str, Path)):
        # Default session options, as the inferencer's engine uses them.
        session = ort.InferenceSession(str(session_or_path), providers=["CPUExecutionProvider"])
    with np.load(reference_npz) as reference:
        images, want_boxes, want_scores = reference["images"], reference["boxes"], reference["scores"]
    diffs = {key: 0.0 for key in _KEYS}
    for image, expected_boxes, expected_scores in zip(images, want_boxes, want_scores):
        boxes, scores = session.run(["boxes", "scores"], {"image": image[None]})
        if boxes.shape[1:] != expected_boxes.shape or scores.shape[1:] != expected_scores.shape:
            raise JobFailed(f"converted model gives boxes {list(boxes.shape)}, scores {list(scores.shape)}; "
                            f"the reference has {list(expected_boxes.shape)}, {list(expected_scores.shape)} per image")
        for key, value in _abs_diffs(boxes[0], expected_boxes, scores[0], expected_scores).items():
            diffs[key] = max(diffs[key], value)
    batched = None
    if not isinstance(session.get_inputs()[0].shape[0], int):
        batched = _run_batched(session, images, want_boxes, want_scores)
    score_tolerance = tolerance if score_tolerance is None else score_tolerance

    def within(found: dict) -> bool:
        return (found[f"{statistic}_abs_diff_boxes"] <= tolerance
                and found[f"{statistic}_abs_diff_scores"] <= score_tolerance)
    batch_passed = batched is None or (batched["error"] is None and within(batched))
    return {
        **{key: value for key, value in diffs.items() if statistic == "mean" or key.startswith("max")},
        "statistic": statistic,
        "tolerance": tolerance,
        "score_tolerance": score_tolerance,
        "images": int(len(images)),
        "batched": batched,
        "passed": bool(len(images) > 0 and within(diffs) and batch_passed),
    }


def _run_batched(session, images: np.ndarray, want_boxes: np.ndarray, want_scores: np.ndarray) -> dict:
    """The reference images in one batch, against the expected outputs."""
    batched = {"images": int(len(images)), "error": None, **{key: None for key in _KEYS}}
    try:
        boxes, scores = session.run(["boxes", "scores"], {"image": images})
    except Exception as error:  # a graph that pins batch 1 inside fails here
        batched["error"] = f"{type(error).__name__}: {error}"
        return batched
    if boxes.shape != want_boxes.shape or scores.shape != want_scores.shape:
        batched["error"] = f"a batch of {len(images)} gives boxes {list(boxes.shape)}, scores {list(scores.shape)}"
        return batched
    # Means per image, the largest of them, as for the images run alone.
    for image_diffs in map(_abs_diffs, boxes, want_boxes, scores, want_scores):
        for key, value in image_diffs.items():
            batched[key] = max(batched[key] or 0.0, value)
    return batched


_KEYS = ("max_abs_diff_boxes", "max_abs_diff_scores", "mean_abs_diff_boxes", "mean_abs_diff_scores")


def _abs_diffs(boxes: np.ndarray, want_boxes: np.ndarray, scores: np.ndarray, want_scores: np.ndarray) -> dict:
    """Largest and mean absolute difference of one image's outputs; infinity where any
    value is NaN, so NaNs never pass."""
    found = {}
    for name, actual, expected in (("boxes", boxes, want_boxes), ("scores", scores, want_scores)):
        diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        nan = bool(np.isnan(diff).any())
        found[f"max_abs_diff_{name}"] = float("inf") if nan else float(diff.max(initial=0.0))
        found[f"mean_abs_diff_{name}"] = float("inf") if nan else float(diff.mean()) if diff.size else 0.0
    return found
