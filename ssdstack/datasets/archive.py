"""Unpacking an uploaded zip or tar archive without trusting anything inside it.

Member names, types and sizes are all chosen by the uploader: a name may climb out of
the destination, a link may point anywhere, and a few kilobytes may inflate to
terabytes. So every member is checked before it is written, files are written here
(never with ``extractall``) with default permissions, and the bytes actually written are
counted against the limit as well as the sizes the archive declares. What a reader holds
in memory is bounded before it is read: a zip's member count and directory size come
from its end record before the directory is listed, and a tar's extended headers (PAX,
GNU long names) are refused past ``MAX_TAR_HEADER_BYTES`` before their data is read.
"""
from __future__ import annotations

import lzma
import os
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable

from ssdstack.errors import InvalidArchive

CHUNK_BYTES = 1 << 20
# A member's path, whole: well under Linux's PATH_MAX (4096) once below the scratch folder.
MAX_MEMBER_PATH_BYTES = 1024
# A tar's PAX or GNU long-name header: paths and a few attributes, never megabytes.
MAX_TAR_HEADER_BYTES = 64 * 1024
# A zip's central directory entry: 46 bytes, the name, and at most 64 KiB of extra and comment.
MAX_ZIP_ENTRY_BYTES = 46 + MAX_MEMBER_PATH_BYTES + 2 * 65535
_EXTENDED_TAR_HEADERS = {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                         tarfile.GNUTYPE_LONGLINK}
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_ZIP_SPECIAL_TYPES = {
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "device",
    stat.S_IFBLK: "device",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}
# What the decoders raise on damaged data. gzip and bz2 also raise plain OSErrors, which
# are told apart from real I/O errors (disk full) by their missing errno.
_CORRUPT_DATA = (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError)
# What zipfile raises for encrypted members and compression methods it lacks.
_UNSUPPORTED = (RuntimeError, NotImplementedError)


def unsafe_relative_path(name: str) -> str | None:
    """Why ``name`` is not a safe relative POSIX path to create below a folder, or None.

    Backslashes and drive letters are refused outright rather than interpreted, since
    tools disagree about what they mean.
    """
    if "\\" in name or "\x00" in name:
        return "contains a backslash or NUL character"
    if name.startswith("/") or _DRIVE_LETTER.match(name):
        return "is an absolute path"
    try:
        encoded_parts = [part.encode("utf-8") for part in PurePosixPath(name).parts]
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if b".." in encoded_parts:
        return "contains a '..' component"
    if len(name.encode("utf-8")) > MAX_MEMBER_PATH_BYTES:
        return f"is longer than {MAX_MEMBER_PATH_BYTES} bytes"
    if any(len(part) > 255 for part in encoded_parts):
        return "has a component longer than 255 bytes"
    return None


def safe_extract(archive: Path, dest: Path, max_members: int, max_unpacked_bytes: int) -> None:
    """Unpack a zip, tar, tar.gz, tar.bz2 or tar.xz file (told apart by content) into ``dest``.

    Only regular files and folders are allowed; any link, device, fifo or other special
    member, unsafe name, or name clash raises InvalidArchive naming the member. More
    than ``max_members`` members, or more than ``max_unpacked_bytes`` bytes unpacked
    (declared or actually written), raises InvalidArchive too. ``dest`` may then hold a
    partial extraction; the caller removes it.
    """
    dest.mkdir(parents=True, exist_ok=True)
    budget = _Budget(max_members, max_unpacked_bytes)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest, budget)
        elif _is_tar(archive):
            _extract_tar(archive, dest, budget)
        else:
            raise InvalidArchive("not a zip or tar archive")
    except _CORRUPT_DATA as exc:
        raise InvalidArchive(f"corrupt archive: {exc}") from exc
    except _UNSUPPORTED as exc:
        raise InvalidArchive(f"unsupported archive: {exc}") from exc
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise InvalidArchive(f"corrupt archive: {exc}") from exc


# What an archive's first bytes are: zip (a local header, or the end record of an empty
# zip), gzip, bzip2, xz; a plain tar says "ustar" at offset 257.
_ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


def looks_like_archive(path: Path) -> bool:
    """Whether the file starts like a zip or a (compressed) tar: a check of its first
    bytes, before an ingest job is made for it."""
    with path.open("rb") as file:
        head = file.read(512)
    return head.startswith(_ARCHIVE_MAGIC) or head[257:262] == b"ustar"


def find_dataset_root(extracted: Path) -> Path:
    """The folder of an extracted archive that holds a dataset.

    A dataset folder holds ``annotations/`` (COCO), ``Annotations/`` (Pascal VOC) or
    ``train.txt`` (text format). That is ``extracted`` itself, or else its only
    top-level folder holding one (users zip a folder, and some zip tools add siblings
    such as ``__MACOSX/``). Falls back to ``extracted``, where validation then reports
    what is missing.
    """
    if _holds_dataset(extracted):
        return extracted
    candidates = [p for p in extracted.iterdir() if p.is_dir() and _holds_dataset(p)]
    return candidates[0] if len(candidates) == 1 else extracted


def _holds_dataset(folder: Path) -> bool:
    return (
        (folder / "annotations").is_dir()
        or (folder / "Annotations").is_dir()
        or (folder / "train.txt").is_file()
    )


