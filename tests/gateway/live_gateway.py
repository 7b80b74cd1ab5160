"""The gateway app served by a real uvicorn on 127.0.0.1 in a thread, for tests that need
real sockets and real concurrency (TestClient runs requests one at a time)."""
from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import uvicorn

from cli.processes import free_port
from polling import wait_for

KEYS = {"read": "a-read-key-0000000000", "submit": "a-submit-key-000000000", "admin": "an-admin-key-000000000"}
KEY_ENTRIES = ",".join(f"{key}:{scope}" for scope, key in KEYS.items())


@contextlib.contextmanager
def served(app) -> Iterator[int]:
    """The port ``app`` answers on, until the block ends."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn to start", interval=0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def raw_request(port: int, head: str, body: bytes = b"", timeout: float = 20) -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, without the blank line) and ``body``, then
    read the answer while the connection stays open: (status, everything read). The body
    is sent only as far as the server lets it; what it did not read is never waited for."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n")
        if body:
            sock.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer or not _complete(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False
