"""The dataset store: uploaded archives become checked, immutable dataset folders.

Layout under ``store_dir``: ``datasets/<name>/`` holds one dataset (COCO layout plus
``dataset.json``; Pascal VOC and text-format uploads are converted to COCO on the way
in); ``.tmp/<uuid>/`` is scratch space for an upload in progress. An
upload is streamed, extracted and validated entirely in scratch and then moved into
``datasets/`` with one ``os.rename``, so readers see a dataset whole or not at all.
"""
from __future__ import annotations

import errno
import hashlib
import json
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from ssdstack.datasets.archive import find_dataset_root, safe_extract
from ssdstack.datasets.coco import SPLITS
from ssdstack.datasets.convert import as_coco
from ssdstack.datasets.layout import detect_format
from ssdstack.durable import publish_rename
from ssdstack.errors import Conflict, InvalidDataset, InvalidInput, NotFound, PayloadTooLarge

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
CHUNK_BYTES = 1 << 20
INFO_FILE = "dataset.json"


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

    def ingest_archive(self, source: BinaryIO, name: str, limits: UploadLimits,
                       expected_format: str = "auto") -> dict[str, Any]:
        """Store the zip or tar archive read from ``source`` as dataset ``name``.

        The archive holds a COCO, Pascal VOC or text-format dataset (see ``convert.py``);
        the last two are stored converted to COCO. Returns the dataset's
        ``dataset.json`` content; its ``warnings`` holds the validation's warning
        ``count`` and ``first`` messages. Raises InvalidInput for a bad name, Conflict if
        the name is taken, PayloadTooLarge past ``limits.max_bytes``, InvalidArchive or
        InvalidDataset (any validation error, or a format other than ``expected_format``
        when that is not ``auto``) for bad content; then nothing is stored.
        """
        if not NAME_PATTERN.match(name):
            raise InvalidInput(
                f"invalid dataset name {name!r}: use 1-63 characters a-z, 0-9, '.', '_', '-', "
                "starting with a letter or digit"
            )
        target = self.datasets_dir / name
        if target.exists():
            raise Conflict(f"dataset {name!r} already exists")
        work = self.tmp_dir / uuid.uuid4().hex
        work.mkdir(parents=True)
        try:
            archive = work / "upload"
            sha256, size_bytes = _copy_limited(source, archive, limits.max_bytes)
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
            return info
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def list(self) -> list[dict[str, Any]]:
        """Every stored dataset's ``dataset.json`` content, sorted by name."""
        if not self.datasets_dir.is_dir():
            return []
        return [
            json.loads((folder / INFO_FILE).read_text())
            for folder in sorted(self.datasets_dir.iterdir())
            if (folder / INFO_FILE).is_file()
        ]

    def get(self, name: str) -> dict[str, Any]:
        """Dataset ``name``'s ``dataset.json`` content; NotFound if absent."""
        return json.loads((self.path(name) / INFO_FILE).read_text())

    def path(self, name: str) -> Path:
        """The folder of dataset ``name`` (COCO layout root); NotFound if absent."""
        # The pattern check also keeps names like "../x" from reaching the filesystem.
        folder = self.datasets_dir / name
        if not NAME_PATTERN.match(name) or not (folder / INFO_FILE).is_file():
            raise NotFound(f"no dataset named {name!r}")
        return folder


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
