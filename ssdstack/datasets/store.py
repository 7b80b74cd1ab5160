"""The dataset store: uploaded archives become checked, immutable dataset folders.

Layout under ``store_dir``: ``datasets/<name>/`` holds one dataset (COCO layout plus
``dataset.json``; Pascal VOC and text-format uploads are converted to COCO on the way
in); ``.tmp/uploads/<id>.upload`` is an uploaded archive waiting for its ingest job;
``.tmp/<uuid>/`` is scratch space for an ingest in progress. An archive is extracted and
validated entirely in scratch and then moved into ``datasets/`` with one ``os.rename``,
so readers see a dataset whole or not at all.

A dataset has a state: ``ready`` (its folder), or ``ingesting`` / ``failed`` (with the
reasons), kept in ``datasets/.states/<name>.json`` from the upload until the dataset is
ready. Only a ready dataset can be trained or evaluated on.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ssdstack.datasets.archive import find_dataset_root, safe_extract
from ssdstack.datasets.coco import SPLITS
from ssdstack.datasets.convert import as_coco
from ssdstack.datasets.layout import detect_format
from ssdstack.durable import publish_rename, write_json_atomic
from ssdstack.errors import Conflict, InvalidDataset, InvalidInput, NotFound, PayloadTooLarge, SsdStackError
from ssdstack.model_store import sha256_file
from ssdstack.names import NAME_PATTERN

UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
CHUNK_BYTES = 1 << 20
INFO_FILE = "dataset.json"
STATES_DIR = ".states"


@dataclass(frozen=True)
class UploadLimits:
    """Limits on one upload: archive bytes, archive members, unpacked bytes, pixels per image."""

    max_bytes: int
    max_members: int
    max_unpacked_bytes: int
    max_pixels: int


class DatasetStore:
    """Named COCO datasets in ``store_dir/datasets/<name>/``."""

    def __init__(self, store_dir: Path):
        self.datasets_dir = Path(store_dir) / "datasets"
        self.tmp_dir = Path(store_dir) / ".tmp"
        self.uploads_dir = self.tmp_dir / "uploads"
        self.states_dir = self.datasets_dir / STATES_DIR

    @staticmethod
    def check_name(name: str) -> str:
        if not NAME_PATTERN.match(name):
            raise InvalidInput(
                f"invalid dataset name {name!r}: use 1-63 characters a-z, 0-9, '.', '_', '-', "
                "starting with a letter or digit"
            )
        return name

    def upload_path(self, upload_id: str) -> Path:
        """Where the archive of upload ``upload_id`` (32 hex digits) waits for its ingest."""
        if not UPLOAD_ID.match(upload_id):
            raise InvalidInput(f"{upload_id!r} is not an upload id")
        return self.uploads_dir / f"{upload_id}.upload"

    # -- states ---------------------------------------------------------------------

    def check_available(self, name: str, job_ended: Callable[[str], bool]) -> None:
        """Conflict when ``name`` is a ready dataset or an ingest whose job has not ended."""
        self.check_name(name)
        if (self.datasets_dir / name / INFO_FILE).is_file():
            raise Conflict(f"dataset {name!r} already exists")
        record = self._state(name)
        if record and record["state"] == "ingesting" and not job_ended(record["job"]):
            raise Conflict(f"dataset {name!r} is being ingested by job {record['job']}")

    def begin_ingest(self, name: str, job_id: str) -> dict[str, Any]:
        return self._write_state(name, {"name": name, "state": "ingesting", "job": job_id})

    def fail_ingest(self, name: str, job_id: str, error: dict[str, Any]) -> dict[str, Any]:
        return self._write_state(name, {"name": name, "state": "failed", "job": job_id, "error": error})

    def _state(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.states_dir / f"{name}.json").read_text())
        except FileNotFoundError:
            return None

    def _write_state(self, name: str, record: dict[str, Any]) -> dict[str, Any]:
        record = dict(record, updated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self.states_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.states_dir / f"{name}.json", record)
        return record

    def ingest_archive(self, source: BinaryIO, name: str, limits: UploadLimits,
                       expected_format: str = "auto", ingested_by: str | None = None) -> dict[str, Any]:
        """Store the zip or tar archive read from ``source`` as dataset ``name``.

        The archive holds a COCO, Pascal VOC or text-format dataset (see ``convert.py``);
        the last two are stored converted to COCO. Returns the dataset's
        ``dataset.json`` content; its ``warnings`` holds the validation's warning
        ``count`` and ``first`` messages. Raises InvalidInput for a bad name, Conflict if
        the name is taken, PayloadTooLarge past ``limits.max_bytes``, InvalidArchive or
        InvalidDataset (any validation error, or a format other than ``expected_format``
        when that is not ``auto``) for bad content; then nothing is stored.
        ``ingested_by``: the ingest job's id, kept in ``dataset.json``.
        """
        return self._ingest(name, limits, expected_format, ingested_by,
                            lambda archive: _copy_limited(source, archive, limits.max_bytes))

    def _ingest(self, name: str, limits: UploadLimits, expected_format: str, ingested_by: str | None,
                place: Callable[[Path], tuple[str, int]]) -> dict[str, Any]:
        """:meth:`ingest_archive`, the archive put at the path ``place`` is given (in a
        scratch folder of the store) and answering with its (sha256 hex, byte count)."""
        self.check_name(name)
        target = self.datasets_dir / name
        if target.exists():
            raise Conflict(f"dataset {name!r} already exists")
        work = self.tmp_dir / uuid.uuid4().hex
        work.mkdir(parents=True)
        try:
            archive = work / "upload"
            sha256, size_bytes = place(archive)
            extracted = work / "extracted"
            safe_extract(archive, extracted, limits.max_members, limits.max_unpacked_bytes)
            archive.unlink()  # halves the disk an upload holds from here on
            root = find_dataset_root(extracted)
            source_format = detect_format(root)
            if expected_format not in ("auto", source_format):
                raise InvalidDataset(f"the archive holds a {source_format} dataset, not {expected_format}",
                                     details=[f"found at {root.relative_to(extracted).as_posix() or '.'}: "
                                              f"{', '.join(sorted(p.name for p in root.iterdir())[:8])}"])
            # Converted inside work/, so images are hard-linked and leave with it on failure.
            root, summary = as_coco(root, source_format, work / "converted", max_pixels=limits.max_pixels)
            info = {
                "name": name,
                "format": "coco",
                "source_format": source_format,
                "sha256": sha256,
                "size_bytes": size_bytes,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "splits": {
                    split: {
                        "images": summary.images[split],
                        "annotations": summary.annotations[split],
                    }
                    for split in SPLITS
                },
                "label_names": list(summary.label_names),
                "warnings": {"count": summary.warning_count, "first": list(summary.warnings)},
            }
            if ingested_by:
                info["ingested_by"] = ingested_by
            (root / INFO_FILE).write_text(json.dumps(info, indent=2))
            self.datasets_dir.mkdir(parents=True, exist_ok=True)
            try:
                publish_rename(root, target)
            except OSError as exc:
                # rename() refuses to replace a non-empty folder: another upload of the
                # same name finished first.
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise Conflict(f"dataset {name!r} already exists") from None
                raise
            (self.states_dir / f"{name}.json").unlink(missing_ok=True)  # ready: its folder says so
            return info
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def ingest_upload(self, name: str, upload_id: str, limits: UploadLimits, expected_format: str,
                      job_id: str) -> dict[str, Any]:
        """:meth:`ingest_archive` of upload ``upload_id``, which is then removed. A refused
        archive or dataset becomes the dataset's ``failed`` state, with the reasons. Run
        again after it stored the dataset (its worker died before the job said so), it
        answers with the stored dataset."""
        upload = self.upload_path(upload_id)
        stored = self.datasets_dir / name / INFO_FILE
        if NAME_PATTERN.match(name) and stored.is_file():
            info = json.loads(stored.read_text())
            if info.get("ingested_by") == job_id:
                upload.unlink(missing_ok=True)
                return info
        def link(archive: Path) -> tuple[str, int]:
            # The upload's own bytes under a second name (both are in the store's .tmp/),
            # not a copy; the upload itself stays until the ingest ends, for a rerun.
            os.link(upload, archive)
            size = archive.stat().st_size
            if size > limits.max_bytes:
                raise PayloadTooLarge(f"upload is larger than the limit of {limits.max_bytes} bytes")
            return sha256_file(archive), size

        try:
            return self._ingest(name, limits, expected_format, job_id, link)
        except FileNotFoundError:
            error = InvalidInput(f"upload {upload_id} is gone: an earlier run of this ingest removed it")
            self.fail_ingest(name, job_id, error.to_dict())
            raise error from None
        except SsdStackError as error:
            self.fail_ingest(name, job_id, error.to_dict())
            raise
        finally:
            upload.unlink(missing_ok=True)

    def list(self) -> list[dict[str, Any]]:
        """Every dataset, sorted by name: a ready one's ``dataset.json`` content with
        ``"state": "ready"``, or the state record of one being ingested or that failed."""
        if not self.datasets_dir.is_dir():
            return []
        ready = {folder.name: dict(json.loads((folder / INFO_FILE).read_text()), state="ready")
                 for folder in self.datasets_dir.iterdir() if (folder / INFO_FILE).is_file()}
        states = {path.stem: json.loads(path.read_text()) for path in self.states_dir.glob("*.json")}
        return [{**states, **ready}[name] for name in sorted(states | ready)]

    def get(self, name: str) -> dict[str, Any]:
        """Dataset ``name`` as :meth:`list` shows it; NotFound if there is none."""
        if not NAME_PATTERN.match(name):
            raise NotFound(f"no dataset named {name!r}")
        folder = self.datasets_dir / name
        if (folder / INFO_FILE).is_file():
            return dict(json.loads((folder / INFO_FILE).read_text()), state="ready")
        record = self._state(name)
        if record is None:
            raise NotFound(f"no dataset named {name!r}")
        return record

    def path(self, name: str) -> Path:
        """The folder of ready dataset ``name`` (COCO layout root); NotFound if absent,
        Conflict while it is being ingested or after its ingest failed."""
        # The pattern check also keeps names like "../x" from reaching the filesystem.
        folder = self.datasets_dir / name
        if NAME_PATTERN.match(name) and (folder / INFO_FILE).is_file():
            return folder
        record = self._state(name) if NAME_PATTERN.match(name) else None
        if record is None:
            raise NotFound(f"no dataset named {name!r}")
        raise Conflict(f"dataset {name!r} is not ready: it is {record['state']} (job {record['job']})",
                       details={"dataset": record})


def _copy_limited(source: BinaryIO, dest: Path, max_bytes: int) -> tuple[str, int]:
    """Stream ``source`` into ``dest``; returns (sha256 hex, byte count).

    Raises PayloadTooLarge as soon as more than ``max_bytes`` have arrived, so an
    oversized upload is neither buffered in memory nor written out in full.
    """
    digest = hashlib.sha256()
    size = 0
    with dest.open("xb") as out:
        while chunk := source.read(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"upload is larger than the limit of {max_bytes} bytes")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), size
