"""The web console: static files (``gateway/console``), served without a key; the page
asks for one and sends it on every API call. Its Content-Security-Policy is the guard's
(:mod:`gateway.guard`): scripts, styles and connections from this origin only."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ssdstack.errors import NotFound

router = APIRouter(tags=["console"], include_in_schema=False)
FOLDER = Path(__file__).resolve().parents[1] / "console"
FILES = {"console.js": "text/javascript", "console.css": "text/css"}


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(FOLDER / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/console/{file}")
async def asset(file: str) -> FileResponse:
    if file not in FILES:
        raise NotFound(f"the console has no file {file!r}")
    return FileResponse(FOLDER / file, media_type=FILES[file], headers={"Cache-Control": "no-cache"})
