"""ONNX Runtime conversion of a real exported SSD, checked against its MindSpore reference."""
from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from converter.backends import select_backend
from converter.service import convert_version
from ssdstack.errors import BackendUnavailable, JobFailed
from ssdstack.jobs.context import LocalContext
from ssdstack.model_store import ModelStore, sha256_file


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def test_conversion_matches_reference_and_is_recorded(store, publish_model):
    version = publish_model(store)
    ctx = LocalContext(quiet=True)

    result = convert_version(store, "demo", version, "onnxruntime", ctx)

    check = result.check
    print(f"max abs diff boxes {check['max_abs_diff_boxes']:.3g}, scores {check['max_abs_diff_scores']:.3g}")
    assert result.backend == "onnxruntime" and result.artefact == "serving_onnxruntime"
    assert check["passed"] and check["images"] == 3
    assert check["max_abs_diff_boxes"] <= 1e-4 and check["max_abs_diff_scores"] <= 1e-4
    manifest = store.manifest("demo", version)
    entry = manifest["artefacts"]["serving_onnxruntime"]
    path = store.artefact_path("demo", version, "serving_onnxruntime")
    assert entry["file"] == "model.ort.onnx" and entry["sha256"] == sha256_file(path)
    serving = manifest["serving"]["onnxruntime"]
    size = manifest["image_size"]
    assert serving["input"] == {"name": "image", "dtype": "uint8", "shape": ["batch", size, size, 3], "layout": "NHWC",
                                "colour_order": "RGB"}
    assert serving["outputs"] == ["boxes", "scores"] and serving["check"] == check
    assert store.verify("demo", version) == []
    assert list(store.tmp_dir.iterdir()) == []
    assert ctx.state["stage"] == "convert"


def test_converted_graph_takes_uint8_nhwc_and_folds_normalisation(store, publish_model, exported_model):
    version = publish_model(store)
    convert_version(store, "demo", version, "onnxruntime", LocalContext(quiet=True))
    served = ort.InferenceSession(str(store.artefact_path("demo", version, "serving_onnxruntime")),
                                  providers=["CPUExecutionProvider"])
    original = ort.InferenceSession(str(exported_model / "model.onnx"), providers=["CPUExecutionProvider"])
    manifest = store.manifest("demo", version)
    size = manifest["image_size"]
    [image_input] = served.get_inputs()
    assert (image_input.name, image_input.type, image_input.shape) == ("image", "tensor(uint8)",
                                                                        ["batch", size, size, 3])
    assert [o.name for o in served.get_outputs()] == ["boxes", "scores"]

    # Any image, not only the reference ones: the folded graph equals normalise + original.
    image = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    fields = manifest["preprocessing"]
    normalised = (image.astype(np.float32) - np.float32(fields["mean"])) / np.float32(fields["std"])
    normalised = normalised.transpose(2, 0, 1)
    want = original.run(None, {original.get_inputs()[0].name: normalised[None]})
    got = served.run(["boxes", "scores"], {"image": image[None]})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_perturbed_model_fails_the_check_and_leaves_the_version_unchanged(store, publish_model, exported_model,
                                                                          tmp_path):
    model = onnx.load(str(exported_model / "model.onnx"))
    first_conv_weight = next(node.input[1] for node in model.graph.node if node.op_type == "Conv")
    weight = next(t for t in model.graph.initializer if t.name == first_conv_weight)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.01), weight.name))
    perturbed = tmp_path / "perturbed.onnx"
    onnx.save(model, str(perturbed))
    version = publish_model(store, onnx_file=perturbed)
    folder = store.version_dir("demo", version)
    files_before = sorted(p.name for p in folder.iterdir())
    manifest_before = (folder / "manifest.json").read_bytes()

    with pytest.raises(JobFailed) as failed:
        convert_version(store, "demo", version, "onnxruntime", LocalContext(quiet=True))

    message = failed.value.message
    print(message)
    assert "max abs diff boxes" in message and "scores" in message and "tolerance 0.0001" in message
    assert failed.value.details["passed"] is False
    assert sorted(p.name for p in folder.iterdir()) == files_before
    assert (folder / "manifest.json").read_bytes() == manifest_before
    assert list(store.tmp_dir.iterdir()) == []


def test_converting_again_reuses_the_recorded_artefact(store, publish_model):
    version = publish_model(store)
    first = convert_version(store, "demo", version, "auto", LocalContext(quiet=True))
    manifest = store.manifest("demo", version)

    again = convert_version(store, "demo", version, "onnxruntime", LocalContext(quiet=True))

    assert again == first
    assert store.manifest("demo", version) == manifest


def test_unknown_backend_is_unavailable():
    with pytest.raises(BackendUnavailable, match="unknown converter backend 'tensorrt'"):
        select_backend("tensorrt")


def test_backend_without_its_libraries_names_what_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxruntime" else real_find_spec(name, *args))

    with pytest.raises(BackendUnavailable, match=r"needs python module 'onnxruntime'.*pip install") as named:
        select_backend("onnxruntime")
    with pytest.raises(BackendUnavailable, match="no converter backend is available"):
        select_backend("auto")
    assert named.value.status == 503
