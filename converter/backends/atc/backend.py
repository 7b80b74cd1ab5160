"""ATC backend: CANN's ``atc`` turns the version's AIR (framework 1) or ONNX (framework 5)
into ``model.om`` for an Ascend chip, with the AIPP config generated from the manifest.

ATC needs the CANN toolkit but no NPU. Facts (../shared/ASCEND.md): ``--output`` has no
suffix (``.om`` is appended); with ``--insert_op_conf`` the input format is NCHW; success
is exit status 0 *and* the ``ATC run success`` line *and* the ``.om`` on disk; failures
print error codes such as E10001 (bad parameter), EZ3003 (unsupported operator), E19999
(internal). The reference SSD conversion used framework 1, NCHW, ``disable_reuse_memory 0``,
``precision_mode allow_fp32_to_fp16`` and ``op_select_implmode high_precision``, which are
the defaults here.

An ``.om`` runs only on an NPU, so no numeric check happens here: the evaluate stage
measures the served mAP on the inferencer's NPU (and a pipeline deploys only within
``max_map_drop``), and ``ssdstack ascend-check`` compares it with ONNX Runtime.
"""
from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converter.backends.atc.aipp import aipp_settings, render_aipp
from converter.backends.base import ConverterBackend, ConvertOptions, ConvertResult
from ssdstack.ascend import dvpp_fits, host_soc_version
from ssdstack.errors import BackendUnavailable, InvalidInput, JobFailed
from ssdstack.jobs.context import JobCancelled, JobContext
from ssdstack.jobs.specs import AtcOptions
from ssdstack.model_store import SERVING_OM, sha256_file

OM_STEM = "model"
AIPP_FILE = "aipp.cfg"
SUCCESS_LINE = "ATC run success"
# An error code starts a line or a word and ends with ":" or a space ("E10001: Value ...",
# "[ERROR] ... EZ3003: ..."); one inside a path ("/data/E12345/x") is not a code.
ERROR_CODE = re.compile(r"(?:^|(?<=\s))(E[0-9A-Z]\d{4})(?=:|\s|$)")
TAIL_LINES = 40
FRAMEWORKS = {"air": 1, "onnx": 5}


@dataclass
class AtcRun:
    """What one ``atc`` process did: exit status, whether it printed the success line,
    the error codes it printed (in order, once each) and its last lines."""

    exit_status: int
    succeeded_line: bool
    error_codes: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    seconds: float = 0.0


class AtcBackend(ConverterBackend):
    name = "atc"
    artefact = SERVING_OM
    executables = ("atc",)
    install_hint = ("install the CANN toolkit and `source /usr/local/Ascend/ascend-toolkit/set_env.sh` "
                    "(the converter's Ascend image does this in its entrypoint)")

    def convert(self, version_dir: Path, manifest: dict, out_dir: Path, options: ConvertOptions,
                ctx: JobContext) -> ConvertResult:
        settings = options.atc
        soc_version = resolve_soc_version(settings.soc_version, options.soc_version)
        source_kind, source = _source(version_dir, manifest, settings)
        size = int(manifest["image_size"])
        image_format = settings.image_format
        if image_format == "auto":
            image_format = "yuv420sp" if dvpp_fits(size, size) else "rgb"
        aipp = out_dir / AIPP_FILE
        try:
            aipp.write_text(render_aipp(aipp_settings(manifest, image_format)))
        except ValueError as error:
            raise InvalidInput(f"cannot generate the AIPP config: {error}") from None
        input_name = None
        if source_kind == "onnx":
            import onnx  # optional runtime: listing backends must not need it

            graph_model = onnx.load(str(source))
            input_name = _onnx_input_name(graph_model, source.name)
            _check_batch(graph_model, source.name, settings)
        command = atc_command(source, source_kind, out_dir / OM_STEM, aipp, soc_version, settings, input_name, size)
        ctx.log(f"atc: {shlex.join(command)}")
        ctx.progress(stage="convert", step="atc")
        env = dict(os.environ)
        # ATC writes its detailed logs under $HOME/ascend/log unless told otherwise; HOME may
        # be read-only in a container, and a failed job's logs must outlive its staging folder.
        log_dir = Path(env.get("ASCEND_PROCESS_LOG_PATH") or options.log_dir or out_dir / "atc-logs")
        env["ASCEND_PROCESS_LOG_PATH"] = str(log_dir)
        run = run_atc(command, settings.timeout_s, ctx, env, cwd=out_dir)
        om = out_dir / f"{OM_STEM}.om"
        judge(run, om, command, log_dir)
        if options.log_dir and "ASCEND_PROCESS_LOG_PATH" not in os.environ:
            shutil.rmtree(log_dir, ignore_errors=True)  # kept only for failed runs
        ctx.log(f"atc: wrote {om.name} ({om.stat().st_size} bytes) for {soc_version} in {run.seconds:.1f} s")
        details = {
            "command": command,
            "command_line": shlex.join(command),
            "soc_version": soc_version,
            "image_format": image_format,
            "source": source.name,
            "source_sha256": sha256_file(source),
            "framework": FRAMEWORKS[source_kind],
            "precision_mode": settings.precision_mode,
            "output_type": settings.output_type,
            "op_select_implmode": settings.op_select_implmode,
            "batch_size": None if settings.dynamic_batch else settings.batch_size,
            "dynamic_batch": settings.dynamic_batch,
            "aipp": AIPP_FILE,
            "seconds": round(run.seconds, 3),
        }
        check = {"passed": None, "reason": "an .om runs only on an NPU: the evaluate stage measures its served "
                 "mAP there, and `ssdstack ascend-check` compares its detections with ONNX Runtime"}
        return ConvertResult(self.artefact, om, check, details, extra={"aipp_cfg": aipp})


