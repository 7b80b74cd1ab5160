"""``ssdstack``: the command line.

    ssdstack dataset synth --out DIR --images N --classes K --seed S [--format coco|voc|text]
    ssdstack dataset convert [--from auto|coco|voc|text] [--to coco|voc|text] SRC DST
    ssdstack stack up|down|status       local Redis + workers + gateway (what `make demo` runs)
    ssdstack demo                        the whole pipeline over REST on a generated dataset
    ssdstack detect PATH [--out DIR]     detect with the deployed model, one JSON per image
    ssdstack train SPEC.json             run a train job in this process (trainer extra needed)
    ssdstack model import CKPT --architecture A --labels FILE [--model M] [--dataset D]
    ssdstack model export MODEL VERSION [--formats MINDIR ONNX AIR]
    ssdstack model pull MODEL VERSION DIR    download a version from the gateway, resumed and checked
    ssdstack job submit SPEC.json [--wait]   submit any job to the gateway (SSDSTACK_URL, SSDSTACK_API_KEY)
    ssdstack store backup DIR | restore DIR  the store and Redis's state together, checked

The local commands use the store of SSDSTACK_STORE_DIR, as the workers do.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from pathlib import Path

from cli import datasets
from cli.backup import BackupError, backup, restore
from cli.ascend_check import run_ascend_check
from cli.client import Client
from cli.demo import DemoConfig, run_demo
from cli.localstack import LocalStack
from ssdstack.errors import SsdStackError
from ssdstack.jobs.context import LocalContext
from ssdstack.jobs.pipeline import JOB_TYPES, run_in_process
from ssdstack.jobs.specs import ExportSpec, ImportSpec, TrainSpec
from ssdstack.model_store import ModelStore
from ssdstack.redis_client import connect
from ssdstack.settings import CommonSettings, WorkerSettings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _stack(args) -> LocalStack:
    return LocalStack(Path(args.var_dir), redis_port=args.redis_port, gateway_port=args.port, api_key=args.api_key,
                      inferencers=args.inferencers)


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
    stack = _stack(args)
    stack.up(wait_ready=True, timeout=args.timeout)
    base = f"http://127.0.0.1:{args.port}"
    print(f"stack is up (logs in {stack.log_dir})", flush=True)
    client = Client(base, args.api_key)
    try:
        status = run_demo(client, Path(args.var_dir) / "demo", DemoConfig())
    finally:
        client.close()
    print(f"\nThe stack is still running. Web console: {base}/ (sign in with the API key {args.api_key!r}); "
          f"API docs: {base}/docs; stop it with `make down`.")
    return status


def cmd_detect(args) -> int:
    # Local verbs import their service lazily: the remote verbs run without its extra.
    from inferencer.backends import engine_options
    from inferencer.repository import ModelRepository

    settings = WorkerSettings()
    repository = ModelRepository(ModelStore(settings.store_dir), settings.infer_backend, engine_options(settings))
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


def _run_local(spec, replace: dict | None = None) -> int:
    """Run a job's stages in this process, as the trainer worker would (trainer extra needed);
    ``replace``: stage functions to use instead of the trainer's."""
    # The trainer (MindSpore) is imported for local verbs only, as the inferencer in cmd_detect.
    from trainer.service import remove_job_folders
    from trainer.tasks import stage_runners

    settings = WorkerSettings()
    ctx = LocalContext(f"local-{uuid.uuid4().hex[:12]}")
    runners = dict(stage_runners(settings), **(replace or {}))
    try:
        result = run_in_process(JOB_TYPES[spec.type], spec, runners, ctx)
    except SsdStackError as error:
        print(f"error: {error.message}", file=sys.stderr)
        for line in error.details if isinstance(error.details, list) else []:
            print(f"  {line}", file=sys.stderr)
        return 1
    finally:  # nothing resumes a local run
        remove_job_folders(settings.store_dir, settings.work_dir, ctx.job_id)
    print(json.dumps(result, indent=2))
    return 0


