"""Convert a published model version into a serving artefact, checked against its reference."""
from __future__ import annotations

from pathlib import Path

from converter.backends import select_backend
from converter.backends.atc.backend import resolve_soc_version
from converter.backends.base import ConvertOptions
from ssdstack.errors import Conflict, JobFailed
from ssdstack.jobs.context import JobCancelled, JobContext
from ssdstack.jobs.specs import AtcOptions
from ssdstack.jobs.stage_data import Converted
from ssdstack.model_store import ModelStore, utc_now


def convert_version(store: ModelStore, name: str, version: int, backend: str, ctx: JobContext,
                    tolerance: float = 1e-4, atc: AtcOptions | None = None, default_soc_version: str | None = None,
                    log_dir: Path | None = None) -> Converted:
    """Convert ``name`` v``version`` with ``backend`` (a name or ``"auto"``) and add the artefact.

    ``atc``: the ``atc`` backend's options; ``default_soc_version``: its target chip when
    the options name none; ``log_dir``: where a tool's detailed logs go (default: inside
    the staging folder).

    The artefact is added, and ``manifest["serving"][<backend>]`` records how to feed it
    and how it was made, only when its outputs on ``reference.npz`` are within
    ``tolerance`` (max abs difference) of MindSpore's, or when the backend's artefact
    cannot run here (an ``.om``: checked by the evaluate stage on the NPU); otherwise
    JobFailed, and the version is left as it was. A version already converted with this
    backend is not converted again; with other ``atc`` options it is a Conflict.
    """
    atc = atc or AtcOptions()
    chosen = select_backend(backend, default_soc_version)
    manifest = store.manifest(name, version)
    wanted = _recorded_options(chosen.name, atc, default_soc_version)
    # The chip is resolved once (npu-smi may be asked): the backend builds for that one.
    options = ConvertOptions(tolerance=tolerance, atc=atc, soc_version=wanted.get("soc_version"), log_dir=log_dir)
    done = manifest.get("serving", {}).get(chosen.name)
    if done is not None and done["artefact"] in manifest["artefacts"]:
        if done.get("options", {}) != wanted:
            changed = {key: value for key, value in wanted.items() if done.get("options", {}).get(key) != value}
            raise Conflict(f"{name} v{version} was already converted with {chosen.name} using other options "
                           f"(now asked for {changed}); an artefact is never replaced: export a new version "
                           "(an export job) to convert it with other options",
                           details={"converted_with": done.get("options"), "asked_for": wanted})
        ctx.log(f"{name} v{version} already has {done['artefact']} from {done['converted_at']}; not converting again")
        return Converted(model=name, version=version, backend=chosen.name, artefact=done["artefact"],
                         check=done["check"])

    ctx.progress(stage="convert", backend=chosen.name, step="start")
    ctx.log(f"converting {name} v{version} with {chosen.name}")
    with store.staging() as out_dir:
        result = chosen.convert(store.version_dir(name, version), manifest, out_dir, options, ctx)
        check = result.check
        if check["passed"] is False:
            raise JobFailed(
                f"{chosen.name} artefact differs from the MindSpore reference: max abs diff boxes "
                f"{check['max_abs_diff_boxes']:.3g}, scores {check['max_abs_diff_scores']:.3g}, "
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
            "check": check,
            "options": wanted,
            "details": result.details,
            "converted_at": utc_now(),
        }

        def record_serving(updated: dict) -> None:
            updated.setdefault("serving", {})[chosen.name] = record

        store.add_artefacts(name, version, {result.artefact_kind: result.file, **result.extra}, record_serving)
    ctx.progress(stage="convert", step="done")
    ctx.log(f"added {result.artefact_kind} ({result.file.name}) to {name} v{version}")
    return Converted(model=name, version=version, backend=chosen.name, artefact=result.artefact_kind, check=check)


def _recorded_options(backend: str, atc: AtcOptions, default_soc_version: str | None) -> dict:
    """The options that shape the artefact, as the manifest keeps them (the chip resolved)."""
    if backend == "atc":
        recorded = atc.model_dump(exclude={"timeout_s"})
        recorded["soc_version"] = resolve_soc_version(recorded["soc_version"], default_soc_version)
        return recorded
    return {}
