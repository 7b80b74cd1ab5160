"""A corpus of hostile inputs through the gateway: archives, annotation files, images,
job specs, names and detect uploads. Each must get a 4xx with the error body and leave
nothing: the store tree, its ``.tmp/``, the spool folder of multipart uploads and the
Redis keyspace are the same after as before. The gateway runs in-process on a real Redis.
"""
from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from ssdstack.datasets.synth import synthesize

from ingest_gateway import KEY, MAX_MEMBERS, MAX_UNPACKED
# An ingest job's keys besides its record and log: the job index, and its queue with the
# message it waits in (the job here runs without taking it).
JOB_KEYS = {b"ssdstack:jobs", b"evaluate", b"_kombu.binding.evaluate", b"_kombu.binding_permanent.evaluate"}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """A valid small dataset in each layout, as {member name: bytes}."""
    folder = tmp_path_factory.mktemp("bases")
    found = {}
    for layout in ("coco", "voc", "text"):
        synthesize(folder / layout, images=3, classes=2, seed=1, format=layout, val_fraction=0.34)
        found[layout] = _files(folder / layout)
    return found


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tarred(files: dict[str, bytes], extra: list[tarfile.TarInfo] = (), again: dict[str, bytes] = None) -> bytes:
    """A tar of ``files``, then the data-less members ``extra``, then ``again``'s files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in [*files.items(), *(again or {}).items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra:
            archive.addfile(info)
    return buffer.getvalue()


def pax_bomb(header_bytes: int) -> bytes:
    """A tar.gz whose first member is a PAX header of ``header_bytes`` (zeros: tiny gzipped)."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, header_bytes
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as gz:
        gz.write(header.tobuf(tarfile.USTAR_FORMAT))
        zeros = bytes(1 << 20)
        for _ in range(header_bytes // len(zeros)):
            gz.write(zeros)
        gz.write(bytes(1024))
    return out.getvalue()


def gnu_long_name(name_bytes: int) -> bytes:
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, name_bytes
    padding = (512 - name_bytes % 512) % 512
    return header.tobuf(tarfile.USTAR_FORMAT) + b"a" * name_bytes + bytes(padding) + bytes(1024)


def special(name: str, kind: bytes, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for field, value in fields.items():
        setattr(info, field, value)
    return info


def replaced(base: dict[str, bytes], name: str, data: bytes | None) -> dict[str, bytes]:
    """``base`` with member ``name`` replaced by ``data``, or removed (None)."""
    files = dict(base)
    if data is None:
        files.pop(name)
    else:
        files[name] = data
    return files


def coco_json(base: dict[str, bytes], edit) -> bytes:
    data = json.loads(base[TRAIN_JSON])
    edit(data)
    return json.dumps(data).encode()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + body)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 365 313\nshowpage\n%%EOF\n"
LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "aaaaaaaaaa">' +
          b"".join(b'<!ENTITY %s "%s">' % (bytes([98 + i]), (b"&%s;" % bytes([97 + i])) * 10) for i in range(8)) +
          b"]><annotation><filename>&i;</filename></annotation>")
XXE = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b"<annotation><filename>&x;</filename></annotation>")
FIRST_IMAGE = "train/000001.jpg"
TRAIN_JSON = "annotations/instances_train.json"
VOC_XML = "Annotations/000001.xml"