def cmd_train(args) -> int:
    return _run_local(TrainSpec.model_validate_json(Path(args.spec).read_text()))


def cmd_model_import(args) -> int:
    from trainer.service import import_weights  # the trainer's extra: see _run_local

    path = Path(args.checkpoint)
    labels = [line.strip() for line in Path(args.labels).read_text(encoding="utf-8").splitlines() if line.strip()]
    if labels and labels[0] == "background":
        labels = labels[1:]  # a MindX labels file starts with it
    # The spec names an uploaded file; here the local path is loaded instead.
    spec = ImportSpec(checkpoint=re.sub(r"[^A-Za-z0-9._-]", "_", path.stem).lstrip("._-")[:100] + ".ckpt",
                      architecture=args.architecture, labels=labels, model=args.model, dataset=args.dataset)
    settings = WorkerSettings()

    def import_local(ctx, data):
        return import_weights(data, settings.store_dir, settings.work_dir / ctx.job_id, ctx,
                              default_device=settings.train_device, checkpoint=path)

    return _run_local(spec, {"import": import_local})


def cmd_model_export(args) -> int:
    return _run_local(ExportSpec(model=args.model, version=args.version, formats=args.formats))


def _remote() -> Client:
    """A client of the gateway SSDSTACK_URL names, with the key of SSDSTACK_API_KEY."""
    return Client(os.environ.get("SSDSTACK_URL", "http://127.0.0.1:8000"),
                  os.environ.get("SSDSTACK_API_KEY", "local-dev-key"))


def cmd_model_pull(args) -> int:
    client = _remote()
    try:
        outcome = client.pull(args.model, args.version, Path(args.dir))
    finally:
        client.close()
    for file, how in outcome.items():
        print(f"{how:<10} {file}")
    print(f"{args.model} version {args.version} is in {args.dir} (sha256 checked)")
    return 0


def cmd_job_submit(args) -> int:
    client = _remote()
    try:
        job = client.submit(json.loads(Path(args.spec).read_text()))
        print(f"job {job['id']} {job['state']}", file=sys.stderr)
        if args.wait:
            job = client.wait(job["id"], timeout=args.timeout)
        print(json.dumps(job, indent=2))
    finally:
        client.close()
    return 0 if job["state"] in ("queued", "running", "succeeded") else 1


def cmd_store(args) -> int:
    settings = CommonSettings()
    client = connect(settings.redis_url, settings.redis_sentinel_master, socket_timeout=30)
    try:
        if args.action == "backup":
            summary = backup(settings.store_dir, client, Path(args.dir))
        else:
            summary = restore(Path(args.dir), settings.store_dir, client)
    except BackupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(json.dumps(summary, indent=2))
    for problem in summary["problems"]:
        print(f"inconsistent: {problem}", file=sys.stderr)
    return 1 if summary["problems"] else 0


