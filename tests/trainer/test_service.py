"""Train, transfer, import and export jobs through the trainer's stages (run in process,
as the CLI's local verbs do), on a real store: what they publish, and that bad input
fails the job and publishes nothing."""
from __future__ import annotations

import shutil

import numpy as np
import needs
import pytest

ms = needs.module("mindspore")

from ssdstack.datasets.synth import synthesize  # noqa: E402
from ssdstack.errors import JobFailed, NotFound  # noqa: E402
from ssdstack.jobs.context import LocalContext  # noqa: E402
from ssdstack.jobs.pipeline import JOB_TYPES, run_in_process  # noqa: E402
from ssdstack.jobs.specs import ExportSpec, ImportSpec, TrainSpec  # noqa: E402
from ssdstack.model_store import ModelStore  # noqa: E402
from ssdstack.settings import WorkerSettings  # noqa: E402
from trainer.service import remove_unneeded_job_folders  # noqa: E402
from trainer.tasks import stage_runners  # noqa: E402

FAST = dict(architecture="ssd_lite_mobilenet_v2", epochs=1, batch_size=4, lr=0.01, warmup_epochs=0)


def _run(spec, store_dir, job_id: str) -> dict:
    """The job's result, its stages run here as the trainer worker runs them."""
    settings = WorkerSettings(store_dir=store_dir, work_dir=store_dir.parent / "work", train_device="CPU")
    return run_in_process(JOB_TYPES[spec.type], spec, stage_runners(settings), LocalContext(job_id, quiet=True))


@pytest.fixture(scope="module")
def store(tmp_path_factory, store_dataset):
    root = tmp_path_factory.mktemp("service")
    store_dir = root / "store"
    for name, classes in (("two", 2), ("three", 3)):
        synthesize(root / name, images=10, classes=classes, seed=classes, val_fraction=0.2, min_side=96, max_side=160)
        store_dataset(store_dir, root / name, name)
    result = _run(TrainSpec(dataset="two", model="base", eval_every=1, **FAST), store_dir, "j-base")
    assert result["version"] == 1
    return store_dir


def _versions(store_dir, name: str) -> list[int]:
    return [entry["version"] for entry in ModelStore(store_dir).versions(name)] if (
        store_dir / "models" / name).exists() else []


