"""``ssdstack``: the command line.

    ssdstack dataset synth --out DIR --images N --classes K --seed S [--format coco|voc|text]
    ssdstack dataset convert [--from auto|coco|voc|text] [--to coco|voc|text] SRC DST
    ssdstack stack up|down|status       local Redis + workers + gateway (what `make demo` runs)
    ssdstack demo                        the whole pipeline over REST on a generated dataset
    ssdstack detect PATH [--out DIR]     detect with the deployed model, one JSON per image
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ssdstack.datasets import formats, synth

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _stack(args):
    from ssdstack.localstack import LocalStack

    return LocalStack(Path(args.var_dir), redis_port=args.redis_port, gateway_port=args.port, api_key=args.api_key)


def cmd_stack(args) -> int:
    stack = _stack(args)
    if args.action == "up":
        stack.up(wait_ready=True, timeout=args.timeout)
        print(f"stack is up: gateway http://127.0.0.1:{args.port} (API docs at /docs), logs in {stack.log_dir}")
    elif args.action == "down":
        stack.down()
        print("stack stopped")
    else:
        for name, state in stack.status().items():
            print(f"{name:<11} {'running' if state['running'] else 'stopped':<8} pid {state['pid']}  log {state['log']}")
    return 0


def cmd_demo(args) -> int:
    from ssdstack.client import Client
    from ssdstack.demo import DemoConfig, run_demo

    stack = _stack(args)
    stack.up(wait_ready=True, timeout=args.timeout)
    base = f"http://127.0.0.1:{args.port}"
    print(f"stack is up (logs in {stack.log_dir})", flush=True)
    client = Client(base, args.api_key)
    try:
        status = run_demo(client, Path(args.var_dir) / "demo", DemoConfig())
    finally:
        client.close()
    print(f"\nThe stack is still running: API docs at {base}/docs (API key {args.api_key!r}); "
          f"stop it with `make down`.")
    return status


def cmd_detect(args) -> int:
    from inferencer.repository import ModelRepository
    from ssdstack.model_store import ModelStore
    from ssdstack.settings import WorkerSettings

    settings = WorkerSettings()
    repository = ModelRepository(ModelStore(settings.store_dir), settings.infer_backend)
    detector = repository.get(args.model)
    source = Path(args.path)
    images = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if source.is_dir() else [source]
    if not images:
        print(f"no images found under {source}", file=sys.stderr)
        return 2
    out_dir = Path(args.out) if args.out else None
    failures = 0
    for path in images:
        try:
            answer = detector.detect(path.read_bytes(), max_pixels=settings.max_image_pixels,
                                     score_threshold=args.score_threshold)
        except Exception as error:  # report and go on with the other images
            failures += 1
            print(f"{path}: {error}", file=sys.stderr)
            continue
        answer["image"] = str(path)
        target = (out_dir / path.relative_to(source).with_suffix(".json")) if out_dir and source.is_dir() else \
            (out_dir / f"{path.stem}.json" if out_dir else path.with_suffix(path.suffix + ".json"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(answer, indent=2))
        print(f"{path}: {len(answer['detections'])} detections -> {target}")
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssdstack", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    dataset = commands.add_parser("dataset", help="dataset tools").add_subparsers(dest="dataset_command", required=True)
    synth.add_cli(dataset)
    formats.add_cli(dataset)

    def stack_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--var-dir", default=os.environ.get("SSDSTACK_LOCAL_DIR", "var/local"))
        p.add_argument("--port", type=int, default=int(os.environ.get("SSDSTACK_LOCAL_PORT", 8000)))
        p.add_argument("--redis-port", type=int, default=int(os.environ.get("SSDSTACK_LOCAL_REDIS_PORT", 6379)))
        p.add_argument("--api-key", default=os.environ.get("SSDSTACK_LOCAL_API_KEY", "local-dev-key"))
        p.add_argument("--timeout", type=float, default=180, help="seconds to wait for readiness")

    stack = commands.add_parser("stack", help="run the stack as local processes")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack_options(stack)
    stack.set_defaults(func=cmd_stack)

    demo = commands.add_parser("demo", help="run the whole pipeline over REST on a generated dataset")
    stack_options(demo)
    demo.set_defaults(func=cmd_demo)

    detect = commands.add_parser("detect", help="detect objects in an image file or a folder of images")
    detect.add_argument("path")
    detect.add_argument("--model", default=None, help="default: the single deployed model")
    detect.add_argument("--out", default=None, help="folder for the JSON files (default: beside each image)")
    detect.add_argument("--score-threshold", type=float, default=None)
    detect.set_defaults(func=cmd_detect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
