"""What was written before the structure change still loads, and still runs: the store's
manifests, ``deployed`` and ``dataset.json`` files, a job record in flight with a message
that names no stage, detect messages without a ``schema_version``; and every CLI help
offers at least what it did. (tests/integration/test_golden_answers.py compares the live
REST answers.)"""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys

import pytest
from celery.exceptions import Retry

from cli.main import build_parser
from golden_answers import ANSWERS, CLI_HELP, GOLDEN_DIR, assert_superset
from inferencer.backends import select_engine
from inferencer.backends.onnxruntime import OnnxRuntimeEngine
from ssdstack.celery_app import create_app
from ssdstack.datasets.store import DatasetStore
from ssdstack.detect_protocol import DetectAnswer, DetectError, decode_reply, read_request
from ssdstack.errors import Conflict, InvalidInput
from ssdstack.jobs.pipeline import CONVERTER, JOB_TYPES, recorded_outputs, stage_in_message
from ssdstack.jobs.stage_data import ConvertInput, Converted, Evaluated
from ssdstack.model_store import ModelStore
from ssdstack.settings import WorkerSettings
from ssdstack.worker import WorkerRuntime

# Option names (--out, -h) and choices ({coco,voc,text}) a help text offers.
OPTION = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")
CHOICES = re.compile(r"\{([\w,.-]+)\}")


@pytest.fixture
def store(tmp_path) -> ModelStore:
    shutil.copytree(GOLDEN_DIR / "store", tmp_path / "store")
    return ModelStore(tmp_path / "store")


def test_manifests_deployed_and_dataset_files_still_load(store):
    assert store.models() == ANSWERS["list_models"]["models"]
    versions = store.versions("golden")
    assert [v["version"] for v in versions] == [1, 2, 3] and all(v["schema"] == 1 for v in versions)
    assert "schema_version" not in versions[0]  # written before the key existed
    assert store.deployed("golden") == {key: ANSWERS["deploy"][key] for key in ("backends", "deployed_at", "version")}
    assert_superset("get_version", store.manifest("golden", 1))
    dataset = DatasetStore(store.root).get("golden")
    assert dataset.pop("state") == "ready"  # a folder of the previous release is a ready dataset
    assert dataset == ANSWERS["get_dataset"]


def test_a_golden_manifest_still_picks_and_describes_its_engine(store):
    manifest = store.manifest("golden", 1)
    engine = select_engine("auto", None, manifest)
    assert isinstance(engine, OnnxRuntimeEngine)
    detector = engine.detector(manifest, "golden", 1)
    assert detector.labels == tuple(manifest["labels"]) and detector.image_size == manifest["image_size"]


def test_a_manifest_of_a_newer_release_is_refused_by_name(store):
    path = store.version_dir("golden", 2) / "manifest.json"
    path.write_text(path.read_text().replace('"schema": 1', '"schema": 1, "schema_version": 2'))
    with pytest.raises(Conflict, match="schema 2, written by a newer release"):
        store.manifest("golden", 2)


class Task:
    """What the runtime uses of a bound Celery task."""

    def retry(self, **options):
        return Retry("retry")


