"""Versioned model store on a shared folder.

Layout::

    <store>/models/<name>/<version>/manifest.json   the source of truth for a version
    <store>/models/<name>/<version>/<artefacts>     model.ckpt, model.onnx, reference.npz, ...
    <store>/models/<name>/deployed                  {"version": n, ...}: what inferencers serve
    <store>/.tmp/                                   staging, same filesystem as models/

A version appears only by renaming a complete staging folder (its manifest already
written), so a reader never sees a half-written version. Later stages add artefacts by
copying them in under new names and then replacing ``manifest.json`` atomically: an
artefact exists for readers only once the manifest lists it with its sha256.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from ssdstack.durable import publish_rename, write_json_atomic
from ssdstack.errors import Conflict, InvalidInput, NotFound, PreconditionFailed
from ssdstack.names import NAME_PATTERN

MANIFEST = "manifest.json"
# Serving artefacts, by their kind in a manifest: a converter backend writes one, and the
# inference engine that serves it reads it (the pair is matched by this name alone).
SERVING_ONNXRUNTIME = "serving_onnxruntime"
SERVING_OM = "serving_om"
# The precisions a serving artefact is made in. Manifests and deployments written before
# precisions existed are FP32.
FP32, INT8 = "fp32", "int8"
PRECISIONS = (FP32, INT8)
# The manifest's layout. Manifests carry it as ``schema_version``; those written before
# the key existed carry ``schema`` (same layout, still written for their readers).
MANIFEST_SCHEMA = 1


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def serving_key(backend: str, precision: str = FP32) -> str:
    """The key of ``manifest["serving"]`` for ``backend``'s artefact in ``precision``:
    the backend's name for FP32 (as every manifest had it), ``<backend>/<precision>``
    otherwise."""
    return backend if precision == FP32 else f"{backend}/{precision}"


def key_precision(key: str) -> str:
    """The precision of a ``manifest["serving"]`` key."""
    return key.partition("/")[2] or FP32


def artefact_kind(base: str, precision: str = FP32) -> str:
    """The artefact kind of an engine's artefact (``base``, its FP32 kind) in ``precision``."""
    return base if precision == FP32 else f"{base}_{precision}"


def calibration_dataset(manifest: dict) -> str:
    """The dataset an INT8 conversion of the version calibrates and is gated on: its own
    (``lineage.dataset``); Conflict naming what to provide when it names none."""
    dataset = (manifest.get("lineage") or {}).get("dataset")
    if not dataset:
        raise Conflict(f"INT8 calibrates on the version's own dataset, and model {manifest['name']!r} version "
                       f"{manifest['version']} names none (imported without one): import the checkpoint again "
                       "with `dataset`, or convert with precision fp32")
    return dataset


def servable(manifest: dict, precision: str | None = None) -> tuple[list[str], dict[str, str]]:
    """``(serving keys fit to serve, {key: why not} for the others)`` of a manifest's
    serving artefacts, of ``precision`` only when given. A check that failed refuses an
    artefact; an ONNX Runtime artefact (checkable on any machine) must have passed its
    check, and an INT8 one its accuracy gate too. An ATC artefact records ``check.passed
    = null`` (it is checked on the NPU, by the evaluate stage), which is fit. A version
    converted before checks were recorded has none, and is not refused for it: the
    inferencer loads it before switching to it."""
    fit, refused = [], {}
    for key, entry in sorted(manifest.get("serving", {}).items()):
        if precision is not None and key_precision(key) != precision:
            continue
        check = entry.get("check")
        passed = None if check is None else check.get("passed")
        if passed is False:
            refused[key] = "its check against the reference outputs failed"
        elif check is not None and entry.get("artefact", "").startswith(SERVING_ONNXRUNTIME) and passed is not True:
            refused[key] = "its check against the reference outputs has not passed"
        elif key_precision(key) != FP32 and (entry.get("gate") or {}).get("passed") is not True:
            refused[key] = "it has not passed its accuracy gate"
        else:
            fit.append(key)
    return fit, refused


def remove_stale_scratch(store_dir: Path, max_age_s: float = 24 * 3600) -> list[str]:
    """Delete what crashed runs left in ``<store>/.tmp`` (older than ``max_age_s``).

    Staging folders live for minutes; one a day old belongs to a process that died.
    Returns the names removed.
    """
    return remove_older_than(Path(store_dir) / ".tmp", max_age_s)


def remove_older_than(folder: Path, max_age_s: float) -> list[str]:
    """Delete the entries of ``folder`` last modified more than ``max_age_s`` ago; their names.

    Safe beside other sweepers of the same folder, and a missing folder is empty.
    """
    if not folder.is_dir():
        return []
    cutoff = time.time() - max_age_s
    removed = []
    for entry in folder.iterdir():
        try:
            if entry.lstat().st_mtime >= cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
        except FileNotFoundError:
            continue  # another worker swept it first
    return removed


