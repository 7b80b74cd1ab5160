"""Fixtures of the trainer tests."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from ssdstack.datasets.store import DatasetStore, UploadLimits

LIMITS = UploadLimits(max_bytes=50 << 20, max_members=1000, max_unpacked_bytes=50 << 20, max_pixels=10_000_000)


@pytest.fixture(scope="session")
def store_dataset():
    """``store_dataset(store_dir, source, name) -> folder``: upload the dataset folder
    ``source`` into the store as ``name``, through the store's own upload path."""

    def store(store_dir: Path, source: Path, name: str) -> Path:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in sorted(Path(source).rglob("*")):
                archive.write(path, path.relative_to(source).as_posix())
        buffer.seek(0)
        datasets = DatasetStore(store_dir)
        datasets.ingest_archive(buffer, name, LIMITS)
        return datasets.path(name)

    return store
