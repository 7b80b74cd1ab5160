"""The ``atc`` converter backend against a fake of CANN's ``atc`` (and of the driver's
``npu-smi``) in tests/fakes/ascend/bin: no machine here has CANN or an NPU, so the fake
stands in for the real tool at its process boundary. The flags it records are checked
against values written by hand from ../shared/ASCEND.md ("ATC": the SSD reference
conversion, ``--output`` without suffix, success = exit 0 + "ATC run success" + the .om).
Building a real ``.om`` and running it is a manual procedure on an Ascend host.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import onnx
import pytest
from pydantic import ValidationError

from converter.backends import select_backend
from converter.backends.atc.backend import ERROR_CODE
from converter.service import convert_version
from ssdstack.errors import BackendUnavailable, Conflict, InvalidInput, JobFailed
from ssdstack.jobs.context import LocalContext
from ssdstack.jobs.specs import AtcOptions
from ssdstack.model_store import ModelStore, sha256_file

FAKE_BIN = Path(__file__).resolve().parent.parent / "fakes" / "ascend" / "bin"
PATH_KEYS = ("model", "output", "insert_op_conf")
# ASCEND.md's reference SSD conversion (framework 1, NCHW, Ascend310, disable_reuse_memory 0,
# insert_op_conf, allow_fp32_to_fp16, high_precision) plus FP32 outputs and error-level logs;
# paths by file name (--output has no suffix: atc appends .om).
REFERENCE_AIR_FLAGS = {
    "framework": "1", "model": "model.air", "output": "model", "input_format": "NCHW",
    "soc_version": "Ascend310", "disable_reuse_memory": "0", "insert_op_conf": "aipp.cfg",
    "precision_mode": "allow_fp32_to_fp16", "op_select_implmode": "high_precision",
    "output_type": "FP32", "log": "error",
}


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "store")


@pytest.fixture(autouse=True)
def record(monkeypatch, tmp_path) -> Path:
    """The fakes first on PATH, in their default modes; returns the fake atc's record file."""
    for variable in ("FAKE_ATC_MODE", "FAKE_ATC_ERROR_CODE", "FAKE_ATC_SLEEP_S", "FAKE_NPU_CHIP",
                     "FAKE_NPU_COUNT", "FAKE_NPU_SMI_FAIL", "SSDSTACK_ASCEND_SOC_VERSION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join([str(FAKE_BIN), os.environ.get("PATH", "")]))
    path = tmp_path / "atc-calls.jsonl"
    monkeypatch.setenv("FAKE_ATC_RECORD", str(path))
    return path


@pytest.fixture
def publish_air(exported_model):
    """``publish_air(store, device="Ascend", air=True) -> version``: like publish_model, with
    ``training.device`` in the manifest and, with ``air``, a dummy ``model.air`` artefact."""
    fields = json.loads((exported_model / "manifest_fields.json").read_text())

    def publish(store: ModelStore, device: str = "Ascend", air: bool = True) -> int:
        artefacts = {"onnx": "model.onnx", "reference": "reference.npz"}
        with store.staging() as staged:
            shutil.copyfile(exported_model / "model.onnx", staged / "model.onnx")
            shutil.copyfile(exported_model / "reference.npz", staged / "reference.npz")
            if air:
                (staged / "model.air").write_bytes(b"dummy AIR for the fake atc\n")
                artefacts["air"] = "model.air"
            manifest = store.publish("demo", staged, dict(fields, training={"device": device}), artefacts)
        return manifest["version"]

    return publish


@pytest.fixture(scope="module")
def input_name(exported_model) -> str:
    return onnx.load(str(exported_model / "model.onnx"), load_external_data=False).graph.input[0].name


def calls(record: Path) -> list[list[str]]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def flags(argv: list[str], names_only: bool = True) -> dict[str, str]:
    """``--key=value`` words as a dict (no key twice); path values by file name."""
    parsed = {}
    for word in argv:
        assert word.startswith("--") and "=" in word, word
        key, value = word[2:].split("=", 1)
        assert key not in parsed, f"--{key} given twice"
        parsed[key] = Path(value).name if names_only and key in PATH_KEYS else value
    return parsed


def om_payload(path: Path) -> dict:
    data = path.read_bytes()
    assert data.startswith(b"FAKE-OM\n")
    return json.loads(data[len(b"FAKE-OM\n"):])


def processes_mentioning(text: str) -> list[int]:
    """Ids of live processes whose command line contains ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_air_conversion_uses_the_reference_flags_and_is_recorded(store, publish_air, record):
    version = publish_air(store)
    folder = store.version_dir("demo", version)
    assert store.manifest("demo", version)["image_size"] == 160
    ctx = LocalContext(quiet=True)

    result = convert_version(store, "demo", version, "atc", ctx, atc=AtcOptions(soc_version="Ascend310"))

    [argv] = calls(record)
    assert flags(argv) == REFERENCE_AIR_FLAGS  # no --input_shape, nothing else
    full = flags(argv, names_only=False)
    assert Path(full["model"]) == folder / "model.air"
    assert Path(full["output"]).parent == Path(full["insert_op_conf"]).parent
    assert Path(full["output"]).parent.parent == store.tmp_dir
    assert result.backend == "atc" and result.artefact == "serving_om" and result.check["passed"] is None

    manifest = store.manifest("demo", version)
    assert manifest["artefacts"]["serving_om"]["file"] == "model.om"
    assert manifest["artefacts"]["aipp_cfg"]["file"] == "aipp.cfg"
    for kind, file in (("serving_om", "model.om"), ("aipp_cfg", "aipp.cfg")):
        assert manifest["artefacts"][kind]["sha256"] == sha256_file(folder / file)
    assert store.verify("demo", version) == []
    serving = manifest["serving"]["atc"]
    details = serving["details"]
    # The very words atc ran with (--output and --insert_op_conf point into the staging
    # folder, gone now: by file name they are the version's model.om and aipp.cfg).
    assert details["command"] == ["atc"] + argv
    assert details["soc_version"] == "Ascend310" and details["framework"] == 1
    assert details["image_format"] == "yuv420sp"  # 160 px suits DVPP, so "auto" picks its format
    assert details["source"] == "model.air"
    assert details["source_sha256"] == manifest["artefacts"]["air"]["sha256"]
    assert serving["artefact"] == "serving_om" and serving["options"]["soc_version"] == "Ascend310"

    payload = om_payload(folder / "model.om")
    aipp = (folder / "aipp.cfg").read_text()
    assert payload["aipp"] == aipp and "input_format : YUV420SP_U8" in aipp
    assert payload["soc_version"] == "Ascend310" and payload["framework"] == 1
    assert payload["model_sha256"] == manifest["artefacts"]["air"]["sha256"]
    assert payload["dynamic_batch_size"] is None
    assert f"atc: {details['command_line']}" in ctx.lines
    assert any("ATC run success" in line for line in ctx.lines)
    assert list(store.tmp_dir.iterdir()) == []


@pytest.mark.parametrize("dynamic_batch", [[4, 1, 2], [4, 1, 2, 2]])
def test_onnx_dynamic_batch(store, publish_model, record, input_name, dynamic_batch):
    version = publish_model(store)

    convert_version(store, "demo", version, "atc", LocalContext(quiet=True),
                    atc=AtcOptions(soc_version="Ascend310P3", image_format="rgb", dynamic_batch=dynamic_batch))

    [argv] = calls(record)
    parsed = flags(argv)
    assert parsed["framework"] == "5" and parsed["model"] == "model.onnx" and parsed["soc_version"] == "Ascend310P3"
    assert parsed["input_shape"] == f"{input_name}:-1,3,160,160"
    assert parsed["dynamic_batch_size"] == "1,2,4"
    folder = store.version_dir("demo", version)
    payload = om_payload(folder / "model.om")
    assert payload["dynamic_batch_size"] == "1,2,4" and payload["framework"] == 5
    assert "input_format : RGB888_U8" in payload["aipp"]
    details = store.manifest("demo", version)["serving"]["atc"]["details"]
    assert details["dynamic_batch"] == [1, 2, 4] and details["batch_size"] is None
    assert details["image_format"] == "rgb"


def test_onnx_static_batch(store, publish_model, record, input_name):
    version = publish_model(store)

    convert_version(store, "demo", version, "atc", LocalContext(quiet=True),
                    atc=AtcOptions(soc_version="Ascend310P3", batch_size=4))

    parsed = flags(calls(record)[0])
    assert parsed["input_shape"] == f"{input_name}:4,3,160,160"
    assert "dynamic_batch_size" not in parsed
    details = store.manifest("demo", version)["serving"]["atc"]["details"]
    assert details["batch_size"] == 4 and details["dynamic_batch"] is None


@pytest.mark.parametrize("env, atc, message, exit_status, codes", [
    ({"FAKE_ATC_MODE": "fail"}, {}, r"exit status 255 \(EZ3003\)", 255, ["EZ3003"]),
    ({"FAKE_ATC_MODE": "fail", "FAKE_ATC_ERROR_CODE": "E19999"}, {}, r"exit status 255 \(E19999\)", 255, ["E19999"]),
    ({"FAKE_ATC_MODE": "no_success_line"}, {}, "without printing 'ATC run success'", 0, []),
    ({"FAKE_ATC_MODE": "no_om"}, {}, "wrote no model.om", 0, []),
    ({"FAKE_ATC_MODE": "hang"}, {"timeout_s": 10}, "did not finish within 10 s", None, None),
], ids=["fail-EZ3003", "fail-E19999", "no_success_line", "no_om", "hang"])
def test_failed_atc_leaves_the_version_untouched(store, publish_air, monkeypatch, record, env, atc, message,
                                                 exit_status, codes):
    version = publish_air(store)
    folder = store.version_dir("demo", version)
    files_before = sorted(p.name for p in folder.iterdir())
    manifest_before = (folder / "manifest.json").read_bytes()
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    ctx = LocalContext(quiet=True)

    with pytest.raises(JobFailed, match=message) as failed:
        convert_version(store, "demo", version, "atc", ctx, atc=AtcOptions(soc_version="Ascend310", **atc))

    details = failed.value.details
    assert len(calls(record)) == 1 and details["last_lines"]
    if exit_status is None:  # hang: stopped at atc.timeout_s, its process group killed
        assert details["last_lines"] == ["ATC start working now, please wait for a moment."]
        assert processes_mentioning(str(store.root)) == []
    else:
        assert details["exit_status"] == exit_status and details["error_codes"] == codes
    if exit_status == 255:
        assert details["last_lines"][-1].startswith("ATC run failed")
        assert f"{codes[0]}: No supported Ops kernel" in failed.value.message
    assert (folder / "manifest.json").read_bytes() == manifest_before
    assert sorted(p.name for p in folder.iterdir()) == files_before
    assert not (folder / "model.om").exists() and not (folder / "aipp.cfg").exists()
    assert list(store.tmp_dir.iterdir()) == []


def test_a_failed_runs_detailed_logs_outlive_the_staging_folder(store, publish_air, monkeypatch, tmp_path):
    version = publish_air(store)
    monkeypatch.setenv("FAKE_ATC_MODE", "fail")
    monkeypatch.delenv("ASCEND_PROCESS_LOG_PATH", raising=False)
    logs = tmp_path / "atc-logs" / "job-1"

    with pytest.raises(JobFailed, match=f"detailed logs in {logs}") as failed:
        convert_version(store, "demo", version, "atc", LocalContext(quiet=True), atc=AtcOptions(soc_version="Ascend310"),
                        log_dir=logs)
    assert failed.value.details["log_dir"] == str(logs)


def test_an_error_code_inside_a_path_is_not_an_atc_error():
    assert ERROR_CODE.findall("[INFO] ATC: parse model [/data/E12345/model.air] success.") == []
    assert ERROR_CODE.findall("E10001: Value [x] for parameter [--soc_version] is invalid.") == ["E10001"]


def test_a_dynamic_batch_needs_two_different_sizes():
    with pytest.raises(ValidationError, match="two different sizes"):
        AtcOptions(dynamic_batch=[2, 2])
    assert AtcOptions(dynamic_batch=[4, 1, 2, 1]).dynamic_batch == [1, 2, 4]


def test_without_atc_on_path_the_backend_names_the_cann_toolkit(store, publish_model, monkeypatch, tmp_path):
    version = publish_model(store)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    with pytest.raises(BackendUnavailable, match=r"program 'atc' on PATH.*CANN toolkit"):
        convert_version(store, "demo", version, "atc", LocalContext(quiet=True), atc=AtcOptions(soc_version="Ascend310"))


def test_unknown_soc_version_is_rejected_by_the_options():
    with pytest.raises(ValidationError, match="soc_version"):
        AtcOptions(soc_version="Ascend999")


def test_air_source_needs_an_ascend_trained_version(store, publish_air, record):
    version = publish_air(store, device="CPU", air=False)

    with pytest.raises(InvalidInput, match=r"trained on CPU.*source 'onnx'"):
        convert_version(store, "demo", version, "atc", LocalContext(quiet=True),
                        atc=AtcOptions(soc_version="Ascend310", source="air"))
    assert calls(record) == []


def test_batching_an_air_source_is_refused(store, publish_air, record):
    version = publish_air(store)

    with pytest.raises(InvalidInput, match="batching needs source 'onnx'"):
        convert_version(store, "demo", version, "atc", LocalContext(quiet=True),
                        atc=AtcOptions(soc_version="Ascend310", batch_size=2))
    assert calls(record) == [] and "serving" not in store.manifest("demo", version)


def test_without_any_target_chip_the_error_names_the_setting(store, publish_air, monkeypatch, record):
    version = publish_air(store)
    monkeypatch.setenv("FAKE_NPU_COUNT", "0")

    with pytest.raises(InvalidInput, match="SSDSTACK_ASCEND_SOC_VERSION"):
        convert_version(store, "demo", version, "atc", LocalContext(quiet=True))
    assert calls(record) == []


def test_failing_npu_smi_is_reported(store, publish_air, monkeypatch, record):
    version = publish_air(store)
    monkeypatch.setenv("FAKE_NPU_SMI_FAIL", "1")

    with pytest.raises(BackendUnavailable, match=r"npu-smi info failed \(exit status 1\): dcmi module"):
        convert_version(store, "demo", version, "atc", LocalContext(quiet=True))
    assert calls(record) == []


@pytest.mark.parametrize("default, expected", [(None, "Ascend910B3"), ("Ascend310P3", "Ascend310P3")])
def test_target_chip_from_npu_smi_unless_the_converter_names_one(store, publish_air, monkeypatch, record,
                                                                 default, expected):
    version = publish_air(store)
    monkeypatch.setenv("FAKE_NPU_CHIP", "910B3")

    convert_version(store, "demo", version, "atc", LocalContext(quiet=True), default_soc_version=default)

    assert flags(calls(record)[0])["soc_version"] == expected
    assert store.manifest("demo", version)["serving"]["atc"]["details"]["soc_version"] == expected


def test_converting_again_reuses_the_om_and_other_options_conflict(store, publish_air, record):
    version = publish_air(store)
    first = convert_version(store, "demo", version, "atc", LocalContext(quiet=True), atc=AtcOptions(soc_version="Ascend310"))
    manifest = store.manifest("demo", version)

    again = convert_version(store, "demo", version, "atc", LocalContext(quiet=True), atc=AtcOptions(soc_version="Ascend310"))

    assert again == first and len(calls(record)) == 1
    assert store.manifest("demo", version) == manifest
    with pytest.raises(Conflict, match="export"):
        convert_version(store, "demo", version, "atc", LocalContext(quiet=True), atc=AtcOptions(soc_version="Ascend310P3"))
    assert len(calls(record)) == 1 and store.manifest("demo", version) == manifest


def test_the_chip_from_the_converters_setting_counts_as_an_option(store, publish_air, record):
    version = publish_air(store)
    convert = functools.partial(convert_version, store, "demo", version, "atc", LocalContext(quiet=True))
    first = convert(default_soc_version="Ascend310")

    assert convert(atc=AtcOptions(soc_version="Ascend310")) == first and len(calls(record)) == 1
    with pytest.raises(Conflict, match="Ascend310P3"):
        convert(default_soc_version="Ascend310P3")


def test_auto_takes_atc_only_when_the_target_chip_is_known(monkeypatch):
    monkeypatch.setenv("FAKE_NPU_COUNT", "0")  # CANN on PATH, no NPU: ATC alone cannot pick a chip
    assert select_backend("auto").name == "onnxruntime"
    assert select_backend("auto", default_soc_version="Ascend310P3").name == "atc"
    monkeypatch.setenv("FAKE_NPU_COUNT", "1")
    assert select_backend("auto").name == "atc"
