"""ssdstack.healthcheck: the containers' HTTP and heartbeat checks, against a real server and real files."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ssdstack.healthcheck import check_heartbeat, check_http, main

REPO_ROOT = Path(__file__).resolve().parent.parent


class _Handler(BaseHTTPRequestHandler):
    release = threading.Event()  # set at teardown, so a stalled answer never outlives the test

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/healthz":
            self._answer(200, b'{"status": "ok"}')
        elif self.path == "/down":
            self._answer(503, b'{"status":\n "unavailable"}')
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/healthz")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/stall":
            self.release.wait(10)
            self._answer(200, b"late")
        elif self.path == "/trickle":  # headers at once, then the body a byte at a time
            self.send_response(200)
            self.send_header("Content-Length", "50")
            self.end_headers()
            for _ in range(50):
                if self.release.wait(0.1):
                    break
                self.wfile.write(b"x")
                self.wfile.flush()
        else:
            self._answer(404, b"")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # the check hanging up on a stalled answer is expected here


@pytest.fixture
def server():
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    _Handler.release.clear()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    _Handler.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- http ---------------------------------------------------------------------------------

def test_200_is_healthy(server, capsys):
    assert main(["http", f"{server}/healthz"]) == 0
    assert capsys.readouterr().out == f"ok: HTTP 200 from {server}/healthz\n"


def test_an_error_status_is_unhealthy_in_one_line(server, capsys):
    assert main(["http", f"{server}/down"]) == 1
    out = capsys.readouterr().out
    assert out == f'unhealthy: HTTP 503 from {server}/down: {{"status": "unavailable"}}\n'


def test_a_redirect_is_not_followed(server):
    healthy, reason = check_http(f"{server}/moved")
    assert not healthy
    assert reason.startswith(f"HTTP 302 from {server}/moved")


def test_nothing_listening_is_unhealthy(capsys):
    url = f"http://127.0.0.1:{_closed_port()}/healthz"
    assert main(["http", url]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"unhealthy: no answer from {url}: ") and out.count("\n") == 1


@pytest.mark.parametrize("path", ["/stall", "/trickle"])
def test_an_answer_later_than_the_timeout_is_unhealthy(server, path):
    healthy, reason = check_http(f"{server}{path}", timeout=0.5)
    assert not healthy  # the server answers only at teardown: the check gave up before it
    assert reason == f"no answer from {server}{path} within 0.5 s"


def test_only_http_urls(capsys):
    assert main(["http", "file:///etc/passwd"]) == 1
    assert "not an http(s) URL" in capsys.readouterr().out


def test_proxy_settings_are_ignored(server, monkeypatch):
    # A proxy variable in the container's environment must not send the check elsewhere.
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert check_http(f"{server}/healthz") == (True, f"HTTP 200 from {server}/healthz")


# --- heartbeat ----------------------------------------------------------------------------

def _beat(path: Path, age_s: float) -> Path:
    path.write_text(str(time.time()))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_a_fresh_heartbeat_is_healthy(tmp_path, capsys):
    beat = _beat(tmp_path / "alive", age_s=5)
    assert main(["heartbeat", "--file", str(beat)]) == 0
    assert capsys.readouterr().out.startswith("ok: heartbeat 5.")


def test_an_old_heartbeat_is_unhealthy(tmp_path, capsys):
    beat = _beat(tmp_path / "alive", age_s=120)
    assert main(["heartbeat", "--file", str(beat)]) == 1
    assert capsys.readouterr().out == f"unhealthy: heartbeat file {beat} is 120 s old (max 60 s)\n"


def test_max_age_is_a_parameter(tmp_path):
    beat = _beat(tmp_path / "alive", age_s=20)
    assert main(["heartbeat", "--file", str(beat), "--max-age", "30"]) == 0
    assert main(["heartbeat", "--file", str(beat), "--max-age", "10"]) == 1


def test_the_file_defaults_to_the_workers_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("SSDSTACK_HEARTBEAT_FILE", str(_beat(tmp_path / "alive", age_s=1)))
    assert main(["heartbeat"]) == 0
    monkeypatch.setenv("SSDSTACK_HEARTBEAT_FILE", str(_beat(tmp_path / "stale", age_s=90)))
    assert main(["heartbeat"]) == 1


def test_a_missing_file_is_unhealthy(tmp_path, capsys):
    assert main(["heartbeat", "--file", str(tmp_path / "never-written")]) == 1
    assert "does not exist" in capsys.readouterr().out


def test_no_file_configured_is_unhealthy(monkeypatch, capsys):
    monkeypatch.delenv("SSDSTACK_HEARTBEAT_FILE", raising=False)
    assert main(["heartbeat"]) == 1
    assert capsys.readouterr().out == "unhealthy: no heartbeat file: set SSDSTACK_HEARTBEAT_FILE or pass --file\n"


def test_a_heartbeat_from_the_future_counts_as_fresh(tmp_path):
    # A clock step backwards on the node must not kill live workers.
    beat = _beat(tmp_path / "alive", age_s=-30)
    assert check_heartbeat(beat, max_age=60)[0]


def test_bad_usage_exits_1_not_2(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["heartbeat", "--max-age", "0"])
    assert exited.value.code == 1
    assert "positive" in capsys.readouterr().out


# --- as the containers run it -------------------------------------------------------------

def test_module_entry_point(server, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        env = {key: value for key, value in os.environ.items() if key != "SSDSTACK_HEARTBEAT_FILE"}
        env["PYTHONPATH"] = str(REPO_ROOT)
        return subprocess.run([sys.executable, "-m", "ssdstack.healthcheck", *args], env=env,
                              capture_output=True, text=True, timeout=30)

    assert run("http", f"{server}/healthz").returncode == 0
    failed = run("http", f"{server}/down")
    assert (failed.returncode, failed.stdout.count("\n")) == (1, 1)
    assert run("heartbeat", "--file", str(_beat(tmp_path / "alive", age_s=0))).returncode == 0
    assert run("heartbeat").returncode == 1
