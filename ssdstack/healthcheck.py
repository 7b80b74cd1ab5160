"""Container health checks, standard library only (fast to start, nothing to import).

    python -m ssdstack.healthcheck http URL [--timeout S]
        healthy when URL answers HTTP 200, status and body, within S seconds in all
        (default 3); redirects and proxies are not followed, so the check sees the
        process it names
    python -m ssdstack.healthcheck heartbeat [--file F] [--max-age S]
        healthy when the worker's heartbeat file (default $SSDSTACK_HEARTBEAT_FILE) was
        written within S seconds (default 60), judged by its modification time

Exit status 0 when healthy, 1 otherwise (Docker reserves 2), with one line on stdout
saying why. The workers' check reads a file rather than asking Celery (`celery inspect
ping`), which a worker busy with a long solo-pool job cannot answer.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HEALTHY, UNHEALTHY = 0, 1
DEFAULT_TIMEOUT = 3.0
DEFAULT_MAX_AGE = 60.0
MAX_BODY = 64 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, D102
        return None  # a 3xx then surfaces as an HTTPError with its own status


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def check_http(url: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[bool, str]:
    """(healthy, reason): whether ``url`` answers 200 within ``timeout`` seconds in all."""
    if not url.startswith(("http://", "https://")):
        return False, f"not an http(s) URL: {url!r}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
    outcome: list[tuple[bool, str]] = []
    too_late = f"no answer from {url} within {timeout:g} s"

    def request() -> None:
        try:
            with opener.open(url, timeout=timeout) as response:
                response.read(MAX_BODY)  # the whole answer, not just its status line, in time
                outcome.append((response.status == 200, f"HTTP {response.status} from {url}"))
        except urllib.error.HTTPError as exc:
            body = exc.read(200).decode("utf-8", "replace")
            exc.close()
            outcome.append((False, f"HTTP {exc.code} from {url}" + (f": {body}" if body else "")))
        except TimeoutError:  # the socket's timeout fired before the thread's deadline
            outcome.append((False, too_late))
        except urllib.error.URLError as exc:
            late = isinstance(exc.reason, TimeoutError)
            outcome.append((False, too_late if late else f"no answer from {url}: {exc.reason}"))
        except Exception as exc:  # noqa: BLE001 -- any failure is an unhealthy answer, said in one line
            outcome.append((False, f"no answer from {url}: {type(exc).__name__}: {exc}"))

    # The socket timeout bounds each read; the thread's deadline bounds the whole exchange
    # (a server trickling bytes would otherwise hold the check far beyond the timeout).
    worker = threading.Thread(target=request, daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return False, too_late
    healthy, reason = outcome[0]
    return healthy, _one_line(reason)


def check_heartbeat(path: str | os.PathLike | None, max_age: float = DEFAULT_MAX_AGE,
                    now: float | None = None) -> tuple[bool, str]:
    """(healthy, reason): whether the file at ``path`` was modified within ``max_age`` s."""
    if not path:
        return False, "no heartbeat file: set SSDSTACK_HEARTBEAT_FILE or pass --file"
    try:
        modified = Path(path).stat().st_mtime
    except FileNotFoundError:
        return False, f"heartbeat file {path} does not exist (worker not ready yet, or never started)"
    except OSError as exc:
        return False, f"cannot read heartbeat file {path}: {exc.strerror or exc}"
    age = (time.time() if now is None else now) - modified
    if age > max_age:
        return False, f"heartbeat file {path} is {age:.0f} s old (max {max_age:g} s)"
    return True, f"heartbeat {max(age, 0.0):.1f} s old"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 1, not argparse's 2 (reserved by Docker)
        self.print_usage(sys.stderr)
        print(f"healthcheck: {message}")
        sys.exit(UNHEALTHY)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m ssdstack.healthcheck", description=__doc__.split("\n\n")[0])
    checks = parser.add_subparsers(dest="check", required=True, parser_class=_Parser)
    http = checks.add_parser("http", help="the URL answers HTTP 200 in time")
    http.add_argument("url")
    http.add_argument("--timeout", type=_positive, default=DEFAULT_TIMEOUT,
                      help=f"seconds for the whole exchange (default {DEFAULT_TIMEOUT:g})")
    beat = checks.add_parser("heartbeat", help="the worker's heartbeat file is fresh")
    beat.add_argument("--file", default=None,
                      help="default: $SSDSTACK_HEARTBEAT_FILE")
    beat.add_argument("--max-age", type=_positive, default=DEFAULT_MAX_AGE,
                      help=f"seconds (default {DEFAULT_MAX_AGE:g})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.check == "http":
        healthy, reason = check_http(args.url, args.timeout)
    else:
        path = args.file if args.file is not None else os.environ.get("SSDSTACK_HEARTBEAT_FILE", "")
        healthy, reason = check_heartbeat(path, args.max_age)
    print(("ok: " if healthy else "unhealthy: ") + reason)
    return HEALTHY if healthy else UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())
