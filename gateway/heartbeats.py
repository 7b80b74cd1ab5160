"""What the gateway reads from the workers' heartbeats: the backends each worker has."""
from __future__ import annotations

from ssdstack.model_store import PRECISIONS, artefact_kind


def backend_entries(workers: list[dict], queue: str) -> list[dict]:
    """Every backend the workers on ``queue`` describe; a worker of the previous release,
    whose heartbeat names its usable backends only, as entries without artefact or hint."""
    return [entry for w in workers if queue in w["queues"] for entry in described(w, queue)]


def described(worker: dict, queue: str) -> list[dict]:
    if "backend_details" in worker:
        return worker["backend_details"].get(queue, [])
    return [{"name": name, "usable": True, "artefact": None, "install_hint": ""}
            for name in worker.get("backends", {}).get(queue, [])]


def missing_engine(manifest: dict, keys: list[str], workers: list[dict]) -> str:
    """Why no live inferencer can serve ``manifest``'s serving artefacts under ``keys``
    ("" when one can), with the install hints the inferencers give. An engine serves its
    artefact kind in every precision (:func:`~ssdstack.model_store.artefact_kind`)."""
    kinds = sorted({manifest["serving"][key]["artefact"] for key in keys})
    entries = [entry for entry in backend_entries(workers, "infer")
               if entry["artefact"] and {artefact_kind(entry["artefact"], p) for p in PRECISIONS} & set(kinds)]
    if any(entry["usable"] for entry in entries):
        return ""
    hints = sorted({entry["install_hint"] for entry in entries if entry["install_hint"]})
    return (f"no live inferencer has an engine for {manifest['name']!r} version {manifest['version']}'s "
            f"artefacts ({', '.join(kinds)}): " + ("; ".join(hints) if hints else "start an inferencer that has one"))
