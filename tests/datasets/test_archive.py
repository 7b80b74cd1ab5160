from __future__ import annotations

import io
import stat
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from ssdstack.datasets.archive import find_dataset_root, safe_extract
from ssdstack.errors import InvalidArchive

LIMITS = {"max_members": 100, "max_unpacked_bytes": 1 << 20}


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def tar_member(name: str, type_: bytes = tarfile.REGTYPE, **attrs) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# --- happy paths ----------------------------------------------------------------------


def test_zip_is_extracted(tmp_path):
    archive = write_zip(tmp_path / "a.zip", {"annotations/x.json": b"{}", "train/1.jpg": b"jpg"})

    safe_extract(archive, tmp_path / "out", **LIMITS)

    assert listing(tmp_path / "out") == ["annotations", "annotations/x.json", "train", "train/1.jpg"]
    assert (tmp_path / "out" / "train" / "1.jpg").read_bytes() == b"jpg"


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_is_extracted_whatever_the_compression(tmp_path, mode):
    # The archive's name says nothing: the format is found from its content.
    archive = write_tar(tmp_path / "upload", [
        (tar_member("./", tarfile.DIRTYPE), b""),
        (tar_member("./data", tarfile.DIRTYPE), b""),
        (tar_member("./data/a.txt"), b"hello"),
    ], mode)

    safe_extract(archive, tmp_path / "out", **LIMITS)

    assert listing(tmp_path / "out") == ["data", "data/a.txt"]
    assert (tmp_path / "out" / "data" / "a.txt").read_bytes() == b"hello"


def test_permission_bits_from_the_archive_are_ignored(tmp_path):
    archive = write_tar(tmp_path / "a.tgz", [(tar_member("run.sh", mode=0o6777), b"#!/bin/sh")])

    safe_extract(archive, tmp_path / "out", **LIMITS)

    mode = stat.S_IMODE((tmp_path / "out" / "run.sh").stat().st_mode)
    assert mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IXUSR | stat.S_IWOTH) == 0


# --- rejections ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("/etc/passwd", "absolute path"),
        ("../escape.txt", "'..'"),
        ("data/../../escape.txt", "'..'"),
        ("C:/windows.txt", "absolute path"),
        ("..\\escape.txt", "backslash"),
    ],
)
def test_unsafe_member_names_are_rejected(tmp_path, name, reason):
    tar = write_tar(tmp_path / "a.tgz", [(tar_member(name), b"x")])
    zip_ = write_zip(tmp_path / "a.zip", {name: b"x"})

    for archive in (tar, zip_):
        with pytest.raises(InvalidArchive, match=reason) as caught:
            safe_extract(archive, tmp_path / archive.suffix, **LIMITS)
        assert repr(name) in caught.value.message
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize(
    ("info", "kind"),
    [
        (tar_member("link", tarfile.SYMTYPE, linkname="/etc/passwd"), "symlink"),
        (tar_member("hard", tarfile.LNKTYPE, linkname="a.txt"), "hardlink"),
        (tar_member("tty", tarfile.CHRTYPE, devmajor=4, devminor=1), "device"),
        (tar_member("disk", tarfile.BLKTYPE, devmajor=8, devminor=0), "device"),
        (tar_member("pipe", tarfile.FIFOTYPE), "fifo"),
    ],
)
def test_tar_special_members_are_rejected(tmp_path, info, kind):
    archive = write_tar(tmp_path / "a.tgz", [(tar_member("a.txt"), b"x"), (info, b"")])

    with pytest.raises(InvalidArchive, match=f"member '{info.name}' is a {kind}"):
        safe_extract(archive, tmp_path / "out", **LIMITS)


