"""``ssdstack detect PATH``: a file or a folder in, one JSON per image out."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from converter.service import convert_version
from cli.main import main
from ssdstack.jobs.context import LocalContext
from ssdstack.model_store import ModelStore


@pytest.fixture
def version(tmp_path, publish_model, monkeypatch) -> int:
    """A converted, deployed model "demo" in the store the CLI reads from its settings."""
    store = ModelStore(tmp_path / "store")
    version = publish_model(store, "demo")
    convert_version(store, "demo", version, "onnxruntime", LocalContext(quiet=True))
    store.deploy("demo", version)
    monkeypatch.setenv("SSDSTACK_STORE_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("SSDSTACK_INFER_BACKEND", "onnxruntime")
    return version


def test_detect_folder_writes_one_json_per_image(tmp_path, version):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (120, 80), (200, 30, 30)).save(images / "a.jpg")
    Image.new("L", (64, 64), 90).save(images / "sub" / "b.png")
    (images / "broken.jpg").write_bytes(b"not a jpeg")

    status = main(["detect", str(images), "--out", str(tmp_path / "out")])

    assert status == 1  # one image failed; the others were still written
    a = json.loads((tmp_path / "out" / "a.json").read_text())
    b = json.loads((tmp_path / "out" / "sub" / "b.json").read_text())
    assert (a["width"], a["height"], a["version"], a["model"]) == (120, 80, version, "demo")
    assert (b["width"], b["height"]) == (64, 64)
    assert not (tmp_path / "out" / "broken.json").exists()


def test_detect_single_file_writes_beside_it(tmp_path, version):
    image = tmp_path / "photo.png"
    Image.new("RGB", (50, 40)).save(image)
    assert main(["detect", str(image)]) == 0
    assert json.loads((tmp_path / "photo.png.json").read_text())["width"] == 50
