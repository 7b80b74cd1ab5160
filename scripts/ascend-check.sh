#!/usr/bin/env bash
# Prove the Ascend path on a host with an NPU (see docs/ascend.md): sources the vendor
# environment like the containers do, then runs `ssdstack ascend-check` with the
# arguments given (e.g. --model demo --out var/ascend-check).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
if [ -x "$here/../.venv/bin/python" ] && [ -z "${PYTHON:-}" ]; then
    python="$here/../.venv/bin/python"
fi
exec "$here/entrypoint.sh" "$python" -m cli.main ascend-check "$@"
