"""``ssdstack ascend-check``: prove the Ascend path on a machine with an NPU.

Nothing here has run on Ascend hardware yet (see docs/ascend.md); this is the procedure
that does it. In order, each step recorded in the report:

1. ``npu-smi info`` names the chip (the ATC target), ``atc`` is on PATH, the MindX SDK's
   ``StreamManagerApi`` imports;
2. the model version (default: the newest ``demo``, which ``make demo`` leaves in the
   store) is converted with ATC for that chip, and for ONNX Runtime as the reference;
3. ONNX Runtime, then the MindX stream, run on the dataset's validation split: COCO mAP
   and images/s, each report stored with the version like any served evaluation (the
   version's ``metrics.served`` ends as the NPU's);
4. the two engines' detections are matched per image and class (IoU >= 0.5, score >=
   ``--agreement-score``): agreement = matched / max(detections of either engine);
5. ``report.json`` and ``report.md`` go to ``--out``. Exit status 0 only when every step
   passed, agreement >= ``--min-agreement`` and the mAPs differ by <= ``--max-map-gap``.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from ssdstack.ascend import npu_chips
from ssdstack.detection.boxes import box_iou
from ssdstack.errors import BackendUnavailable, InvalidInput, SsdStackError
from ssdstack.jobs.context import LocalContext
from ssdstack.jobs.specs import AtcOptions
from ssdstack.model_store import ModelStore

IOU_MATCH = 0.5


def run_ascend_check(store_dir: Path, model: str, out_dir: Path, *, dataset: str | None = None,
                     split: str = "val", soc_version: str | None = None, image_format: str = "auto",
                     preprocessing: str = "auto", work_dir: Path = Path("var/work"),
                     agreement_score: float = 0.3, min_agreement: float = 0.9, max_map_gap: float = 0.02) -> dict:
    """Run the check (see the module docstring); returns the report, also written to ``out_dir``."""
    # The services are imported here: the CLI's other verbs run without their extras.
    from converter.service import convert_version
    from inferencer.backends.mxsdk import MxSdkEngine
    from inferencer.evaluate import evaluate_served

    report: dict = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": [],
                    "thresholds": {"agreement_score": agreement_score, "min_agreement": min_agreement,
                                   "max_map_gap": max_map_gap, "iou_match": IOU_MATCH}}
    ctx = LocalContext(job_id="ascend-check")

    def step(name: str, action):
        started = time.monotonic()
        try:
            detail = action()
        except Exception as error:  # any failure is the step's result, written to the report
            message = error.message if isinstance(error, SsdStackError) else f"{type(error).__name__}: {error}"
            report["steps"].append({"step": name, "passed": False, "error": message,
                                    "seconds": round(time.monotonic() - started, 2)})
            raise _Stop from error
        report["steps"].append({"step": name, "passed": True, "detail": detail,
                                "seconds": round(time.monotonic() - started, 2)})
        return detail

    store = ModelStore(store_dir)
    try:
        chips = step("npu-smi", lambda: {"chips": _chips(npu_chips())})["chips"]
        soc_version = soc_version or f"Ascend{chips[0]}"
        step("atc", lambda: {"path": _which("atc", "install the CANN toolkit and source its set_env.sh")})
        step("mindx-sdk", lambda: _mindx_available(MxSdkEngine()))
        name, version = step("model", lambda: _pick_version(store, model))["version"]
        atc_options = AtcOptions(soc_version=soc_version, image_format=image_format)
        step("convert-atc", lambda: _compact(convert_version(store, name, version, "atc", ctx, atc=atc_options)))
        step("convert-onnxruntime", lambda: _compact(convert_version(store, name, version, "onnxruntime", ctx)))
        options = {"mxsdk": {"preprocessing": preprocessing, "soc_version": soc_version, "work_dir": work_dir}}
        served = {}
        # The reference first: the last evaluation is what the version records as served.
        for engine in ("onnxruntime", "mxsdk"):
            served[engine] = step(f"evaluate-{engine}", lambda engine=engine: _metrics(evaluate_served(
                store_dir, name, version, dataset, split, engine, ctx, engine_options=options)))
        agreement = step("agreement", lambda: agreement_between(
            _detections(store, name, version, served["mxsdk"]["report"]),
            _detections(store, name, version, served["onnxruntime"]["report"]), agreement_score))
        gap = abs(served["mxsdk"]["AP"] - served["onnxruntime"]["AP"])
        report["summary"] = {
            "model": name, "version": version, "soc_version": soc_version,
            "mAP": served["mxsdk"]["AP"], "mAP50": served["mxsdk"]["AP50"],
            "images_per_s": served["mxsdk"]["images_per_s"],
            "onnxruntime_mAP": served["onnxruntime"]["AP"], "map_gap": round(gap, 4),
            "agreement": agreement["agreement"],
        }
        report["passed"] = agreement["agreement"] >= min_agreement and gap <= max_map_gap
    except _Stop:
        report["passed"] = False
    write_report(report, out_dir)
    return report


class _Stop(Exception):
    """A step failed; the report says which and why."""


def agreement_between(found: list[dict], reference: list[dict], min_score: float) -> dict:
    """IoU-matched agreement of two COCO results lists (``image_id``, ``category_id``,
    ``score``, ``bbox`` as ``[x, y, w, h]``), counting detections scoring >= ``min_score``.

    Per image and class, pairs are matched greedily by descending IoU (>= 0.5).
    ``agreement`` = matched / max(len(found), len(reference)); 1.0 when both are empty.
    """
    def grouped(results):
        groups: dict[tuple[int, int], list[list[float]]] = {}
        for item in results:
            if item["score"] >= min_score:
                x, y, w, h = item["bbox"]
                groups.setdefault((item["image_id"], item["category_id"]), []).append([x, y, x + w, y + h])
        return groups

    ours, theirs = grouped(found), grouped(reference)
    matched = 0
    for key in ours.keys() & theirs.keys():
        iou = box_iou(np.asarray(ours[key], np.float64), np.asarray(theirs[key], np.float64))
        while iou.size and iou.max() >= IOU_MATCH:
            i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
            matched += 1
            iou[i, :] = -1
            iou[:, j] = -1
    count_ours, count_theirs = sum(map(len, ours.values())), sum(map(len, theirs.values()))
    total = max(count_ours, count_theirs)
    return {"matched": matched, "mxsdk_detections": count_ours, "onnxruntime_detections": count_theirs,
            "agreement": round(matched / total, 4) if total else 1.0}


def write_report(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    lines = ["# Ascend check", "", f"Started {report['started_at']}; "
             f"**{'PASSED' if report['passed'] else 'FAILED'}**.", "", "| step | result | seconds |", "|---|---|---|"]
    for entry in report["steps"]:
        result = "ok" if entry["passed"] else f"failed: {entry['error']}"
        lines.append(f"| {entry['step']} | {result} | {entry['seconds']} |")
    summary = report.get("summary")
    if summary:
        lines += ["", f"{summary['model']} v{summary['version']} on {summary['soc_version']}: MindX mAP "
                  f"{summary['mAP']:.4f} (mAP@0.5 {summary['mAP50']:.4f}) at {summary['images_per_s']} images/s; "
                  f"ONNX Runtime mAP {summary['onnxruntime_mAP']:.4f}; agreement {summary['agreement']:.1%}."]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")


def _chips(chips: list[str]) -> list[str]:
    if not chips:
        raise BackendUnavailable("npu-smi is missing or lists no NPU: install the driver, and map /dev/davinci* "
                                 "and the driver mounts into the container")
    return chips


def _which(program: str, hint: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise BackendUnavailable(f"{program} is not on PATH: {hint}")
    return path


def _mindx_available(engine) -> dict:
    missing = engine.missing()
    if missing:
        raise BackendUnavailable(missing)
    return {"module": "StreamManagerApi"}


def _pick_version(store, model: str) -> dict:
    name, _, version = model.partition(":")
    if version and not version.isdigit():
        raise InvalidInput(f"--model takes NAME or NAME:VERSION, got {model!r}")
    numbers = [int(version)] if version else [v["version"] for v in store.versions(name)]
    if not numbers:
        raise InvalidInput(f"model {name!r} has no versions: run `make demo` or train one first")
    return {"version": (name, max(numbers))}


def _compact(result) -> dict:
    """A :class:`~ssdstack.jobs.stage_data.Converted` as the report shows it."""
    return {"backend": result.backend, "artefact": result.artefact, "check_passed": result.check["passed"]}


def _metrics(served: dict) -> dict:
    return {key: served["coco"][key] for key in ("AP", "AP50", "AP75")} | {
        "images": served["images"], "images_per_s": served["images_per_s"], "report": served["report"]}


def _detections(store, name: str, version: int, report: str) -> list[dict]:
    return json.loads((store.version_dir(name, version) / report / "detections.json").read_text())
