"""Each extra installs and runs alone: for the plain install and every service extra, a
fresh venv (no system site-packages) with only that extra imports its entry points and
answers ``--help``; the CLI's remote verbs work on the plain install against a gateway
from the gateway-only venv; and neither the gateway nor the CLI ever loads a model
runtime, even where one is installed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cli.processes import free_port

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ssdstack", "trainer", "converter", "inferencer", "gateway", "cli")
RUNTIMES = ("mindspore", "onnxruntime", "onnx")
# extra -> commands that must exit 0 in a venv holding only it (the CLI is in every install).
ENTRY_POINTS = {
    "": [["ssdstack", "--help"], ["ssdstack", "job", "submit", "--help"], ["ssdstack", "demo", "--help"],
         ["ssdstack", "model", "pull", "--help"]],
    "gateway": [["python", "-m", "gateway", "--help"]],
    "converter": [["celery", "-A", "converter.worker", "worker", "--help"]],
    "inferencer": [["celery", "-A", "inferencer.worker", "worker", "--help"]],
    "trainer": [["celery", "-A", "trainer.worker", "worker", "--help"],
                ["python", "-c", "import trainer.rank_main, trainer.tasks"]],
}
# Prints the model runtimes this process has loaded, after running the CLI's arguments.
LOADED_AFTER_CLI = ("import json, sys\nfrom cli.main import main\ntry:\n    code = main(sys.argv[1:])\n"
                    "except SystemExit as stop:\n    code = stop.code\n"
                    f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {RUNTIMES!r})))\n"
                    "sys.exit(code)\n")


def _run(command: list[str], venv: Path | None = None, **options) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH="", **options.pop("env", {}))
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
        env.pop("VIRTUAL_ENV", None)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=options.pop("timeout", 600),
                          cwd=options.pop("cwd", None), **options)


@pytest.fixture(scope="module")
def venvs(tmp_path_factory) -> dict[str, Path]:
    """extra -> a fresh venv holding the project's wheel with only that extra."""
    root = tmp_path_factory.mktemp("extras")
    source = root / "source"  # built from a copy: setuptools leaves build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO_ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(source)])
    assert built.returncode == 0, built.stderr
    [wheel] = (root / "dist").glob("ssdstack-*.whl")

    def make(extra: str) -> tuple[str, Path]:
        venv = root / f"venv-{extra or 'plain'}"
        done = _run([sys.executable, "-m", "venv", str(venv)])
        assert done.returncode == 0, done.stderr
        target = f"{wheel}[{extra}]" if extra else str(wheel)
        done = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile", target])
        assert done.returncode == 0, f"pip install {target}:\n{done.stderr[-3000:]}"
        return extra, venv

    with ThreadPoolExecutor(3) as pool:
        return dict(pool.map(make, ENTRY_POINTS))


@pytest.mark.parametrize("extra", list(ENTRY_POINTS))
def test_each_install_imports_its_entry_points_and_answers_help(venvs, extra, tmp_path):
    venv = venvs[extra]
    assert not (venv / "pyvenv.cfg").read_text().count("include-system-site-packages = true")
    for command in ENTRY_POINTS[extra]:
        done = _run(command, venv, cwd=tmp_path)
        assert done.returncode == 0, f"{' '.join(command)} in the {extra or 'plain'} install:\n{done.stderr[-3000:]}"
    installed = _run([str(venv / "bin" / "python"), "-c", "import importlib.util as u; "
                      f"print([m for m in {RUNTIMES!r} if u.find_spec(m)])"], venv)
    expected = {"": [], "gateway": [], "converter": ["onnxruntime", "onnx"], "inferencer": ["onnxruntime"],
                "trainer": ["mindspore"]}[extra]
    assert installed.stdout.strip() == repr(expected)  # only what the extra asks for


def _serve_gateway(python: str, redis_url: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH="", SSDSTACK_REDIS_URL=redis_url, SSDSTACK_API_KEYS="extras-test-key-00000",
               SSDSTACK_PORT=str(port), SSDSTACK_STORE_DIR=str(tmp_path / "store"))
    gateway = subprocess.Popen([python, "-m", "gateway"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return gateway, url
        except OSError:
            assert gateway.poll() is None, gateway.stderr.read()
            assert time.monotonic() < deadline, "the gateway did not answer /healthz within 60 s"
            time.sleep(0.2)


def test_remote_verbs_work_on_the_plain_install(venvs, clean_redis, tmp_path):
    gateway, url = _serve_gateway(str(venvs["gateway"] / "bin" / "python"), clean_redis, tmp_path)
    try:
        spec = tmp_path / "convert.json"
        spec.write_text(json.dumps({"type": "convert", "model": "nothing-yet", "version": 1}))
        done = _run([str(venvs[""] / "bin" / "python"), "-c", LOADED_AFTER_CLI, "job", "submit", str(spec)],
                    venvs[""], env={"SSDSTACK_URL": url, "SSDSTACK_API_KEY": "extras-test-key-00000"})
    finally:
        gateway.terminate()
        gateway.wait(20)
    assert done.returncode == 0, done.stderr
    assert " queued" in done.stderr  # "job <id> queued": the gateway took it; no converter runs here
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_the_gateway_and_the_cli_load_no_runtime_where_every_one_is_installed(clean_redis, tmp_path):
    """In this (dev) venv MindSpore, ONNX Runtime and onnx are installed: the gateway serves
    requests and the CLI's remote verbs run without importing any of them."""
    check = ("import json, sys\nfrom fastapi.testclient import TestClient\nfrom gateway.main import create_app\n"
             "from ssdstack.settings import GatewaySettings\n"
             f"settings = GatewaySettings(redis_url={clean_redis!r}, api_keys=['extras-test-key-00000'], "
             f"store_dir={str(tmp_path / 'store')!r})\n"
             "with TestClient(create_app(settings)) as client:\n"
             "    key = {'X-API-Key': 'extras-test-key-00000'}\n"
             "    assert client.get('/healthz').status_code == 200\n"
             "    assert client.post('/v1/jobs', json={'type': 'convert', 'model': 'm', 'version': 1},"
             " headers=key).status_code == 202\n"
             "    # No inferencer runs here: the route answers 503 once it has read the image.\n"
             "    assert client.post('/v1/detect', files={'file': ('a.png', b'x')}, headers=key).status_code == 503\n"
             "    assert client.get('/v1/models', headers=key).status_code == 200\n"
             f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {RUNTIMES!r})))\n")
    done = _run([sys.executable, "-c", check], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
    done = _run([sys.executable, "-c", LOADED_AFTER_CLI, "job", "submit", "--help"], cwd=tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout.splitlines()[-1]) == []
