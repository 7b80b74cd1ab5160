"""Convert a published model version into a serving artefact, checked against its reference."""
from __future__ import annotations

from converter.backends import select_backend
from ssdstack.errors import JobFailed
from ssdstack.jobs.context import JobCancelled, JobContext
from ssdstack.model_store import ModelStore, utc_now


def convert_version(store: ModelStore, name: str, version: int, backend: str, ctx: JobContext,
                    tolerance: float = 1e-4) -> dict:
    """Convert ``name`` v``version`` with ``backend`` (a name or ``"auto"``) and add the artefact.

    The artefact is added, and ``manifest["serving"][<backend>]`` records how to feed it,
    only when its outputs on ``reference.npz`` are within ``tolerance`` (max abs
    difference) of MindSpore's; otherwise JobFailed, and the version is left as it was.
    A version already converted with this backend is not converted again.

    Returns ``{"backend", "artefact", "check"}``.
    """
    chosen = select_backend(backend)
    manifest = store.manifest(name, version)
    done = manifest.get("serving", {}).get(chosen.name)
    if done is not None and done["artefact"] in manifest["artefacts"]:
        ctx.log(f"{name} v{version} already has {done['artefact']} from {done['converted_at']}; not converting again")
        return {"backend": chosen.name, "artefact": done["artefact"], "check": done["check"]}

    ctx.progress(stage="convert", backend=chosen.name, step="start")
    ctx.log(f"converting {name} v{version} with {chosen.name} (tolerance {tolerance:g})")
    with store.staging() as out_dir:
        result = chosen.convert(store.version_dir(name, version), manifest, out_dir, {"tolerance": tolerance}, ctx)
        check = result.check
        if not check["passed"]:
            raise JobFailed(
                f"{chosen.name} artefact differs from the MindSpore reference: max abs diff boxes "
                f"{check['max_abs_diff_boxes']:.3g}, scores {check['max_abs_diff_scores']:.3g}, "
                f"tolerance {check['tolerance']:g} ({check['images']} images)",
                details=check,
            )
        if ctx.cancelled():
            raise JobCancelled(f"conversion of {name} v{version} cancelled")
        size = int(manifest["image_size"])
        record = {
            "artefact": result.artefact_kind,
            "input": {"name": "image", "dtype": "uint8", "shape": [1, size, size, 3], "layout": "NHWC",
                      "colour_order": "RGB"},
            "outputs": ["boxes", "scores"],
            "check": check,
            "details": result.details,
            "converted_at": utc_now(),
        }

        def record_serving(updated: dict) -> None:
            updated.setdefault("serving", {})[chosen.name] = record

        store.add_artefacts(name, version, {result.artefact_kind: result.file}, record_serving)
    ctx.progress(stage="convert", step="done")
    ctx.log(f"added {result.artefact_kind} ({result.file.name}) to {name} v{version}")
    return {"backend": chosen.name, "artefact": result.artefact_kind, "check": check}
