"""``ssdstack dataset synth`` and ``ssdstack dataset convert`` as a user runs them."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cli.main import build_parser, main
from ssdstack.datasets.coco import load_coco_split
from ssdstack.datasets.layout import detect_format


def test_synth_writes_the_dataset_and_prints_one_line(tmp_path, capsys):
    assert main(["dataset", "synth", "--out", str(tmp_path / "f"), "--images", "5", "--classes", "2",
                 "--seed", "1"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "train 4 images" in printed[0] and "red_circle, green_square" in printed[0]
    assert len(list((tmp_path / "f" / "train").glob("*.jpg"))) == 4

    defaults = build_parser().parse_args(["dataset", "synth", "--out", "x"])
    assert (defaults.images, defaults.classes, defaults.seed, defaults.format) == (200, 3, 0, "coco")


@pytest.mark.parametrize(("fmt", "files"), [
    ("voc", ["Annotations", "ImageSets", "JPEGImages", "labels.txt"]),
    ("text", ["labels.txt", "train", "train.txt", "val", "val.txt"]),
])
def test_synth_format_writes_that_layout_and_nothing_beside_it(tmp_path, fmt, files):
    assert main(["dataset", "synth", "--out", str(tmp_path / "g"), "--images", "5", "--format", fmt]) == 0
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == files
    assert [p.name for p in tmp_path.iterdir()] == ["g"]  # the COCO scratch copy is gone


def test_convert_round_trips_through_every_format(tmp_path, capsys):
    main(["dataset", "synth", "--out", str(tmp_path / "source"), "--images", "12", "--seed", "5"])
    capsys.readouterr()
    steps = [("coco", tmp_path / "source", "voc"), ("auto", tmp_path / "voc", "text"),
             ("text", tmp_path / "text", "coco")]
    for source_format, src, target_format in steps:
        dst = tmp_path / target_format
        assert main(["dataset", "convert", "--from", source_format, "--to", target_format, str(src), str(dst)]) == 0
        assert detect_format(dst) == target_format
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 3 and "train 10 images" in printed[-1] and "red_circle" in printed[-1]
    for split in ("train", "val"):
        before, after = load_coco_split(tmp_path / "source", split), load_coco_split(tmp_path / "coco", split)
        assert after.label_names == before.label_names
        assert [r.labels.tolist() for r in after.records] == [r.labels.tolist() for r in before.records]
        for old, new in zip(before.records, after.records):
            np.testing.assert_allclose(new.boxes, old.boxes)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".convert-")]


def test_convert_reports_problems_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "text"
    (root / "img").mkdir(parents=True)
    for name in ("a", "b"):
        Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "img" / f"{name}.jpg")
    (root / "labels.txt").write_text("cat\ndog\n")
    (root / "train.txt").write_text("img/a.jpg 1,2,11,12,7\n")
    (root / "val.txt").write_text("img/b.jpg 1,2,11,12,1\n")

    assert main(["dataset", "convert", str(root), str(tmp_path / "out")]) == 1

    error = capsys.readouterr().err
    assert "dataset has 1 problem" in error and "class id 7 is outside 1..2" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text"]