class _Budget:
    """Counts members and unpacked bytes against the limits."""

    def __init__(self, max_members: int, max_bytes: int):
        self.max_members = max_members
        self.max_bytes = max_bytes
        self.written = 0

    def check_declared(self, members: int, declared_bytes: int) -> None:
        if members > self.max_members:
            raise InvalidArchive(f"archive has more than {self.max_members} members")
        if declared_bytes > self.max_bytes:
            raise InvalidArchive(
                f"archive declares {declared_bytes} unpacked bytes, "
                f"more than the limit of {self.max_bytes}"
            )

    def add_written(self, name: str, count: int) -> None:
        self.written += count
        if self.written > self.max_bytes:
            raise InvalidArchive(
                f"member {name!r}: archive unpacks to more than {self.max_bytes} bytes"
            )


def _extract_zip(archive: Path, dest: Path, budget: _Budget) -> None:
    members, directory_bytes = _zip_directory(archive)
    budget.check_declared(members, 0)
    if directory_bytes > members * MAX_ZIP_ENTRY_BYTES:
        raise InvalidArchive(f"the zip's directory is {directory_bytes} bytes for {members} members")
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        budget.check_declared(len(infos), sum(info.file_size for info in infos))
        for info in infos:
            _extract_member(dest, info.filename, _zip_kind(info), lambda: zf.open(info), budget)


def _zip_directory(archive: Path) -> tuple[int, int]:
    """(members, central directory bytes) from the zip's end record (its Zip64 one when
    the counts overflow the classic fields), read from the file's last 64 KiB."""
    with archive.open("rb") as file:
        size = file.seek(0, os.SEEK_END)
        start = max(0, size - (22 + 65535))
        file.seek(start)
        tail = file.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) < at + 22:
            raise InvalidArchive("corrupt archive: the zip has no end record")
        members, directory_bytes = struct.unpack("<10xHI", tail[at:at + 16])
        if members != 0xFFFF and directory_bytes != 0xFFFFFFFF:
            return members, directory_bytes
        locator = tail[at - 20:at] if at >= 20 else b""
        if not locator.startswith(b"PK\x06\x07"):
            raise InvalidArchive("corrupt archive: the zip's Zip64 end record is missing")
        file.seek(struct.unpack("<Q", locator[8:16])[0])
        record = file.read(56)
        if len(record) < 56 or not record.startswith(b"PK\x06\x06"):
            raise InvalidArchive("corrupt archive: the zip's Zip64 end record is missing")
        members, directory_bytes = struct.unpack("<QQ", record[32:48])
        return members, directory_bytes


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header whose extended headers are refused past MAX_TAR_HEADER_BYTES before
    tarfile reads them (it reads a PAX header's data into memory whole)."""

    def _proc_member(self, tar):
        if self.type in _EXTENDED_TAR_HEADERS and self.size > MAX_TAR_HEADER_BYTES:
            raise InvalidArchive(f"a tar extended header of {self.size} bytes, over the limit of "
                                 f"{MAX_TAR_HEADER_BYTES}")
        return super()._proc_member(tar)


def _is_tar(archive: Path) -> bool:
    try:
        with tarfile.open(archive, "r:*", tarinfo=_BoundedTarInfo):
            return True
    except tarfile.TarError:
        return False


def _extract_tar(archive: Path, dest: Path, budget: _Budget) -> None:
    # A tar has no index: headers are read as the loop goes, so each one is checked
    # before its data is touched and a huge archive is never listed in full.
    declared = 0
    with tarfile.open(archive, "r:*", tarinfo=_BoundedTarInfo) as tar:
        for count, member in enumerate(tar, start=1):
            declared += member.size
            budget.check_declared(count, declared)
            _extract_member(
                dest, member.name, _tar_kind(member), lambda: tar.extractfile(member), budget
            )


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """The member's kind ("file", "dir", "symlink", ...) from its Unix mode bits, if any."""
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        return _ZIP_SPECIAL_TYPES.get(file_type, "special file")
    return "dir" if info.is_dir() or file_type == stat.S_IFDIR else "file"


def _tar_kind(member: tarfile.TarInfo) -> str:
    """The member's kind: "file", "dir", "symlink", "hardlink", "device", ..."""
    # Not member.isreg(): that also admits sparse and contiguous files, which are not
    # worth a special case in a dataset upload.
    if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    return f"special file (tar type {member.type!r})"


def _extract_member(
    dest: Path, name: str, kind: str, open_data: Callable[[], BinaryIO], budget: _Budget
) -> None:
    reason = unsafe_relative_path(name)
    if reason:
        raise InvalidArchive(f"member {name!r} {reason}")
    if kind not in ("file", "dir"):
        raise InvalidArchive(f"member {name!r} is a {kind}; only files and folders are allowed")
    parts = PurePosixPath(name).parts
    if not parts:  # "./": the archive's own top folder
        return
    target = dest.joinpath(*parts)
    try:
        if kind == "dir":
            target.mkdir(mode=0o755, parents=True, exist_ok=True)
            return
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        # O_EXCL: a second member with the same name must not overwrite the first.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as out, open_data() as src:
            while chunk := src.read(CHUNK_BYTES):
                budget.add_written(name, len(chunk))
                out.write(chunk)
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        raise InvalidArchive(f"member {name!r} clashes with another member") from exc
