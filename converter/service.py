"""Convert a published model version into a serving artefact, checked against its reference."""
from __future__ import annotations

from pathlib import Path

from converter.backends import select_backend
from converter.backends.atc.backend import resolve_soc_version
from converter.backends.base import ConvertOptions, Int8Options, Int8Settings
from ssdstack.datasets.coco import load_coco_split
from ssdstack.datasets.store import DatasetStore
from ssdstack.errors import Conflict, JobFailed, SsdStackError
from ssdstack.jobs.context import JobCancelled, JobContext
from ssdstack.jobs.specs import AtcOptions
from ssdstack.jobs.stage_data import Converted
from ssdstack.model_store import FP32, INT8, ModelStore, calibration_dataset, serving_key, utc_now


def convert_version(store: ModelStore, name: str, version: int, backend: str, ctx: JobContext,
                    tolerance: float = 1e-4, atc: AtcOptions | None = None, default_soc_version: str | None = None,
                    log_dir: Path | None = None, precision: str = FP32, int8: Int8Settings | None = None
                    ) -> Converted:
    """Convert ``name`` v``version`` with ``backend`` (a name or ``"auto"``) into an artefact
    of ``precision`` and add it.

    ``atc``: the ``atc`` backend's options; ``default_soc_version``: its target chip when
    the options name none; ``log_dir``: where a tool's detailed logs go (default: inside
    the staging folder); ``int8``: how an INT8 conversion calibrates and is gated.

    The artefact is added, and ``manifest["serving"][serving_key(backend, precision)]``
    records how to feed it and how it was made, only when its outputs on ``reference.npz``
    are within ``tolerance`` (max abs difference) of MindSpore's (INT8: within the
    looser fixed bounds, and its served mAP within ``max_map_drop`` of FP32's), or when
    the backend's artefact cannot run here (an ``.om``: checked by the evaluate stage on
    the NPU); otherwise JobFailed, and the version is left as it was. A version already
    converted with this backend in this precision is not converted again; with other
    ``atc`` options it is a Conflict. INT8 on a version whose dataset is not in the store
    is a Conflict naming what to provide.
    """
    atc = atc or AtcOptions()
    chosen = select_backend(backend, default_soc_version)
    if precision not in chosen.precisions:
        amct = " (INT8 for Ascend needs AMCT, the Ascend Model Compression Toolkit, which this release does not " \
               "run)" if chosen.name == "atc" else ""
        raise JobFailed(f"the {chosen.name} backend makes {', '.join(chosen.precisions)} artefacts, not "
                        f"{precision}{amct}")
    manifest = store.manifest(name, version)
    wanted = _recorded_options(chosen.name, atc, default_soc_version)
    # The chip is resolved once (npu-smi may be asked): the backend builds for that one.
    key = serving_key(chosen.name, precision)
    done = manifest.get("serving", {}).get(key)
    if done is not None and done["artefact"] in manifest["artefacts"]:
        if done.get("options", {}) != wanted:
            changed = {key: value for key, value in wanted.items() if done.get("options", {}).get(key) != value}
            raise Conflict(f"{name} v{version} was already converted with {chosen.name} using other options "
                           f"(now asked for {changed}); an artefact is never replaced: export a new version "
                           "(an export job) to convert it with other options",
                           details={"converted_with": done.get("options"), "asked_for": wanted})
        ctx.log(f"{name} v{version} already has {done['artefact']} from {done['converted_at']}; not converting again")
        return Converted(model=name, version=version, backend=chosen.name, artefact=done["artefact"],
                         check=done["check"], precision=precision, gate=done.get("gate"))

    options = ConvertOptions(tolerance=tolerance, atc=atc, soc_version=wanted.get("soc_version"), log_dir=log_dir,
                             precision=precision,
                             int8=_int8_options(store, manifest, int8 or Int8Settings()) if precision == INT8 else None)
    ctx.progress(stage="convert", backend=chosen.name, step="start")
    ctx.log(f"converting {name} v{version} with {chosen.name}" + (f" to {precision}" if precision != FP32 else ""))
    with store.staging() as out_dir:
        result = chosen.convert(store.version_dir(name, version), manifest, out_dir, options, ctx)
        check = result.check
        if check["passed"] is False:
            statistic = check.get("statistic", "max")
            raise JobFailed(
                f"{chosen.name} artefact differs from the MindSpore reference: {statistic} abs diff boxes "
                f"{check[f'{statistic}_abs_diff_boxes']:.3g}, scores {check[f'{statistic}_abs_diff_scores']:.3g}, "
                f"tolerance {check['tolerance']:g} ({check['images']} images)",
                details=check,
            )
        if check["passed"] is None:
            ctx.log(f"no numeric check here: {check['reason']}")
        if ctx.cancelled():
            raise JobCancelled(f"conversion of {name} v{version} cancelled")
        size = int(manifest["image_size"])
        record = {
            "artefact": result.artefact_kind,
            "input": {"name": "image", "dtype": "uint8", "shape": [result.batch, size, size, 3], "layout": "NHWC",
                      "colour_order": "RGB"},
            "outputs": ["boxes", "scores"],
            "precision": precision,
            "check": check,
            "options": wanted,
            "details": result.details,
            "converted_at": utc_now(),
            **result.record,
        }

        def record_serving(updated: dict) -> None:
            updated.setdefault("serving", {})[key] = record

        store.add_artefacts(name, version, {result.artefact_kind: result.file, **result.extra}, record_serving)
    ctx.progress(stage="convert", step="done")
    ctx.log(f"added {result.artefact_kind} ({result.file.name}) to {name} v{version}")
    return Converted(model=name, version=version, backend=chosen.name, artefact=result.artefact_kind, check=check,
                     precision=precision, gate=result.record.get("gate"))


def _recorded_options(backend: str, atc: AtcOptions, default_soc_version: str | None) -> dict:
    """The options that shape the artefact, as the manifest keeps them (the chip resolved)."""
    if backend == "atc":
        recorded = atc.model_dump(exclude={"timeout_s"})
        recorded["soc_version"] = resolve_soc_version(recorded["soc_version"], default_soc_version)
        return recorded
    return {}


def _int8_options(store: ModelStore, manifest: dict, settings: Int8Settings) -> Int8Options:
    """The splits of the version's own dataset an INT8 conversion calibrates and is gated on."""
    dataset = calibration_dataset(manifest)
    try:
        root = DatasetStore(store.root).path(dataset)
    except SsdStackError as error:
        raise Conflict(f"INT8 calibrates on the version's dataset {dataset!r}, which is not ready in the store "
                       f"({error.message}): upload it again under that name, or convert with precision fp32") from None
    return Int8Options(calibration=load_coco_split(root, "train"), validation=load_coco_split(root, "val"),
                       settings=settings)
