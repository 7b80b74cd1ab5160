"""Raw request bodies spooled to disk (the guard bounds their size as they stream in)."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import AsyncIterator, BinaryIO

from fastapi import Request
from starlette.concurrency import run_in_threadpool


@contextlib.asynccontextmanager
async def spooled_body(request: Request, scratch_dir: Path) -> AsyncIterator[BinaryIO]:
    """Yield a temporary file holding the body, rewound. The file is gone when the block
    ends, and when the body breaks off (the client left, or it passed the route's bound)."""
    scratch_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=str(scratch_dir)) as spool:
        async for chunk in request.stream():
            await run_in_threadpool(spool.write, chunk)
        spool.seek(0)
        yield spool


async def save_body(request: Request, dest: Path) -> None:
    """Write the body to ``dest``, a new file; a body that breaks off leaves it partial
    (the caller removes it)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("xb") as out:
        async for chunk in request.stream():
            await run_in_threadpool(out.write, chunk)
