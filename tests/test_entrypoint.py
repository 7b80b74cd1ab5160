"""scripts/entrypoint.sh: the vendor environment is sourced when the image has it."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ENTRYPOINT = Path(__file__).resolve().parent.parent / "scripts" / "entrypoint.sh"


def run(ascend_home: Path, *command: str, **env: str) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if key not in ("MX_SDK_HOME", "LD_LIBRARY_PATH")}
    return subprocess.run([str(ENTRYPOINT), *command], env=dict(clean, ASCEND_HOME=str(ascend_home), **env),
                          capture_output=True, text=True, timeout=30)


def write_env_script(path: Path, **exports: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Vendor scripts read variables they never set; the entrypoint must not run with `set -u`.
    lines = ['echo "sourcing $UNSET_BY_ANYONE" >&2'] + [f"export {k}={v}" for k, v in exports.items()]
    path.write_text("\n".join(lines) + "\n")


def test_cpu_image_runs_the_command_unchanged(tmp_path):
    done = run(tmp_path / "no-ascend", "sh", "-c", 'echo "args:$1 $2"; exit 7', "-", "a", "b c")
    assert done.returncode == 7
    assert done.stdout == "args:a b c\n"


def test_toolkit_newest_mxvision_and_driver_libraries_are_set_up(tmp_path):
    write_env_script(tmp_path / "ascend-toolkit" / "set_env.sh", TOOLKIT_SOURCED="1")
    write_env_script(tmp_path / "mxVision-5.0.0" / "set_env.sh", MXVISION="5.0.0")
    write_env_script(tmp_path / "mxVision-6.0.0" / "set_env.sh", MXVISION="6.0.0")
    (tmp_path / "driver" / "lib64" / "common").mkdir(parents=True)
    done = run(tmp_path, "sh", "-c", 'echo "$TOOLKIT_SOURCED $MXVISION $LD_LIBRARY_PATH"')
    assert done.returncode == 0, done.stderr
    toolkit, mxvision, libraries = done.stdout.split()
    assert (toolkit, mxvision) == ("1", "6.0.0")
    assert libraries.split(":") == [f"{tmp_path}/driver/lib64", f"{tmp_path}/driver/lib64/common"]


def test_mx_sdk_home_wins_over_the_search(tmp_path):
    write_env_script(tmp_path / "mxVision-6.0.0" / "set_env.sh", MXVISION="searched")
    write_env_script(tmp_path / "sdk" / "set_env.sh", MXVISION="from-home")
    done = run(tmp_path, "sh", "-c", 'echo "$MXVISION"', MX_SDK_HOME=str(tmp_path / "sdk"))
    assert done.stdout.strip() == "from-home"
