"""``ssdstack dataset synth|convert``: the dataset tools on the command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssdstack.datasets.convert import convert
from ssdstack.datasets.layout import FORMATS
from ssdstack.datasets.synth import MAX_CLASSES, synthesize
from ssdstack.errors import InvalidInput


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``synth`` and ``convert`` on an argparse subparsers object."""
    synth = subparsers.add_parser("synth", help="write a synthetic detection dataset of coloured shapes")
    synth.add_argument("--out", type=Path, required=True, metavar="DIR", help="empty or new folder")
    synth.add_argument("--images", type=int, default=200, metavar="N")
    synth.add_argument("--classes", type=int, default=3, metavar="K", help=f"1..{MAX_CLASSES}")
    synth.add_argument("--seed", type=int, default=0, metavar="S")
    synth.add_argument("--format", choices=FORMATS, default="coco", help="dataset layout (default coco)")
    synth.set_defaults(func=cmd_synth)

    parser = subparsers.add_parser("convert", help="convert a dataset between COCO, Pascal VOC and the text format")
    parser.add_argument("--from", dest="source_format", choices=("auto", *FORMATS), default="auto")
    parser.add_argument("--to", dest="target_format", choices=FORMATS, default="coco")
    parser.add_argument("src", type=Path, metavar="SRC")
    parser.add_argument("dst", type=Path, metavar="DST", help="empty or new folder")
    parser.set_defaults(func=cmd_convert)


def cmd_synth(args: argparse.Namespace) -> int:
    summary = synthesize(args.out, images=args.images, classes=args.classes, seed=args.seed, format=args.format)
    print(
        f"{summary.out_dir}: train {summary.train_images} images / {summary.train_annotations} boxes, "
        f"val {summary.val_images} images / {summary.val_annotations} boxes, "
        f"classes {', '.join(summary.categories)}"
    )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    try:
        summary = convert(args.src, args.dst, args.source_format, args.target_format)
    except InvalidInput as exc:  # InvalidDataset included
        print(f"{args.src}: {exc.message}", file=sys.stderr)
        for detail in exc.details or []:
            print(f"  {detail}", file=sys.stderr)
        return 1
    print(
        f"{args.dst} ({args.target_format}): train {summary.images['train']} images / "
        f"{summary.annotations['train']} boxes, val {summary.images['val']} images / "
        f"{summary.annotations['val']} boxes, classes {', '.join(summary.label_names)}"
    )
    return 0
