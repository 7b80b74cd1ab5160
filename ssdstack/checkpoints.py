"""Uploaded MindSpore checkpoints in ``store_dir/checkpoints/``: starting weights for
training (``pretrained``, ``backbone_checkpoint``) and files to import as model versions.

The gateway cannot parse a checkpoint (it has no MindSpore); the trainer checks one when
a job uses it. A file appears whole or not at all.
"""
from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from ssdstack.durable import sync_dir, sync_file
from ssdstack.errors import Conflict, InvalidInput, NotFound
from ssdstack.model_store import sha256_file
from ssdstack.names import CHECKPOINT_FILE_PATTERN

COPY_CHUNK = 1 << 20


class CheckpointStore:
    def __init__(self, store_dir: Path):
        self.folder = Path(store_dir) / "checkpoints"
        self.tmp_dir = Path(store_dir) / ".tmp"

    def _checked(self, name: str) -> str:
        if not CHECKPOINT_FILE_PATTERN.match(name):
            raise InvalidInput(f"checkpoint name {name!r} must match {CHECKPOINT_FILE_PATTERN.pattern}")
        return name

    def check_new(self, name: str) -> Path:
        """The path ``name`` would take; InvalidInput for a bad name, Conflict if taken
        (names are immutable, so a training job always loads what it was given)."""
        path = self.folder / self._checked(name)
        if path.exists():
            raise Conflict(f"checkpoint {name!r} exists; upload under another name")
        return path

    def save(self, name: str, source: BinaryIO) -> dict:
        """Store ``source`` as ``name`` (see :meth:`check_new`)."""
        path = self.check_new(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{uuid.uuid4().hex}.partial"
        try:
            with partial.open("wb") as out:
                while chunk := source.read(COPY_CHUNK):
                    out.write(chunk)
            if partial.stat().st_size == 0:
                raise InvalidInput("the checkpoint upload is empty")
            sync_file(partial)
            # link() fails if another upload took the name meanwhile; rename would replace it.
            try:
                os.link(partial, path)
            except FileExistsError:
                raise Conflict(f"checkpoint {name!r} exists; upload under another name") from None
            sync_dir(self.folder)
        finally:
            partial.unlink(missing_ok=True)
        return dict(self.describe(name), sha256=sha256_file(path))

    def describe(self, name: str) -> dict:
        stat = self.path(name).stat()
        uploaded = datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(timespec="seconds")
        return {"name": name, "bytes": stat.st_size, "uploaded_at": uploaded}

    def path(self, name: str) -> Path:
        path = self.folder / self._checked(name)
        if not path.is_file():
            raise NotFound(f"checkpoint {name!r} was not uploaded (PUT /v1/checkpoints/{name})")
        return path

    def list(self) -> list[dict]:
        if not self.folder.is_dir():
            return []
        return [self.describe(p.name) for p in sorted(self.folder.iterdir()) if CHECKPOINT_FILE_PATTERN.match(p.name)]