def test_a_trained_version_carries_its_evaluation_report_and_training_record(store):
    models = ModelStore(store)
    manifest = models.manifest("base", 1)
    trained = manifest["metrics"]["trained"]
    assert set(trained["coco"]) >= {"AP", "AP50", "AR_100"} and trained["engine"] == "mindspore"
    assert [row["name"] for row in trained["per_class"]] == manifest["labels"]
    report = models.version_dir("base", 1) / trained["report"]
    assert sorted(p.name for p in report.iterdir()) == ["detections.json", "metrics.json", "per_class_ap.csv",
                                                         "pr_curves.png"]
    assert (report / "pr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert models.verify("base", 1) == []
    training = manifest["training"]
    assert training["best"]["epoch"] == 1 and [h["epoch"] for h in training["eval_history"]] == [1]
    assert training["amp_level"] == "O0" and training["clip_global_norm"] is None
    assert "count" in training["dataset_warnings"]
    assert list((store / "cache" / "mindrecord").glob("*-train-v1/train.mindrecord"))


def test_pretrained_on_another_class_count_reinitialises_the_head(store):
    spec = TrainSpec(dataset="three", model="transfer", pretrained="base:1", freeze="backbone", **FAST)
    result = _run(spec, store, "j-transfer")
    manifest = ModelStore(store).manifest("transfer", result["version"])
    loaded = manifest["training"]["initialised"]["pretrained"]
    assert loaded["source"] == "base:1" and loaded["reinitialised_count"] > 0
    assert all("cls_heads" in name for name in loaded["reinitialised"])
    assert manifest["num_classes"] == 4 and manifest["lineage"]["pretrained"] == "base:1"


@pytest.mark.parametrize("overrides, words", [
    ({"pretrained": "base:1", "head_filter": "none"}, "differ in shape"),
    ({"pretrained": "nowhere.ckpt"}, "was not uploaded"),
    ({"backbone_checkpoint": "unrelated.ckpt"}, "matches no parameter of the backbone"),
    ({"pretrained": "garbage.ckpt"}, "garbage.ckpt is not a readable MindSpore checkpoint"),
])
def test_starting_weights_that_do_not_fit_fail_and_publish_nothing(store, overrides, words):
    folder = store / "checkpoints"
    folder.mkdir(exist_ok=True)
    if not (folder / "unrelated.ckpt").exists():
        ms.save_checkpoint([{"name": "fc.weight", "data": ms.Tensor(np.zeros((4, 3), np.float32))}],
                           str(folder / "unrelated.ckpt"))
        (folder / "garbage.ckpt").write_bytes(b"not a checkpoint")
    spec = TrainSpec(dataset="three", model="refused", **dict(FAST, **overrides))
    with pytest.raises((JobFailed, NotFound), match=words):
        _run(spec, store, "j-refused")
    assert _versions(store, "refused") == []


def test_import_checks_the_checkpoint_and_publishes_a_servable_version(store):
    shutil.copy(ModelStore(store).artefact_path("base", 1, "checkpoint"), store / "checkpoints" / "base-v1.ckpt")
    labels = ModelStore(store).manifest("base", 1)["labels"]
    spec = ImportSpec(checkpoint="base-v1.ckpt", architecture="ssd_lite_mobilenet_v2", labels=labels,
                      model="imported", dataset="two")
    result = _run(spec, store, "j-import")
    manifest = ModelStore(store).manifest("imported", result["version"])
    assert set(manifest["artefacts"]) >= {"checkpoint", "mindir", "onnx", "reference", "labels"}
    original = ModelStore(store).manifest("base", 1)["metrics"]["trained"]["coco"]["AP"]
    assert manifest["metrics"]["trained"]["coco"]["AP"] == pytest.approx(original, abs=1e-6)
    assert manifest["training"]["imported_from"] == "base-v1.ckpt"


@pytest.mark.parametrize("architecture, labels, words", [
    ("ssd_lite_mobilenet_v2", ["a", "b", "c", "d"], "differ in shape"),
    ("ssd300_mobilenet_v2", ["a", "b"], "does not fit|matches no parameter"),
])
def test_import_of_a_checkpoint_that_does_not_fit_fails(store, architecture, labels, words):
    if not (store / "checkpoints" / "base-v1.ckpt").exists():
        shutil.copy(ModelStore(store).artefact_path("base", 1, "checkpoint"), store / "checkpoints" / "base-v1.ckpt")
    spec = ImportSpec(checkpoint="base-v1.ckpt", architecture=architecture, labels=labels, model="misfit")
    with pytest.raises(JobFailed, match=words):
        _run(spec, store, "j-misfit")
    assert _versions(store, "misfit") == []


def test_export_makes_a_new_version_from_the_same_weights(store):
    result = _run(ExportSpec(model="base", version=1, formats=["ONNX"]), store, "j-export")
    models = ModelStore(store)
    manifest = models.manifest("base", result["version"])
    assert manifest["lineage"]["parent_version"] == 1 and "mindir" not in manifest["artefacts"]
    with np.load(models.artefact_path("base", 1, "reference")) as before, \
            np.load(models.artefact_path("base", result["version"], "reference")) as after:
        np.testing.assert_array_equal(before["images"], after["images"])
        np.testing.assert_allclose(before["scores"], after["scores"], atol=1e-6)


def test_air_export_off_ascend_fails_naming_the_device(store):
    before = _versions(store, "base")
    with pytest.raises(JobFailed, match="AIR export needs an Ascend device; this trainer runs on CPU"):
        _run(ExportSpec(model="base", version=1, formats=["AIR"]), store, "j-air")
    assert _versions(store, "base") == before


@pytest.mark.slow
def test_two_data_parallel_ranks_through_msrun_train_and_publish(store):
    spec = TrainSpec(dataset="two", model="parallel", devices=2, **dict(FAST, batch_size=2))
    result = _run(spec, store, "j-parallel")
    manifest = ModelStore(store).manifest("parallel", result["version"])
    assert manifest["training"]["devices"] == 2 and np.isfinite(manifest["training"]["final_loss"])
    logs = store.parent / "work" / "j-parallel" / "ranks"
    assert (logs / "worker_0.log").exists() and (logs / "worker_1.log").exists()


def test_model_import_command_publishes_from_a_local_file(store, tmp_path, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setenv("SSDSTACK_STORE_DIR", str(store))
    monkeypatch.setenv("SSDSTACK_WORK_DIR", str(tmp_path / "work"))
    local = tmp_path / "zoo model.ckpt"
    shutil.copy(ModelStore(store).artefact_path("base", 1, "checkpoint"), local)
    labels = tmp_path / "labels.txt"
    labels.write_text("background\n" + "\n".join(ModelStore(store).manifest("base", 1)["labels"]) + "\n")
    assert main(["model", "import", str(local), "--architecture", "ssd_lite_mobilenet_v2",
                 "--labels", str(labels), "--model", "from-cli"]) == 0
    assert ModelStore(store).manifest("from-cli", 1)["training"]["imported_from"] == "zoo model.ckpt"
    labels.write_text("only-one\n")
    assert main(["model", "import", str(local), "--architecture", "ssd_lite_mobilenet_v2",
                 "--labels", str(labels), "--model", "from-cli"]) == 1
    assert "differ in shape" in capsys.readouterr().err
    assert _versions(store, "from-cli") == [1]


def test_the_folders_of_jobs_no_trainer_stage_needs_are_removed(tmp_path):
    ended, waiting = "a" * 32, "b" * 32  # job ids: one ended elsewhere, one still due here
    store, work = tmp_path / "store", tmp_path / "work"
    for folder in (store / "jobs" / ended / "checkpoints", store / "jobs" / waiting, work / ended, work / "rank_0"):
        folder.mkdir(parents=True)
    assert remove_unneeded_job_folders(store, work, lambda job_id: job_id == ended) == [ended]
    assert sorted(p.name for p in (store / "jobs").iterdir()) == [waiting]
    assert sorted(p.name for p in work.iterdir()) == ["rank_0"]  # not a job's folder: left alone
