"""``python -m gateway``: serve the API with uvicorn on the configured host and port."""
from __future__ import annotations

import argparse

import uvicorn

from gateway.main import create_app
from ssdstack.settings import GatewaySettings

GRACE_MARGIN_S = 5.0


def main() -> None:
    argparse.ArgumentParser(prog="python -m gateway", description=(
        "Serve SSD Stack's REST API (FastAPI + uvicorn). Every setting is an environment variable with the "
        "prefix SSDSTACK_ (see ssdstack/settings.py): SSDSTACK_API_KEYS is required; SSDSTACK_HOST and "
        "SSDSTACK_PORT (127.0.0.1:8000 by default), SSDSTACK_REDIS_URL, SSDSTACK_STORE_DIR, ...")).parse_args()
    settings = GatewaySettings()
    # On SIGTERM uvicorn stops accepting and lets requests in flight finish: a detect waits
    # up to detect_timeout for its answer.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=settings.detect_timeout + GRACE_MARGIN_S)


if __name__ == "__main__":
    main()