def target_chip_known(default: str | None) -> bool:
    """Whether a job that names no chip has one (for ``auto``: CANN alone is not enough)."""
    try:
        resolve_soc_version(None, default)
    except (InvalidInput, BackendUnavailable):
        return False
    return True


def resolve_soc_version(requested: str | None, default: str | None) -> str:
    """The spec's chip, else the converter's setting, else the chip of this host's NPU."""
    soc_version = requested or default or host_soc_version()
    if soc_version is None:
        raise InvalidInput("no target chip: give atc.soc_version in the job spec (e.g. Ascend310P3), set "
                           "SSDSTACK_ASCEND_SOC_VERSION on the converter, or run it where npu-smi shows the NPU")
    return soc_version


def atc_command(source: Path, source_kind: str, output_stem: Path, aipp: Path, soc_version: str,
                settings: AtcOptions, input_name: str | None, image_size: int) -> list[str]:
    """The ``atc`` argument list (``--key=value``). ONNX sources get ``--input_shape``
    (batch ``-1`` with ``--dynamic_batch_size``); ATC ignores it for AIR."""
    command = [
        "atc",
        f"--framework={FRAMEWORKS[source_kind]}",
        f"--model={source}",
        f"--output={output_stem}",
        "--input_format=NCHW",
        f"--soc_version={soc_version}",
        "--disable_reuse_memory=0",
        f"--insert_op_conf={aipp}",
        f"--precision_mode={settings.precision_mode}",
        f"--op_select_implmode={settings.op_select_implmode}",
        f"--output_type={settings.output_type}",
        "--log=error",
    ]
    if source_kind == "onnx":
        batch = -1 if settings.dynamic_batch else settings.batch_size
        command.append(f"--input_shape={input_name}:{batch},3,{image_size},{image_size}")
    if settings.dynamic_batch:
        command.append(f"--dynamic_batch_size={','.join(str(b) for b in settings.dynamic_batch)}")
    return command


def run_atc(command: list[str], timeout_s: float, ctx: JobContext, env: dict, cwd: Path) -> AtcRun:
    """Run ``command``, streaming its output (stdout and stderr merged) into the job log.

    Kills its process group and raises JobFailed past ``timeout_s``, JobCancelled when the
    job is cancelled.
    """
    started = time.monotonic()
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace", env=env, cwd=cwd, start_new_session=True)
    except OSError as error:
        raise JobFailed(f"cannot start atc: {error}") from error
    try:
        run = _follow(process, command, timeout_s, started, ctx)
    except BaseException:
        # Its own session keeps atc alive past the worker: stop it on any way out (timeout,
        # cancel, a Celery time limit, worker shutdown).
        _kill(process)
        raise
    run.seconds = time.monotonic() - started
    return run


