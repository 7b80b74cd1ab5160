"""The ``atc`` and ``npu-smi`` test fakes (tests/fakes/ascend/bin) against the vendor's
documented behaviour they stand in for: run as the product runs them, by name from PATH."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

BIN = Path(__file__).resolve().parent / "ascend" / "bin"
START = "ATC start working now, please wait for a moment."
SUCCESS = "ATC run success, welcome to the next use."
FAILED = "ATC run failed, Please check the detail log, Try 'atc --help' for more information"
AIPP = "aipp_op {\n  aipp_mode : static\n  input_format : RGB888_U8\n}\n"
# The 310P3 table as the vendor prints it (header and one NPU).
NPU_SMI_310P3 = """\
+--------------------------------------------------------------------------------------------------------+
| npu-smi 23.0.rc3                                 Version: 23.0.rc3                                     |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 0       310P3                 | OK              | NA           41                0     / 0             |
| 0       0                     | 0000:01:00.0    | 0            1409 / 21527                            |
+===============================+=================+======================================================+
"""


def tool_env(**fake_vars: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env | fake_vars


def run(*argv: str, timeout: float = 30, **fake_vars: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), env=tool_env(**fake_vars), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def onnx_args(tmp_path: Path) -> list[str]:
    (tmp_path / "ssd.onnx").write_bytes(b"onnx-bytes")
    (tmp_path / "aipp.cfg").write_text(AIPP)
    return ["atc", "--framework=5", f"--model={tmp_path / 'ssd.onnx'}", f"--output={tmp_path / 'ssd'}",
            "--soc_version=Ascend310P3", "--input_shape=images:1,3,300,300", "--input_format=NCHW",
            f"--insert_op_conf={tmp_path / 'aipp.cfg'}", "--precision_mode=allow_fp32_to_fp16",
            "--output_type=FP32", "--op_select_implmode=high_precision", "--disable_reuse_memory=0", "--log=error"]


def om_payload(path: Path) -> dict:
    data = path.read_bytes()
    assert data.startswith(b"FAKE-OM\n")
    return json.loads(data[len(b"FAKE-OM\n"):])


def test_scripts_are_executable_python3_stdlib_scripts():
    for name in ("atc", "npu-smi"):
        script = BIN / name
        assert script.stat().st_mode & 0o111 == 0o111
        assert script.read_text().startswith("#!/usr/bin/env python3\n")


def test_success_writes_the_om_and_prints_start_and_success_lines(onnx_args, tmp_path):
    result = run(*onnx_args)
    lines = result.stdout.splitlines()
    assert (result.returncode, lines[0], lines[-1]) == (0, START, SUCCESS)
    assert len(lines) > 2 and "E10001" not in result.stdout
    assert om_payload(tmp_path / "ssd.om") == {
        "soc_version": "Ascend310P3", "framework": 5, "aipp": AIPP, "dynamic_batch_size": None,
        "model_sha256": hashlib.sha256(b"onnx-bytes").hexdigest()}


def test_dynamic_batch_is_recorded_in_the_om(onnx_args, tmp_path):
    args = [a.replace(":1,3", ":-1,3") for a in onnx_args] + ["--dynamic_batch_size=1,2,4"]
    assert run(*args).returncode == 0
    assert om_payload(tmp_path / "ssd.om")["dynamic_batch_size"] == "1,2,4"


def test_mindspore_air_ignores_input_shape_with_a_warning(tmp_path):
    (tmp_path / "ssd.air").write_bytes(b"air")
    args = ["--framework=1", f"--model={tmp_path / 'ssd.air'}", f"--output={tmp_path / 'out'}",
            "--soc_version=Ascend310"]
    plain, shaped = run("atc", *args), run("atc", *args, "--input_shape=x:1,3,300,300")
    assert plain.returncode == shaped.returncode == 0
    assert "WARNING" not in plain.stdout and "--input_shape is ignored" in shaped.stdout
    assert om_payload(tmp_path / "out.om")["framework"] == 1


def test_record_file_gets_every_argv_even_of_failing_runs(onnx_args, tmp_path):
    record = tmp_path / "calls.jsonl"
    run(*onnx_args, FAKE_ATC_RECORD=str(record))
    run("atc", "--bogus=1", FAKE_ATC_RECORD=str(record))
    assert [json.loads(line) for line in record.read_text().splitlines()] == [onnx_args[1:], ["--bogus=1"]]


@pytest.mark.parametrize("change, message", [
    ({"--soc_version": "Ascend999"}, "E10001: Value [Ascend999] for parameter [--soc_version] is invalid. Reason: "),
    ({"--colour": "red"}, "E10001: Value [red] for parameter [--colour] is invalid. Reason: unknown parameter"),
    ({"--input_shape": None}, "E10001: Value [] for parameter [--input_shape] is invalid. Reason: required"),
    ({"--soc_version": None}, "E10001: Value [] for parameter [--soc_version] is invalid. Reason: required"),
    ({"--model": "/no/such/model.onnx"}, "[--model] is invalid. Reason: model file does not exist."),
    ({"--model": "{tmp}/aipp.cfg"}, "[--model] is invalid. Reason: --framework=5 (ONNX) needs a .onnx model."),
    ({"--output": "/no/such/dir/ssd"}, "[--output] is invalid. Reason: output directory does not exist."),
    ({"--output": "{tmp}/ssd.om"}, "[--output] is invalid. Reason: give the path without the .om suffix"),
    ({"--framework": "3"}, "E10001: Value [3] for parameter [--framework] is invalid."),
    ({"--input_shape": "images:-1,3,300,300"}, "Reason: n = -1 needs --dynamic_batch_size."),
    ({"--input_shape": "images:1,3,300"}, "[--input_shape] is invalid."),
    ({"--dynamic_batch_size": "1,2,4"}, "[--dynamic_batch_size] is invalid. Reason: --input_shape must set n to -1."),
    ({"--input_format": "ND"}, "E10001: Value [ND] for parameter [--input_format] is invalid."),
    ({"--insert_op_conf": "{tmp}/ssd.onnx"}, "[--insert_op_conf] is invalid. Reason: no \"aipp_op {\" block"),
    ({"--precision_mode": "fp16"}, "E10001: Value [fp16] for parameter [--precision_mode] is invalid."),
    ({"--log": "verbose"}, "E10001: Value [verbose] for parameter [--log] is invalid."),
    ({"--disable_reuse_memory": "2"}, "[--disable_reuse_memory] is invalid."),
])
def test_parameter_errors_print_e10001_exit_255_and_write_no_om(onnx_args, tmp_path, change, message):
    options = dict(arg.split("=", 1) for arg in onnx_args[1:]) | change
    argv = [f"{key}={value}".replace("{tmp}", str(tmp_path)) for key, value in options.items() if value is not None]
    result = run("atc", *argv)
    assert result.returncode == 255
    assert message in result.stdout and result.stdout.splitlines()[-1] == FAILED
    assert not list(tmp_path.glob("*.om"))


@pytest.mark.parametrize("extra, message", [
    ("--log=info", "E10001: Value [info] for parameter [--log] is invalid. Reason: parameter given more than once."),
    ("--log", "E10001: Value [--log] for parameter [--log] is invalid. Reason: expected --key=value."),
])
def test_repeated_keys_and_bare_flags_are_rejected(onnx_args, extra, message):
    result = run(*onnx_args, extra)
    assert result.returncode == 255 and message in result.stdout


@pytest.mark.parametrize("fake_vars, code", [({}, "EZ3003"), ({"FAKE_ATC_ERROR_CODE": "E19999"}, "E19999")])
def test_fail_mode(onnx_args, tmp_path, fake_vars, code):
    result = run(*onnx_args, FAKE_ATC_MODE="fail", **fake_vars)
    lines = result.stdout.splitlines()
    assert (result.returncode, lines[0], lines[-1]) == (255, START, FAILED)
    assert f"{code}: No supported Ops kernel and engine are found for [Conv2D], optype [Conv2D]." in lines
    assert not (tmp_path / "ssd.om").exists()


def test_no_success_line_mode_writes_the_om_but_not_the_line(onnx_args, tmp_path):
    result = run(*onnx_args, FAKE_ATC_MODE="no_success_line")
    assert result.returncode == 0 and START in result.stdout and SUCCESS not in result.stdout
    assert om_payload(tmp_path / "ssd.om")["soc_version"] == "Ascend310P3"


def test_no_om_mode_claims_success_but_writes_nothing(onnx_args, tmp_path):
    result = run(*onnx_args, FAKE_ATC_MODE="no_om")
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == SUCCESS
    assert not (tmp_path / "ssd.om").exists()


def test_slow_mode_prints_progress_while_it_works(onnx_args, tmp_path):
    result = run(*onnx_args, FAKE_ATC_MODE="slow", FAKE_ATC_SLEEP_S="1")
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == SUCCESS
    elapsed = [float(s) for s in re.findall(r"building om model, ([\d.]+)s elapsed", result.stdout)]
    assert elapsed and elapsed == sorted(elapsed) and elapsed[-1] >= 1.0  # by its own clock, as told
    assert (tmp_path / "ssd.om").exists()


def test_hang_mode_dies_on_a_subprocess_timeout(onnx_args):
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        run(*onnx_args, FAKE_ATC_MODE="hang", timeout=1)
    assert START in (caught.value.stdout or b"").decode()


def test_hang_mode_ends_on_sigterm(onnx_args):
    process = subprocess.Popen(onnx_args, env=tool_env(FAKE_ATC_MODE="hang"), stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().rstrip("\n") == START  # flushed before the sleep
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == -signal.SIGTERM
    process.stdout.close()


def test_a_bad_fake_setting_is_a_test_error_not_an_atc_error(onnx_args):
    result = run(*onnx_args, FAKE_ATC_MODE="explode")
    assert result.returncode == 2 and "fake atc: FAKE_ATC_MODE" in result.stderr and result.stdout == ""


def test_npu_smi_info_prints_the_vendor_table():
    result = run("npu-smi", "info")
    assert result.returncode == 0 and result.stdout.startswith(NPU_SMI_310P3)
    assert "No running processes found in NPU 0" in result.stdout


def test_npu_smi_lists_each_910b3():
    result = run("npu-smi", "info", FAKE_NPU_CHIP="910B3", FAKE_NPU_COUNT="2")
    npu_rows = [line[:33] for line in result.stdout.splitlines() if "| OK " in line]
    assert result.returncode == 0
    assert npu_rows == ["| 0       910B3                 |", "| 1       910B3                 |"]
    assert "| 0       1                     | 0000:02:00.0    |" in result.stdout  # chip 0 of device 1


def test_npu_smi_with_no_npus_prints_only_the_header():
    result = run("npu-smi", "info", FAKE_NPU_COUNT="0")
    head = NPU_SMI_310P3.splitlines()[:6]
    assert result.returncode == 0 and result.stdout.splitlines()[:7] == head + [head[2]]
    assert "OK" not in result.stdout and "No running processes" not in result.stdout


def test_npu_smi_driver_failure_and_bad_arguments():
    failed = run("npu-smi", "info", FAKE_NPU_SMI_FAIL="1")
    assert (failed.returncode, failed.stdout) == (1, "dcmi module initialize failed. ret is -8005\n")
    usage = run("npu-smi", "-l")
    assert usage.returncode == 1 and usage.stdout.startswith("Usage: npu-smi info")