@pytest.fixture(scope="module")
def hostile_archives(bases) -> dict[str, bytes]:
    coco, voc, text = bases["coco"], bases["voc"], bases["text"]
    deep = b"[" * 100_000 + b"]" * 100_000
    return {
        "pax header of 64 MiB": pax_bomb(64 * 1024 * 1024),
        "gnu long name of 1 MiB": gnu_long_name(1024 * 1024),
        "zip directory past the member limit": zipped({f"f{i}.txt": b"" for i in range(MAX_MEMBERS + 50)}),
        "member path over PATH_MAX": zipped(dict(coco, **{"/".join(["d" * 200] * 25) + "/x.jpg": b"x"})),
        "zip slip": zipped(dict(coco, **{"../escaped.txt": b"x"})),
        "absolute member": tarred(dict(coco, **{"/tmp/absolute.txt": b"x"})),
        "drive letter member": zipped(dict(coco, **{"C:/windows.txt": b"x"})),
        "backslash member": zipped(dict(coco, **{"..\\escaped.txt": b"x"})),
        "symlink member": tarred(coco, [special("link.jpg", tarfile.SYMTYPE, linkname="/etc/passwd")]),
        "hardlink member": tarred(coco, [special("hard.jpg", tarfile.LNKTYPE, linkname="/etc/passwd")]),
        "device member": tarred(coco, [special("dev", tarfile.CHRTYPE, devmajor=1, devminor=3)]),
        "fifo member": tarred(coco, [special("fifo", tarfile.FIFOTYPE)]),
        "zip bomb": zipped(dict(coco, **{"bomb.bin": bytes(MAX_UNPACKED + 1)})),
        "duplicate member": tarred(coco, again={FIRST_IMAGE: b"again"}),
        "not an archive": b"\x00\x01 this is no archive " * 100,
        "truncated zip": zipped(coco)[:5000],
        "empty body": b"",
        "annotation JSON nested 100000 deep": zipped(replaced(coco, TRAIN_JSON, deep)),
        "annotation not JSON": zipped(replaced(coco, TRAIN_JSON, b"{'images': }")),
        "annotation JSON a list": zipped(replaced(coco, TRAIN_JSON, b"[]")),
        "box of NaN": zipped(replaced(coco, TRAIN_JSON, coco_json(
            coco, lambda d: d["annotations"][0].update(bbox=[float("nan"), 1, 2, 3])))),
        "box of 1e308": zipped(replaced(coco, TRAIN_JSON, coco_json(
            coco, lambda d: d["annotations"][0].update(bbox=[1e308, 1e308, 1e308, 1e308])))),
        "image size negative": zipped(replaced(coco, TRAIN_JSON, coco_json(
            coco, lambda d: d["images"][0].update(width=-5)))),
        "annotation of a missing image": zipped(replaced(coco, TRAIN_JSON, coco_json(
            coco, lambda d: d["annotations"][0].update(image_id=999)))),
        "file_name climbing out": zipped(replaced(coco, TRAIN_JSON, coco_json(
            coco, lambda d: d["images"][0].update(file_name="../../../etc/passwd")))),
        "duplicate category ids": zipped(replaced(coco, TRAIN_JSON, coco_json(
            coco, lambda d: d["categories"].append(dict(d["categories"][0]))))),
        "VOC billion laughs": zipped(replaced(voc, VOC_XML, LAUGHS)),
        "VOC external entity": zipped(replaced(voc, VOC_XML, XXE)),
        "VOC not XML": zipped(replaced(voc, VOC_XML, b"<annotation><size>")),
        "text format garbage line": zipped(replaced(text, "train.txt", b"train/000001.jpg 1,2,x,4,1\n")),
        "EPS named .jpg": zipped(replaced(coco, FIRST_IMAGE, EPS)),
        "decompression bomb image": zipped(replaced(coco, FIRST_IMAGE, png_header(60000, 60000))),
        "truncated JPEG": zipped(replaced(coco, FIRST_IMAGE, coco[FIRST_IMAGE][:400])),
        "zero-byte image": zipped(replaced(coco, FIRST_IMAGE, b"")),
        "text named .jpg": zipped(replaced(coco, FIRST_IMAGE, b"hello, world\n" * 10)),
        "missing image": zipped(replaced(coco, FIRST_IMAGE, None)),
    }


ARCHIVE_CASES = [
    "pax header of 64 MiB", "gnu long name of 1 MiB", "zip directory past the member limit",
    "member path over PATH_MAX", "zip slip", "absolute member", "drive letter member", "backslash member",
    "symlink member", "hardlink member", "device member", "fifo member", "zip bomb", "duplicate member",
    "not an archive", "truncated zip", "empty body", "annotation JSON nested 100000 deep", "annotation not JSON",
    "annotation JSON a list", "box of NaN", "box of 1e308", "image size negative", "annotation of a missing image",
    "file_name climbing out", "duplicate category ids", "VOC billion laughs", "VOC external entity", "VOC not XML",
    "text format garbage line", "EPS named .jpg", "decompression bomb image", "truncated JPEG", "zero-byte image",
    "text named .jpg", "missing image"]
JOB_SPECS = {
    "unknown type": {"type": "mine-bitcoin"},
    "no type": {"dataset": "d", "model": "m"},
    "negative epochs": {"type": "train", "dataset": "d", "model": "m", "epochs": -1},
    "epochs of 10**100": {"type": "train", "dataset": "d", "model": "m", "epochs": 10 ** 100},
    "dataset climbing out": {"type": "train", "dataset": "../../etc", "model": "m"},
    "model name with a slash": {"type": "train", "dataset": "d", "model": "a/b"},
    "unknown architecture": {"type": "train", "dataset": "d", "model": "m", "architecture": "yolo"},
    "unknown field": {"type": "train", "dataset": "d", "model": "m", "shell": "rm -rf /"},
    "a list": [{"type": "train"}],
}
RAW_JOB_BODIES = {
    "JSON nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
    "not JSON": b"type=train",
    "JSON of 2 MiB": json.dumps({"type": "train", "dataset": "d", "model": "m", "pad": "x" * 2 * 1024 * 1024}).encode(),
    "lr of NaN": b'{"type": "train", "dataset": "d", "model": "m", "lr": NaN}',
    "lr of infinity": b'{"type": "train", "dataset": "d", "model": "m", "lr": Infinity}',
}
NAMED = {
    "dataset name climbing out": ("POST", "/v1/datasets?name=../x", b"zip"),
    "dataset name of 100 characters": ("POST", "/v1/datasets?name=" + "a" * 100, b"zip"),
    "dataset name with capitals and spaces": ("POST", "/v1/datasets?name=My%20Data", b"zip"),
    "dataset name empty": ("POST", "/v1/datasets?name=", b"zip"),
    "checkpoint name climbing out": ("PUT", "/v1/checkpoints/..%2F..%2Fx.ckpt", b"ckpt"),
    "checkpoint name not .ckpt": ("PUT", "/v1/checkpoints/x.bin", b"ckpt"),
    "model name climbing out": ("GET", "/v1/models/..%2F..%2Fetc/versions", b""),
    "version -1": ("GET", "/v1/models/demo/versions/-1", b""),
    "deploy version 0": ("POST", "/v1/models/demo/versions/0/deploy", b""),
    "job id climbing out": ("GET", "/v1/jobs/..%2F..%2Fkeys", b""),
    "job id of another shape": ("DELETE", "/v1/jobs/" + "z" * 32, b""),
    "dataset that is not there": ("GET", "/v1/datasets/..%2F..", b""),
}

