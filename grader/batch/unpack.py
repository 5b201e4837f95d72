"""An LMS's download as it comes, a .zip, unpacked safely: every member's path checked before
anything is written (none may leave the folder), links left out and named, a cap on the size and
the count of files, the files' own times kept (a student's hand-in time where nothing else says it).
"""

from __future__ import annotations

import os
import re
import stat
import time
import zipfile
from pathlib import Path, PurePosixPath

from grader.batch.store import ID_CHARS
from grader.errors import UserError
from grader.text import clean

MAX_UNPACKED_BYTES = 4 * 2**30
MAX_MEMBERS = 200_000


def unpack(archive: Path, dest: Path) -> list[str]:
    """Unpack the zip `archive` into `dest`: refused in one line where a member's path leaves `dest`
    or it holds more than MAX_UNPACKED_BYTES; links are not unpacked (their names are returned,
    cleaned), nor macOS's __MACOSX. Files keep their times; a folder takes its newest file's."""
    try:
        zipped = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as failure:
        raise UserError(f"{archive} is not a readable zip file ({failure})") from None
    with zipped:
        members = zipped.infolist()
        if len(members) > MAX_MEMBERS:
            raise UserError(f"{archive} holds {len(members)} files, more than the {MAX_MEMBERS} a download may")
        size = sum(m.file_size for m in members)
        if size > MAX_UNPACKED_BYTES:
            raise UserError(f"{archive} unpacks to {size / 2**30:.1f} GB, more than {MAX_UNPACKED_BYTES // 2**30} GB")
        for member in members:
            _inside(member.filename, archive)  # every path checked before anything is written
        dest.mkdir(parents=True, exist_ok=True)
        links, written = [], 0
        for member in members:
            parts = PurePosixPath(member.filename.replace("\\", "/")).parts
            if not parts or any(part.startswith("__MACOSX") for part in parts):
                continue
            mode = member.external_attr >> 16
            if stat.S_ISLNK(mode):
                links.append(clean(member.filename, ID_CHARS))
                continue
            target = dest.joinpath(*parts)
            try:
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(member) as source, open(target, "wb") as sink:
                    while chunk := source.read(2**20):
                        written += len(chunk)
                        if written > MAX_UNPACKED_BYTES:
                            raise UserError(f"{archive} unpacks to more than {MAX_UNPACKED_BYTES // 2**30} GB")
                        sink.write(chunk)
            except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError) as failure:  # encrypted
                name = clean(member.filename, ID_CHARS)
                raise UserError(f"{archive}: {name} cannot be unpacked ({failure})") from None
            stamp = _zip_time(member)
            os.utime(target, (stamp, stamp))
    _settle_times(dest, archive.stat().st_mtime)
    return links


def _inside(name: str, archive: Path) -> None:
    """Refuse a member whose path would leave the folder it is unpacked in (absolute, a drive, `..`)."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) or ".." in PurePosixPath(posix).parts or "\0" in name:
        shown = clean(name, ID_CHARS)
        raise UserError(f"{archive}: {shown} would be unpacked outside its folder: the zip is refused")


def _zip_time(member: zipfile.ZipInfo) -> float:
    try:
        return time.mktime((*member.date_time, 0, 0, -1))  # the zip's times are the zipping machine's local time
    except (OverflowError, ValueError):
        return time.time()


def _settle_times(folder: Path, default: float) -> None:
    """Each folder's time, the newest of what it holds (a student's folder is as late as its newest file)."""
    for top, dirs, files in os.walk(folder, topdown=False):
        stamps = [os.lstat(os.path.join(top, name)).st_mtime for name in files + dirs]
        newest = max(stamps, default=default)
        os.utime(top, (newest, newest))