def cmd_ascend_check(args) -> int:
    settings = WorkerSettings()
    report = run_ascend_check(settings.store_dir, args.model, Path(args.out), dataset=args.dataset,
                              split=args.split, soc_version=args.soc_version or settings.ascend_soc_version or None,
                              image_format=args.image_format, preprocessing=args.preprocessing,
                              work_dir=settings.work_dir, agreement_score=args.agreement_score,
                              min_agreement=args.min_agreement, max_map_gap=args.max_map_gap)
    print((Path(args.out) / "report.md").read_text())
    return 0 if report["passed"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssdstack", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    dataset = commands.add_parser("dataset", help="dataset tools").add_subparsers(dest="dataset_command", required=True)
    datasets.add_commands(dataset)

    def stack_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--var-dir", default=os.environ.get("SSDSTACK_LOCAL_DIR", "var/local"))
        p.add_argument("--port", type=int, default=int(os.environ.get("SSDSTACK_LOCAL_PORT", 8000)))
        p.add_argument("--redis-port", type=int, default=int(os.environ.get("SSDSTACK_LOCAL_REDIS_PORT", 6379)))
        p.add_argument("--api-key", default=os.environ.get("SSDSTACK_LOCAL_API_KEY", "local-dev-key"))
        p.add_argument("--timeout", type=float, default=180, help="seconds to wait for readiness")
        p.add_argument("--inferencers", type=int, default=int(os.environ.get("SSDSTACK_LOCAL_INFERENCERS", 1)),
                       help="inferencer processes, sharing the infer queue")

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

    train = commands.add_parser("train", help="run a train job spec (JSON) in this process")
    train.add_argument("spec", help="a file holding a train job spec, as POST /v1/jobs takes")
    train.set_defaults(func=cmd_train)

    model = commands.add_parser("model", help="model versions: import, export, pull").add_subparsers(
        dest="model_command", required=True)
    import_ = model.add_parser("import", help="turn a MindSpore checkpoint into a model version")
    import_.add_argument("checkpoint")
    import_.add_argument("--architecture", required=True)
    import_.add_argument("--labels", required=True, help="class names, one per line (a leading 'background' is skipped)")
    import_.add_argument("--model", default="ssd")
    import_.add_argument("--dataset", default=None, help="a stored dataset whose val split gives the mAP")
    import_.set_defaults(func=cmd_model_import)
    export = model.add_parser("export", help="export a version's weights again, as a new version")
    export.add_argument("model")
    export.add_argument("version", type=int)
    export.add_argument("--formats", nargs="+", default=["MINDIR", "ONNX"], choices=["MINDIR", "ONNX", "AIR"])
    export.set_defaults(func=cmd_model_export)
    pull = model.add_parser("pull", help="download a version's artefacts from the gateway (SSDSTACK_URL, "
                            "SSDSTACK_API_KEY): resumes, checks each sha256")
    pull.add_argument("model")
    pull.add_argument("version", type=int)
    pull.add_argument("dir")
    pull.set_defaults(func=cmd_model_pull)

    job = commands.add_parser("job", help="jobs on a running stack").add_subparsers(dest="job_command", required=True)
    submit = job.add_parser("submit", help="submit a job spec (JSON) to the gateway")
    submit.add_argument("spec")
    submit.add_argument("--wait", action="store_true", help="wait until the job ends")
    submit.add_argument("--timeout", type=float, default=24 * 3600)
    submit.set_defaults(func=cmd_job_submit)

    store = commands.add_parser("store", help="back up or restore the model store and Redis's state together "
                                "(SSDSTACK_STORE_DIR, SSDSTACK_REDIS_URL)")
    store.add_argument("action", choices=["backup", "restore"])
    store.add_argument("dir", help="backup: a new folder; restore: a backup folder (into an empty store and Redis)")
    store.set_defaults(func=cmd_store)

    check = commands.add_parser("ascend-check", help="prove the Ascend path on this NPU host: ATC, MindX stream, "
                                "mAP, images/s, agreement with ONNX Runtime (see docs/ascend.md)")
    check.add_argument("--model", default="demo", help="NAME or NAME:VERSION in the store (default: newest demo)")
    check.add_argument("--dataset", default=None, help="default: the version's training dataset")
    check.add_argument("--split", default="val", choices=["train", "val"])
    check.add_argument("--soc-version", default=None, help="ATC target; default: the chip npu-smi shows")
    check.add_argument("--image-format", default="auto", choices=["auto", "rgb", "bgr", "yuv420sp"])
    check.add_argument("--preprocessing", default="auto", choices=["auto", "dvpp", "cpu"])
    check.add_argument("--out", default="var/ascend-check", help="folder for report.json and report.md")
    check.add_argument("--agreement-score", type=float, default=0.3,
                       help="detections below this score are not compared")
    check.add_argument("--min-agreement", type=float, default=0.9)
    check.add_argument("--max-map-gap", type=float, default=0.02)
    check.set_defaults(func=cmd_ascend_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
