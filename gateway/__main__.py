"""``python -m gateway``: serve the API with uvicorn on the configured host and port."""
from __future__ import annotations

import uvicorn

from gateway.main import create_app
from ssdstack.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