def test_zip_symlink_is_rejected(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr(info, "/etc/passwd")

    with pytest.raises(InvalidArchive, match="member 'link' is a symlink"):
        safe_extract(tmp_path / "a.zip", tmp_path / "out", **LIMITS)
    assert not (tmp_path / "out" / "link").exists()


def test_duplicate_member_is_rejected(tmp_path):
    archive = write_tar(tmp_path / "a.tgz", [(tar_member("a.txt"), b"1"), (tar_member("a.txt"), b"2")])

    with pytest.raises(InvalidArchive, match="clashes"):
        safe_extract(archive, tmp_path / "out", **LIMITS)


@pytest.mark.parametrize("suffix", ["zip", "tgz"])
def test_too_many_members(tmp_path, suffix):
    files = {f"f{i}.txt": b"x" for i in range(5)}
    archive = tmp_path / f"a.{suffix}"
    if suffix == "zip":
        write_zip(archive, files)
    else:
        write_tar(archive, [(tar_member(name), data) for name, data in files.items()])

    with pytest.raises(InvalidArchive, match="more than 4 members"):
        safe_extract(archive, tmp_path / "out", max_members=4, max_unpacked_bytes=1 << 20)


def test_tar_over_unpacked_limit_stops_before_writing_the_member(tmp_path):
    archive = write_tar(tmp_path / "a.tgz", [(tar_member("small"), b"x" * 600),
                                             (tar_member("big"), b"\0" * 5_000_000)])

    with pytest.raises(InvalidArchive, match="more than the limit of 1000"):
        safe_extract(archive, tmp_path / "out", max_members=10, max_unpacked_bytes=1000)
    assert not (tmp_path / "out" / "big").exists()


def test_zip_bomb_is_rejected_from_declared_sizes(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("zeros.bin", "w") as member:
            for _ in range(50):
                member.write(bytes(1 << 20))
    assert archive.stat().st_size < 200_000

    with pytest.raises(InvalidArchive, match="unpacked bytes"):
        safe_extract(archive, tmp_path / "out", max_members=10, max_unpacked_bytes=1 << 20)
    assert listing(tmp_path / "out") == []


def test_zip_whose_header_understates_its_size_is_rejected(tmp_path):
    archive = write_zip(tmp_path / "liar.zip", {"zeros.bin": bytes(5_000_000)})
    data = bytearray(archive.read_bytes())
    # Claim 1000 bytes in both the local header (offset 22) and the central directory
    # entry (offset 24), as a bomb would to pass the declared-size check.
    struct.pack_into("<I", data, data.find(b"PK\x03\x04") + 22, 1000)
    struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, 1000)
    archive.write_bytes(bytes(data))

    with pytest.raises(InvalidArchive):
        safe_extract(archive, tmp_path / "out", max_members=10, max_unpacked_bytes=100_000)
    written = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written <= 100_000


def test_not_an_archive(tmp_path):
    (tmp_path / "notes.zip").write_bytes(b"just some text, not an archive" * 100)

    with pytest.raises(InvalidArchive, match="not a zip or tar archive"):
        safe_extract(tmp_path / "notes.zip", tmp_path / "out", **LIMITS)


def test_encrypted_zip_member_is_unsupported(tmp_path):
    archive = write_zip(tmp_path / "a.zip", {"secret.txt": b"x"})
    data = bytearray(archive.read_bytes())
    # Set the "encrypted" flag bit in the local header (offset 6) and the central
    # directory entry (offset 8); extraction would then need a password.
    data[data.find(b"PK\x03\x04") + 6] |= 0x1
    data[data.find(b"PK\x01\x02") + 8] |= 0x1
    archive.write_bytes(bytes(data))

    with pytest.raises(InvalidArchive, match="unsupported archive: .*encrypted"):
        safe_extract(tmp_path / "a.zip", tmp_path / "out", **LIMITS)


def test_truncated_tar_gz_is_invalid(tmp_path):
    archive = write_tar(tmp_path / "a.tgz", [(tar_member("a.bin"), bytes(range(256)) * 400)])
    archive.write_bytes(archive.read_bytes()[:-200])

    with pytest.raises(InvalidArchive):
        safe_extract(archive, tmp_path / "out", **LIMITS)


# --- find_dataset_root -----------------------------------------------------------------


def test_dataset_root_is_the_archive_root_when_it_holds_annotations(tmp_path):
    (tmp_path / "annotations").mkdir()

    assert find_dataset_root(tmp_path) == tmp_path


def test_dataset_root_is_a_single_top_level_folder(tmp_path):
    (tmp_path / "my-dataset" / "annotations").mkdir(parents=True)
    (tmp_path / "__MACOSX").mkdir()

    assert find_dataset_root(tmp_path) == tmp_path / "my-dataset"


def test_dataset_root_is_ambiguous_with_two_candidate_folders(tmp_path):
    (tmp_path / "a" / "annotations").mkdir(parents=True)
    (tmp_path / "b" / "annotations").mkdir(parents=True)

    assert find_dataset_root(tmp_path) == tmp_path


_PAX_BOMB = """
import gzip, resource, sys, tarfile
from pathlib import Path
from ssdstack.datasets.archive import safe_extract
from ssdstack.errors import InvalidArchive

folder = Path(sys.argv[1])
header = tarfile.TarInfo("././@PaxHeader")
header.type, header.size = tarfile.XHDTYPE, 300 * 1024 * 1024
with gzip.open(folder / "bomb.tar.gz", "wb", compresslevel=1) as out:
    out.write(header.tobuf(tarfile.USTAR_FORMAT))
    for _ in range(300):
        out.write(bytes(1 << 20))
    out.write(bytes(1024))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    safe_extract(folder / "bomb.tar.gz", folder / "out", 100, 1 << 30)
    print("extracted")
except InvalidArchive as error:
    print(error.message)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_huge_pax_header_is_refused_before_it_is_read(tmp_path):
    """The measured defect: a 0.3 MB tar.gz whose PAX header is 300 MB drove extraction to
    919 MB of memory. Its header is now refused from its declared size."""
    done = subprocess.run([sys.executable, "-c", _PAX_BOMB, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, check=True)
    message, grown_kib = done.stdout.strip().splitlines()
    assert int(grown_kib) < 64 * 1024  # peak memory grew by less than 64 MiB
    assert "extended header of 314572800 bytes" in message
    assert (tmp_path / "bomb.tar.gz").stat().st_size < 2 * 1024 * 1024  # what the uploader sends
