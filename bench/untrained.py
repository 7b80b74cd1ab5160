"""Untrained models for what does not depend on the weights (the soak's load, the memory
of models deployed beside the measured one), and the JPEGs the soak sends."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.report import REPO_ROOT
from cli.localstack import LocalStack
from cli.processes import free_port
from converter.service import convert_version
from ssdstack.datasets.synth import synthesize
from ssdstack.jobs.context import LocalContext
from ssdstack.model_store import ModelStore

API_KEY = "bench-key-0123"


def python_module(module: str, *args: str) -> str:
    """The last line ``python -m module args`` prints (MindSpore runs in a process of its own)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), GLOG_v="3")
    done = subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def deploy_untrained(store: ModelStore, name: str, architecture: str) -> int:
    """Publish an untrained ``architecture`` as ``name``, convert it for ONNX Runtime and
    deploy it; its version."""
    version = int(python_module("bench.build_model", str(store.root), name, architecture))
    convert_version(store, name, version, "onnxruntime", LocalContext(quiet=True))
    store.deploy(name, version)
    return version


def local_stack(var_dir: Path, **env: str) -> LocalStack:
    """A (not started) local stack of the benchmarks in ``var_dir``: ONNX Runtime
    inferencers, free ports, API_KEY, ``env`` added."""
    return LocalStack(var_dir, redis_port=free_port(), gateway_port=free_port(), api_key=API_KEY,
                      extra_env={"SSDSTACK_INFER_BACKEND": "onnxruntime", **env})


def stack_serving_a_model(work: Path, architecture: str, **env: str) -> tuple[LocalStack, int]:
    """A local stack (not started) in a fresh ``work`` whose store has model "bench", an
    untrained ``architecture``, deployed; its version."""
    shutil.rmtree(work, ignore_errors=True)
    stack = local_stack(work / "stack", **env)
    return stack, deploy_untrained(ModelStore(stack.store_dir), "bench", architecture)


def sample_images(work: Path) -> list[bytes]:
    """The JPEG files the soak sends: synthetic shapes, 20 sizes."""
    synthesize(work / "images", images=20, classes=3, seed=11)
    return [p.read_bytes() for p in sorted((work / "images" / "train").glob("*.jpg"))]