def check_name(name: str, what: str = "model name") -> str:
    if not NAME_PATTERN.match(name or ""):
        raise InvalidInput(f"invalid {what} {name!r}: use 1-63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit")
    return name


class ModelStore:
    def __init__(self, store_dir: Path):
        self.root = Path(store_dir)
        self.models_dir = self.root / "models"
        self.tmp_dir = self.root / ".tmp"

    # -- staging and publishing -------------------------------------------------
    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A scratch folder on the store's filesystem, removed whatever happens."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        folder = self.tmp_dir / f"stage-{uuid.uuid4().hex}"
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, name: str, staged: Path, manifest: dict, artefacts: dict[str, str]) -> dict:
        """Publish ``staged`` (holding ``artefacts``: kind -> file name) as the next version.

        Fills in name, version, created_at and each artefact's sha256 and size, writes the
        manifest, then renames the folder into place. Returns the manifest.
        """
        check_name(name)
        model_dir = self.models_dir / name
        model_dir.mkdir(parents=True, exist_ok=True)
        described = {kind: self._describe(staged / file, staged) for kind, file in artefacts.items()}
        manifest = dict(manifest, schema=MANIFEST_SCHEMA, schema_version=MANIFEST_SCHEMA, name=name,
                        created_at=utc_now(), artefacts=described)
        for _ in range(100):
            # Numbers of folders without a manifest (left by a crash) are skipped, not reused.
            taken = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
            version = max(taken, default=0) + 1
            manifest["version"] = version
            write_json_atomic(staged / MANIFEST, manifest)
            try:
                publish_rename(staged, model_dir / str(version))
            except OSError:
                if (model_dir / str(version)).exists():
                    continue  # another publisher took this number; take the next
                raise
            staged.mkdir()  # the staging context removes it again
            return manifest
        raise Conflict(f"could not allocate a version number for model {name!r}")

    def add_artefacts(self, name: str, version: int, files: dict[str, Path],
                      update: Callable[[dict], None] | None = None) -> dict:
        """Copy ``files`` (kind -> source path) into a published version, then let ``update``
        edit the manifest, and replace the manifest atomically. Returns the new manifest."""
        folder = self.version_dir(name, version)
        with self._manifest_lock(folder):
            listed = {entry["file"] for entry in self.manifest(name, version)["artefacts"].values()}
            added = {}
            for kind, source in files.items():
                target = folder / source.name
                # A file the manifest does not list is a leftover of a crashed run: replace it.
                if source.name in listed:
                    raise Conflict(f"{name} v{version} already has {source.name}")
                partial = folder / f".{source.name}.{uuid.uuid4().hex}.partial"
                shutil.copyfile(source, partial)
                publish_rename(partial, target, replace=True)
                added[kind] = self._describe(target, folder)
            manifest = self.manifest(name, version)
            manifest["artefacts"].update(added)
            if update is not None:
                update(manifest)
            write_json_atomic(folder / MANIFEST, manifest)
        return manifest

    @staticmethod
    @contextlib.contextmanager
    def _manifest_lock(folder: Path) -> Iterator[None]:
        """Serialise read-modify-write of one manifest across threads and processes
        (converter and inferencer share the store)."""
        with open(folder / ".manifest.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def update_manifest(self, name: str, version: int, update: Callable[[dict], None]) -> dict:
        return self.add_artefacts(name, version, {}, update)

    @staticmethod
    def _describe(path: Path, folder: Path) -> dict:
        """``file`` is relative to the version folder (reports sit in sub-folders)."""
        return {"file": path.relative_to(folder).as_posix(), "sha256": sha256_file(path), "bytes": path.stat().st_size}

    # -- reading ---------------------------------------------------------------
    def _version_numbers(self, name: str) -> list[int]:
        folder = self.models_dir / name
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / MANIFEST).exists())

    def version_dir(self, name: str, version: int) -> Path:
        check_name(name)
        folder = self.models_dir / name / str(int(version))
        if not (folder / MANIFEST).exists():
            raise NotFound(f"model {name!r} has no version {version}")
        return folder

    def artefact(self, name: str, version: int, file: str) -> tuple[Path, dict]:
        """The file of a listed artefact (``file`` as the manifest's ``artefacts`` name it,
        e.g. ``evaluation/onnxruntime-d-val/pr_curves.png``) and its entry (``bytes``,
        ``sha256``); NotFound for any path the manifest does not list."""
        folder = self.version_dir(name, version)
        for entry in self.manifest(name, version)["artefacts"].values():
            if entry["file"] == file:
                return folder / entry["file"], entry
        raise NotFound(f"model {name!r} version {version} lists no artefact {file!r}")

    def manifest(self, name: str, version: int) -> dict:
        """The version's manifest; Conflict for one a newer release wrote."""
        manifest = json.loads((self.version_dir(name, version) / MANIFEST).read_text())
        schema = manifest.get("schema_version", manifest.get("schema", MANIFEST_SCHEMA))
        if schema > MANIFEST_SCHEMA:
            raise Conflict(f"model {name!r} version {version} has a manifest of schema {schema}, written by a newer "
                           f"release; this one reads schema {MANIFEST_SCHEMA}")
        return manifest

    def artefact_path(self, name: str, version: int, kind: str, manifest: dict | None = None) -> Path:
        manifest = manifest or self.manifest(name, version)
        entry = manifest["artefacts"].get(kind)
        if entry is None:
            raise NotFound(f"model {name!r} version {version} has no {kind} artefact")
        return self.version_dir(name, version) / entry["file"]

    def verify(self, name: str, version: int) -> list[str]:
        """Artefacts whose sha256 no longer matches the manifest (empty when intact)."""
        manifest = self.manifest(name, version)
        folder = self.version_dir(name, version)
        return [kind for kind, entry in manifest["artefacts"].items()
                if not (folder / entry["file"]).exists() or sha256_file(folder / entry["file"]) != entry["sha256"]]

    def versions(self, name: str) -> list[dict]:
        check_name(name)
        if not (self.models_dir / name).is_dir():
            raise NotFound(f"no model named {name!r}")
        return [self.manifest(name, v) for v in self._version_numbers(name)]

    def version_by_job(self, name: str, job_id: str) -> dict | None:
        """The manifest of ``name``'s version published by job ``job_id``, if there is one."""
        if not (self.models_dir / check_name(name)).is_dir():
            return None
        for manifest in self.versions(name):
            if (manifest.get("lineage") or {}).get("job_id") == job_id:
                return manifest
        return None

    def models(self) -> list[dict]:
        if not self.models_dir.is_dir():
            return []
        result = []
        for folder in sorted(self.models_dir.iterdir()):
            numbers = self._version_numbers(folder.name)
            if numbers:
                result.append({"name": folder.name, "versions": numbers, "latest": numbers[-1],
                               "deployed": self.deployed_version(folder.name)})
        return result

    # -- deployment ------------------------------------------------------------
    def deploy(self, name: str, version: int, if_match: int | None = None, by: str = "api",
               precision: str = FP32) -> dict:
        """Point ``name``'s inferencers at ``version`` in ``precision``; the deployment record.

        The version must have a serving artefact of that precision fit to serve (:func:`servable`). With
        ``if_match``, only while that version is the deployed one (0: while none is),
        checked and written under a lock shared by every process on the store; otherwise
        PreconditionFailed. ``by`` says who deployed (the API, or a pipeline job).
        """
        manifest = self.manifest(name, version)
        if not manifest.get("serving"):
            raise Conflict(f"model {name!r} version {version} has no converted artefact yet: convert it first")
        fit, refused = servable(manifest, precision)
        if not fit:
            raise Conflict(f"model {name!r} version {version} has no {precision.upper()} serving artefact fit to "
                           "serve: " + ("; ".join(f"{key}: {why}" for key, why in refused.items()) if refused else
                                        f"convert it with precision {precision} first"), details=refused)
        with self._deploy_lock(name):
            current = self.deployed_version(name)
            if if_match is not None and (current or 0) != if_match:
                raise PreconditionFailed(
                    f"model {name!r} has {f'version {current}' if current else 'no version'} deployed, not "
                    f"{if_match or 'none'} as the request expects (If-Match); nothing was changed",
                    details={"deployed": current})
            record = {"version": int(version), "precision": precision, "backends": sorted(fit),
                      "deployed_at": utc_now(), "previous": current, "by": by}
            write_json_atomic(self.models_dir / name / "deployed", record)
        return record

    @contextlib.contextmanager
    def _deploy_lock(self, name: str) -> Iterator[None]:
        with open(self.models_dir / check_name(name) / ".deploy.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def deployed(self, name: str) -> dict | None:
        path = self.models_dir / check_name(name) / "deployed"
        return json.loads(path.read_text()) if path.exists() else None

    def deployed_version(self, name: str) -> int | None:
        record = self.deployed(name)
        return None if record is None else int(record["version"])

    def deployed_serving(self, name: str) -> tuple[int, str] | None:
        """``(version, precision)`` deployed for ``name`` (a record written before
        precisions existed is FP32); None when none is."""
        record = self.deployed(name)
        return None if record is None else (int(record["version"]), record.get("precision", FP32))

    def deployed_models(self) -> list[str]:
        if not self.models_dir.is_dir():
            return []
        return sorted(p.parent.name for p in self.models_dir.glob("*/deployed"))
