"""A full store, for real: a 4 MiB tmpfs mounted in a private mount namespace
(``unshare -Urm``, no root needed) holds the store. A dataset upload that does not fit
answers 507 and leaves nothing; an ingest whose archive fits but whose dataset does not
fails and leaves nothing; a version being published that does not fit leaves no version
and no scratch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cli.demo import zip_folder
from needs import program
from ssdstack.datasets.synth import synthesize

REPO_ROOT = Path(__file__).resolve().parent.parent
STORE_MIB = 4

# Runs inside the namespace, with the store on the tmpfs: prints what it found, as JSON.
_ON_A_FULL_STORE = """
import json, os, sys
from pathlib import Path

from fastapi.testclient import TestClient

from gateway.main import create_app
from ssdstack.datasets.store import DatasetStore, UploadLimits
from ssdstack.model_store import ModelStore
from ssdstack.settings import GatewaySettings

store, archive = Path(sys.argv[1]), Path(sys.argv[2])
settings = GatewaySettings(store_dir=store, api_keys=["disk-full-test-key-0"], redis_url="redis://127.0.0.1:1/0")
with TestClient(create_app(settings)) as client:  # twice the archive does not fit
    answer = client.post("/v1/datasets", params={"name": "big"}, content=archive.read_bytes() * 2,
                         headers={"X-API-Key": "disk-full-test-key-0", "Content-Type": "application/zip"})
found = {"status": answer.status_code, "body": answer.json()}

datasets = DatasetStore(store)  # the archive fits, the dataset unpacked from it does not
upload = datasets.upload_path("0" * 32)
upload.parent.mkdir(parents=True, exist_ok=True)
upload.write_bytes(archive.read_bytes())
try:
    datasets.ingest_upload("big", "0" * 32, UploadLimits(1 << 30, 1000, 1 << 30, 10**8), "auto", "0" * 32)
except OSError as error:
    found["ingest_errno"] = error.errno

models = ModelStore(store)
try:
    with models.staging() as staged:
        (staged / "model.onnx").write_bytes(os.urandom(8 * 1024 * 1024))
        models.publish("m", staged, {"labels": ["a"], "serving": {}}, {"onnx": "model.onnx"})
except OSError as error:
    found["publish_errno"] = error.errno
found["left"] = sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())
print(json.dumps(found))
"""


def test_a_full_store_answers_507_and_keeps_nothing_partial(tmp_path):
    unshare = program("unshare")
    synthesize(tmp_path / "synth", images=120, classes=2, seed=5)
    archive = zip_folder(tmp_path / "synth", tmp_path / "big.zip")
    assert archive.stat().st_size < STORE_MIB * 1024 * 1024 < 2 * archive.stat().st_size  # fits; unpacked, not
    store = tmp_path / "store"
    store.mkdir()
    done = subprocess.run(
        [unshare, "-Urm", "sh", "-c", f'mount -t tmpfs -o size={STORE_MIB}m tmpfs "$1" && exec "$2" -c "$3" "$1" "$4"',
         "sh", str(store), sys.executable, _ON_A_FULL_STORE, str(archive)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["status"] == 507, found["body"]
    assert found["body"]["error"]["code"] == "insufficient_storage"
    assert "nothing of this request was kept" in found["body"]["error"]["message"]
    assert found["ingest_errno"] == 28 and found["publish_errno"] == 28  # ENOSPC
    assert found["left"] == [], found["left"]  # no dataset, no version, no scratch
