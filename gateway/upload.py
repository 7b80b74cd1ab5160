"""Raw request bodies spooled to disk, counted while they stream in."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import AsyncIterator, BinaryIO

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from ssdstack.errors import PayloadTooLarge


@contextlib.asynccontextmanager
async def spooled_body(request: Request, limit: int, scratch_dir: Path) -> AsyncIterator[BinaryIO]:
    """Yield a temporary file holding the body, rewound; PayloadTooLarge past ``limit``
    bytes, declared or received. The file is gone when the block ends."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"upload is {declared} bytes, over the limit of {limit}")
    scratch_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=str(scratch_dir)) as spool:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(f"upload exceeds the limit of {limit} bytes")
            await run_in_threadpool(spool.write, chunk)
        spool.seek(0)
        yield spool