def test_a_pipeline_record_in_flight_before_the_change_runs_on(clean_redis, store):
    """The golden pipeline's record as it stood when handed to the converter (stage named by
    its task, an untyped result, no stages list) runs its convert stage with the new code,
    which reads model and version from the old result, and goes on to evaluate; the
    evaluate and deploy stages still see the old result's trained metrics."""
    record = dict(ANSWERS["redis_job_record_pipeline"], state="running", stage="converter.convert", stage_order="1")
    del record["finished_at"]
    old_result = {key: value for key, value in
                  json.loads(record["result"]).items() if key not in ("conversion", "deployed")}
    old_result["metrics"].pop("served")
    record["result"] = json.dumps(old_result)
    settings = WorkerSettings(redis_url=clean_redis, store_dir=store.root)
    runtime = WorkerRuntime("converter", ["convert"], settings, lambda: {})
    runtime.jobs.redis.hset(f"ssdstack:job:{record['id']}", mapping=record)
    seen = []

    def convert(ctx, data: ConvertInput) -> Converted:
        seen.append(data)
        return Converted(model=data.model, version=data.version, backend="onnxruntime",
                         artefact="serving_onnxruntime", check={"passed": True})

    runtime.serve(create_app(settings), CONVERTER, {"convert": convert})
    # The old trainer sent the converter's message with the task id <job id>.converter.convert.
    runtime.run_job(Task(), record["id"], stage_in_message(f"{record['id']}.converter.convert", record["id"]))
    job = runtime.jobs.get(record["id"])
    assert [(d.model, d.version, d.backend) for d in seen] == [("golden", 1, "auto")]
    assert job["stage"] == "evaluate" and job["state"] == "running"
    assert job["result"]["metrics"]["trained"] == old_result["metrics"]["trained"]
    assert job["result"]["conversion"]["backend"] == "onnxruntime"
    assert [(s["name"], s["state"]) for s in job["stages"]] == [
        ("train", "succeeded"), ("export", "succeeded"), ("convert", "succeeded"), ("evaluate", "pending"),
        ("deploy", "pending")]
    pipeline = JOB_TYPES["pipeline"]
    outputs, base = recorded_outputs(pipeline, job)  # what the inferencer's stages will read
    deploy_input = pipeline.input_for(pipeline.index("deploy"), pipeline.spec.model_validate(job["spec"]),
                                      dict(outputs, evaluate=Evaluated(model="golden", version=1, engine="onnxruntime",
                                                                       metrics={"served": {"AP": 0.5}})), base)
    assert deploy_input.metrics["trained"] == old_result["metrics"]["trained"]
    assert deploy_input.metrics["served"] == {"AP": 0.5}


def test_detect_replies_without_a_schema_version_still_read():
    golden_answer = {key: value for key, value in ANSWERS["detect"].items() if key != "latency_ms"}
    assert decode_reply(json.dumps(golden_answer)) == DetectAnswer.model_validate(golden_answer)
    error = {"error": {"code": "invalid_image", "message": "not an image Pillow can decode", "details": None},
             "status": 400}
    assert isinstance(decode_reply(json.dumps(error)), DetectError)


def test_a_previous_gateways_request_is_refused_naming_the_upgrade():
    previous_request = {"reply_key": "ssdstack:reply:" + "0" * 32, "image_b64": "aGk=", "model": None,
                        "score_threshold": None, "iou_threshold": None, "max_detections": None}
    with pytest.raises(InvalidInput, match="upgrade the gateway"):
        read_request(previous_request)


def _offered(text: str) -> set[str]:
    return set(OPTION.findall(text)) | {choice for group in CHOICES.findall(text) for choice in group.split(",")}


def _help(words: list[str]) -> str:
    parser = build_parser()
    for word in words:
        parser = next(action for action in parser._subparsers._group_actions).choices[word]
    return parser.format_help()


@pytest.mark.parametrize("command", sorted(name for name in CLI_HELP if name.startswith("ssdstack")))
def test_every_cli_help_offers_what_it_did(command):
    missing = _offered(CLI_HELP[command]) - _offered(_help(command.split()[1:]))
    assert not missing, f"`{command} --help` lost {sorted(missing)}"


def test_the_healthcheck_help_offers_what_it_did():
    done = subprocess.run([sys.executable, "-m", "ssdstack.healthcheck", "--help"], capture_output=True, text=True)
    golden = CLI_HELP["python -m ssdstack.healthcheck"]
    assert not _offered(golden) - _offered(done.stdout)


def test_raw_records_compare_by_their_decoded_fields():
    newer = copy.deepcopy(ANSWERS["redis_job_record_train"])
    newer["stages"] = "[]"
    assert_superset("redis_job_record_train", newer)
    del newer["progress"]
    with pytest.raises(AssertionError, match="progress"):
        assert_superset("redis_job_record_train", newer)
