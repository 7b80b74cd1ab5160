"""The demo's pieces that need no stack: progress display, box matching, held-out image."""
from __future__ import annotations

import io

import numpy as np

from cli.demo import ProgressView, best_match, held_out_image


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _job(epoch: int, step: int) -> dict:
    return {"state": "running", "progress": {"stage": "train", "epoch": epoch, "epochs": 2, "step": step,
                                             "steps_per_epoch": 4, "loss": 1.25, "images_per_s": 20.0,
                                             "eta_s": 75}}


def test_progress_is_a_redrawn_bar_on_a_terminal():
    out = Terminal()
    view = ProgressView(out)
    view(_job(1, 1))
    view(_job(1, 2))
    view.close()
    text = out.getvalue()
    assert text.count("\r\033[K") == 2 and text.endswith("\n")
    assert "[###" in text and "25.0% epoch 1/2 step 2/4 loss 1.2500" in text and "ETA 1:15" in text


def test_progress_is_one_plain_line_per_epoch_otherwise():
    out = io.StringIO()
    view = ProgressView(out)
    for epoch, step in [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]:
        view(_job(epoch, step))
    view({"state": "running", "progress": {"stage": "convert"}})
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in out.getvalue()
    assert lines[0].startswith("train [") and "epoch 2/2" in lines[1] and lines[2] == "convert (running)"


def test_best_match_needs_the_same_label():
    boxes = np.array([[10, 10, 50, 50]], np.float32)
    detections = [{"label": "b", "box": [10, 10, 50, 50]}, {"label": "a", "box": [12, 10, 50, 50]}]
    iou, found = best_match(detections, boxes, ["a"])
    assert found["label"] == "a" and abs(iou - 0.95) < 1e-6


def test_held_out_image_carries_its_boxes(tmp_path):
    data, boxes, labels, size = held_out_image(tmp_path / "h", seed=5, classes=3)
    assert data[:2] == b"\xff\xd8" and boxes.shape == (len(labels), 4) and len(size) == 2
    assert (boxes[:, 2] <= size[0]).all() and (boxes[:, 3] <= size[1]).all()


def test_progress_names_each_stage_and_its_place_in_the_job():
    out = io.StringIO()
    view = ProgressView(out)
    stages = [{"name": name, "state": "pending"} for name in ("train", "export", "convert", "evaluate", "deploy")]
    view(dict(_job(1, 1), stage="train", stages=stages))
    view({"state": "running", "stage": "export", "stages": stages, "progress": {"stage": "export"}})
    view({"state": "running", "stage": "convert", "stages": stages, "progress": {"stage": "queued:convert"}})
    view({"state": "running", "stage": "evaluate", "stages": stages,
          "progress": {"stage": "evaluate", "evaluated": 3, "to_evaluate": 8}})
    view({"state": "running", "stage": "deploy", "stages": stages, "progress": {"stage": "deploy"}})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1/5] train [")
    assert lines[1:] == ["[2/5] export (running)", "[3/5] convert (running)", "[4/5] evaluate: 3/8 images",
                         "[5/5] deploy (running)"]