def _follow(process: subprocess.Popen, command: list[str], timeout_s: float, started: float,
            ctx: JobContext) -> AtcRun:
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        with process.stdout:  # closed at atc's end of output, also when atc was killed
            for line in process.stdout:
                lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, name="atc-output", daemon=True).start()
    run = AtcRun(exit_status=-1, succeeded_line=False)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    deadline = started + timeout_s
    while True:
        try:
            line = lines.get(timeout=max(0.05, min(1.0, deadline - time.monotonic())))
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line:
            tail.append(line)
            ctx.log(f"atc: {line}")
            run.succeeded_line = run.succeeded_line or SUCCESS_LINE in line
            run.error_codes += [code for code in ERROR_CODE.findall(line) if code not in run.error_codes]
        if time.monotonic() > deadline:
            raise JobFailed(f"atc did not finish within {timeout_s:g} s and was stopped (atc.timeout_s)",
                            details={"command": command, "last_lines": list(tail)})
        if ctx.cancelled():
            raise JobCancelled("conversion cancelled; atc stopped")
    try:
        run.exit_status = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise JobFailed(f"atc closed its output but did not exit within {timeout_s:g} s",
                        details={"command": command, "last_lines": list(tail)}) from None
    run.tail = list(tail)
    return run


def judge(run: AtcRun, om: Path, command: list[str], log_dir: Path) -> None:
    """Raise JobFailed unless exit status 0, the success line and the ``.om`` all agree."""
    details = {"exit_status": run.exit_status, "error_codes": run.error_codes, "last_lines": run.tail,
               "command": command, "log_dir": str(log_dir)}
    if run.exit_status != 0 or run.error_codes:
        codes = f" ({', '.join(run.error_codes)})" if run.error_codes else ""
        first = next((line for line in run.tail if ERROR_CODE.search(line)), run.tail[-1] if run.tail else "")
        raise JobFailed(f"atc failed with exit status {run.exit_status}{codes}: {first.strip()} "
                        f"(detailed logs in {log_dir})", details=details)
    if not run.succeeded_line:
        raise JobFailed(f"atc exited 0 without printing '{SUCCESS_LINE}'; its output is not trusted",
                        details=details)
    if not om.is_file() or om.stat().st_size == 0:
        raise JobFailed(f"atc printed '{SUCCESS_LINE}' but wrote no {om.name}", details=details)


def _kill(process: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _source(version_dir: Path, manifest: dict, settings: AtcOptions) -> tuple[str, Path]:
    """``("air" | "onnx", path)`` of the file ATC reads, checked against its sha256."""
    artefacts = manifest.get("artefacts", {})
    device = manifest.get("training", {}).get("device")
    kind = settings.source
    if kind == "auto":
        kind = "air" if "air" in artefacts else "onnx"
    if kind == "air" and (device != "Ascend" or "air" not in artefacts):
        raise InvalidInput(f"model {manifest.get('name')!r} version {manifest.get('version')} was trained on "
                           f"{device or 'an unknown device'} and has {'an' if 'air' in artefacts else 'no'} AIR: "
                           "ATC reads AIR only from a trainer that ran on Ascend; convert from source 'onnx'")
    if kind == "air" and (settings.dynamic_batch or settings.batch_size != 1):
        raise InvalidInput("an AIR is exported at batch 1 and ATC ignores --input_shape for it: "
                           "batching needs source 'onnx'")
    entry = artefacts.get(kind)
    if entry is None:
        raise InvalidInput(f"model {manifest.get('name')!r} version {manifest.get('version')} has no {kind} "
                           "artefact to convert")
    path = version_dir / entry["file"]
    if not path.is_file() or sha256_file(path) != entry["sha256"]:
        raise JobFailed(f"{entry['file']} is missing or does not match its sha256 in the manifest")
    return kind, path


def _onnx_input_name(model, file_name: str) -> str:
    graph = model.graph
    initialisers = {tensor.name for tensor in graph.initializer}
    inputs = [value.name for value in graph.input if value.name not in initialisers]
    if len(inputs) != 1:
        raise JobFailed(f"expected an ONNX graph with one input, {file_name} has {inputs}")
    return inputs[0]


def _check_batch(model, file_name: str, settings: AtcOptions) -> None:
    """Refuse batching of a graph whose reshapes fix the batch (versions exported before
    the network left the batch axis free): ATC would fail deep in shape inference.
    ``model`` (an ``onnx.ModelProto``) gets a symbolic batch axis for the trial run."""
    batches = settings.dynamic_batch or [settings.batch_size]
    if batches == [1]:
        return
    import onnxruntime as ort  # optional runtime, as onnx above

    value = model.graph.input[0]
    dims = value.type.tensor_type.shape.dim
    dims[0].dim_param = "batch"
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[0].dim_param = "batch"
    shape = [2] + [d.dim_value for d in dims[1:]]
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        session.run(None, {value.name: np.zeros(shape, np.float32)})
    except Exception as error:  # ORT raises its own exception types for shape errors
        raise InvalidInput(f"{file_name} of this version only runs at batch 1 ({type(error).__name__}); "
                           "re-export it (an export job) to convert with batch sizes "
                           f"{batches}") from None