DETECT_UPLOADS = {
    "empty image": {"file": ("x.jpg", b"")},
    "no file field": {"image": ("x.jpg", b"\xff\xd8")},
    "image over the limit": {"file": ("x.jpg", bytes(1024 * 1024 + 1))},
}


def assert_refused(answer, before: dict, after: dict) -> None:
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    error = answer.json()["error"]
    assert error["code"] and error["message"]
    assert after == before


def test_the_corpus_has_at_least_forty_inputs(hostile_archives):
    assert set(hostile_archives) == set(ARCHIVE_CASES)
    assert len(ARCHIVE_CASES) + len(JOB_SPECS) + len(RAW_JOB_BODIES) + len(NAMED) + len(DETECT_UPLOADS) >= 40


@pytest.mark.parametrize("case", ARCHIVE_CASES)
def test_hostile_archives_are_refused_and_leave_nothing(gateway, hostile_archives, case):
    """Refused at upload (not an archive at all), or by the ingest job: then the job fails
    with the reason, the dataset reads ``failed`` with the same reason, and all that is
    left is the job's record and the dataset's state record."""
    client, what_is_there, run_job = gateway
    before = what_is_there()
    answer = client.post("/v1/datasets", params={"name": "hostile"}, content=hostile_archives[case],
                         headers=dict(KEY, **{"Content-Type": "application/octet-stream"}))
    if answer.status_code != 202:
        return assert_refused(answer, before, what_is_there())
    job_id = answer.json()["id"]
    run_job(job_id)
    job = client.get(f"/v1/jobs/{job_id}", headers=KEY).json()
    assert job["state"] == "failed" and job["error"]["code"] in ("invalid_archive", "invalid_dataset"), job["error"]
    dataset = client.get("/v1/datasets/hostile", headers=KEY).json()
    assert dataset["state"] == "failed" and dataset["error"] == job["error"]
    after = what_is_there()
    assert set(after["files"]) - set(before["files"]) == {"store/datasets/.states/hostile.json"}
    new_keys = set(after["redis"]) - set(before["redis"])
    assert all(job_id in key.decode() or key in JOB_KEYS for key in new_keys), new_keys


@pytest.mark.parametrize("case", sorted(JOB_SPECS))
def test_hostile_job_specs_are_refused_and_leave_nothing(gateway, case):
    client, what_is_there, _ = gateway
    before = what_is_there()
    assert_refused(client.post("/v1/jobs", json=JOB_SPECS[case], headers=KEY), before, what_is_there())


@pytest.mark.parametrize("case", sorted(RAW_JOB_BODIES))
def test_hostile_job_bodies_are_refused_and_leave_nothing(gateway, case):
    client, what_is_there, _ = gateway
    before = what_is_there()
    answer = client.post("/v1/jobs", content=RAW_JOB_BODIES[case],
                         headers=dict(KEY, **{"Content-Type": "application/json"}))
    assert_refused(answer, before, what_is_there())


@pytest.mark.parametrize("case", sorted(NAMED))
def test_hostile_names_are_refused_and_leave_nothing(gateway, case):
    client, what_is_there, _ = gateway
    method, url, body = NAMED[case]
    before = what_is_there()
    assert_refused(client.request(method, url, content=body or None, headers=KEY), before, what_is_there())


@pytest.mark.parametrize("case", sorted(DETECT_UPLOADS))
def test_hostile_detect_uploads_are_refused_and_leave_nothing(gateway, case):
    client, what_is_there, _ = gateway
    before = what_is_there()
    assert_refused(client.post("/v1/detect", files=DETECT_UPLOADS[case], headers=KEY), before, what_is_there())
