"""How a class's hand-ins come out of an LMS, read into one entry per student: `--layout` of
`grade batch` and `grade similarity`.

folders     one entry per student, named by the student's id (grader.batch.store.find_entries)
canvas      Canvas's "Download Submissions": flat files `<name>[_LATE]_<user id>_<attachment id>_<file>`;
            a file handed in again is `<stem>-<n><suffix>`, the highest n the latest (it replaces the
            others under the file's own name); the id is the Canvas user id
moodle      Moodle's "Download all submissions": folders `<Full Name>_<participant id>_assignsubmission_file_/`,
            or flat files `<Full Name>_<participant id>_assignsubmission_file_<file>`; the id is the
            participant id (the worksheet's `Participant <id>`)
classroom   `gh classroom clone student-repos`: a repository `<assignment>-<login>/` each (the prefix
            common to all, or the one the `<assignment>-submissions/` folder names); the id is the login
gradescope  Gradescope's "Export Submissions": folders `submission_<n>/` and `submission_metadata.yml`
            naming each one's submitters (`:name:`, `:sid:`, `:email:`) and `:created_at:`; the id is
            the sid (else the email); a group's members each get the group's hand-in

The download is the folder, or the .zip as downloaded: that is unpacked into the staging folder
(DIR/.batch/download/ for a batch), refused in one line where a member's path would leave it, with
no links and at most MAX_UNPACKED_BYTES. The files of a flat layout are put together in a folder per
student there, the times of the files kept (the hand-in times of `--deadline` without
submissions.csv). Whatever the layout names no student by is listed, never graded. A name is the
LMS's text, an adversary's: cleaned as store.find_entries cleans an entry's name, and kept inside
its folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from grader.batch import LAYOUT_CHOICES
from grader.batch.late import parse_time
from grader.batch.store import ID_CHARS, TIMES_FILE, Entry, find_entries, left_aside
from grader.batch.unpack import MAX_UNPACKED_BYTES, unpack
from grader.errors import UserError
from grader.text import clean

LMS = {"canvas": "Canvas", "moodle": "Moodle", "classroom": "GitHub Classroom", "gradescope": "Gradescope"}

CANVAS = re.compile(r"^(?P<name>.+?)(?P<late>_LATE)?_(?P<user>\d+)_(?P<attachment>\d+)_(?P<file>.+)$")
AGAIN = re.compile(r"^(?P<stem>.+)-(?P<version>\d+)$")  # Canvas's `model-2` for the third `model.py`
MOODLE = re.compile(r"^(?P<name>.+)_(?P<participant>\d+)_assignsubmission_(?P<plugin>[a-z]+)(?:_(?P<file>.*))?$")
GRADESCOPE_METADATA = "submission_metadata.yml"
CLASSROOM_FOLDER = "-submissions"  # gh classroom clone's `<assignment>-submissions/`
STAGED = ("canvas", "moodle")  # layouts whose flat files are put together per student
DOWNLOAD = "download"  # a batch's staging folder, in DIR/.batch/
UNPACKED = "unpacked"  # in the staging folder: the zip as downloaded
STUDENTS = "students"  # in the staging folder: a folder per student of a flat layout
MAX_METADATA_BYTES = 64 * 2**20
SHOWN = 10  # names in a line of the files left aside, then "and N more"


@dataclass(frozen=True)
class Download:
    """A class's hand-ins as the LMS gave them: an entry per student and what the LMS says of them."""

    layout: str
    entries: list[Entry]
    beside: Path  # where submissions.csv (the hand-in times) is looked for: the folder, or the zip's
    names: dict[str, str] = field(default_factory=dict)  # id -> the student's name in the LMS
    handed_in: dict[str, datetime] = field(default_factory=dict)  # id -> when the LMS says (Gradescope)
    late: list[str] = field(default_factory=list)  # ids the LMS marks late (Canvas's LATE)
    unattributed: list[str] = field(default_factory=list)  # the download's files of no student, cleaned

    def lines(self) -> list[str]:
        """What reading it says, a line each: the layout and the students (those marked late), the files left aside."""
        if self.layout == "folders":
            aside = "not hand-ins, left aside (a hand-in is a folder, a .zip, a .py or a .ipynb): "
            return [aside + ", ".join(self.unattributed)] if self.unattributed else []
        count = len(self.entries)
        said = f"read as a {self.layout} download: {count} student{'s' if count != 1 else ''}"
        if self.late:
            said += f"; marked late by {LMS[self.layout]}: " + _some([self._named(i) for i in self.late])
        lines = [said]
        if self.unattributed:
            lines.append(f"not attributed to a student, left aside: {_some(self.unattributed)}")
        return lines

    def _named(self, student: str) -> str:
        name = self.names.get(student, "")
        return f"{name} ({student})" if name and name != student else student


def _some(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


# --- recognizing a layout, by the names of the download's files ---------------------------------


def recognize(path: Path) -> str:
    """The layout of a download (a folder, or a .zip), by its files' names: `folders` when no LMS's matches."""
    tree = _Tree.of(path)
    found = _recognized(tree)
    if found == "folders" and (inner := tree.wrapped()) is not None and _recognized(inner) != "folders":
        return _recognized(inner)  # a download wrapped in one folder (Gradescope's assignment_<n>_export/)
    return found


def _recognized(tree: _Tree) -> str:
    names = [name for name in tree.top if not _ignored(name) and name != TIMES_FILE]
    files = [name for name in names if tree.top[name] is None]
    folders = [name for name in names if tree.top[name] is not None]

    def most(count: int) -> bool:
        return count > 0 and 2 * count > len(names)

    if GRADESCOPE_METADATA in files:
        return "gradescope"
    if most(sum(bool(MOODLE.match(name)) for name in names)):
        return "moodle"
    if most(sum(bool(CANVAS.match(name)) for name in files)):
        return "canvas"
    repositories = [name for name in folders if ".git" in (tree.top[name] or ())]
    if folders and not files and repositories and _classroom_prefix(tree.name, folders):
        return "classroom"
    return "folders"


@dataclass(frozen=True)
class _Tree:
    """A download's top-level names, each with the names in it (a folder) or None (a file): a
    folder's (`path`), or a zip's members' (`zip_names`, under `prefix`)."""

    name: str  # the folder's own name (gh classroom's `<assignment>-submissions`), or the zip's stem
    top: dict[str, frozenset[str] | None]
    path: Path | None = None
    zip_names: tuple[str, ...] = ()
    prefix: str = ""

    @classmethod
    def of(cls, path: Path) -> _Tree:
        if path.is_dir():
            top = {}
            for item in path.iterdir():
                top[item.name] = _names_in(item) if item.is_dir() and not item.is_symlink() else None
            return cls(path.name, top, path)
        try:
            with zipfile.ZipFile(path) as archive:
                names = tuple(info.filename.replace("\\", "/") for info in archive.infolist())
        except (zipfile.BadZipFile, OSError) as failure:
            raise UserError(f"{path} is neither a folder of submissions nor a readable zip ({failure})") from None
        return cls._of_zip(path.stem, names, "")

    @classmethod
    def _of_zip(cls, name: str, names: tuple[str, ...], prefix: str) -> _Tree:
        top: dict[str, set[str] | None] = {}
        for member in names:
            if not member.startswith(prefix):
                continue
            first, slash, rest = member[len(prefix) :].partition("/")
            if not first:
                continue
            if slash:  # a folder, or in one
                if top.get(first) is None:
                    top[first] = set()
                if inside := rest.split("/")[0]:
                    top[first].add(inside)  # type: ignore[union-attr]
            else:
                top.setdefault(first, None)
        frozen = {k: None if v is None else frozenset(v) for k, v in top.items()}
        return cls(name, frozen, None, names, prefix)

    def wrapped(self) -> _Tree | None:
        """The tree inside, where this one is a single folder (and hidden files)."""
        names = [name for name in self.top if not _ignored(name) and name != TIMES_FILE]
        if len(names) != 1 or self.top[names[0]] is None:
            return None
        if self.path is not None:
            return None if (self.path / names[0]).is_symlink() else _Tree.of(self.path / names[0])
        return self._of_zip(names[0], self.zip_names, f"{self.prefix}{names[0]}/")


def _names_in(folder: Path) -> frozenset[str]:
    try:
        return frozenset(p.name for p in folder.iterdir())
    except OSError:  # unreadable: a folder all the same
        return frozenset()


def _ignored(name: str) -> bool:
    """What no layout counts, nor lists: hidden files (.DS_Store, .git) and macOS's __MACOSX."""
    return name.startswith((".", "__MACOSX"))


def _classroom_prefix(folder_name: str, folders: list[str]) -> str:
    """The `<assignment>-` every repository's name starts with: the one `<assignment>-submissions/`
    names, else the longest common to all (two at least), cut after a dash; "" if none."""
    if folder_name.endswith(CLASSROOM_FOLDER) and len(folder_name) > len(CLASSROOM_FOLDER):
        named = folder_name[: -len(CLASSROOM_FOLDER)] + "-"
        if all(f.startswith(named) and len(f) > len(named) for f in folders):
            return named
    if len(folders) < 2:
        return ""
    common = folders[0]
    for name in folders[1:]:
        while not name.startswith(common):
            common = common[:-1]
    return common[: common.rfind("-") + 1]


# --- reading a download ----------------------------------------------------------------------------


def resolve(path: Path, layout: str) -> str:
    """The layout `path` is read as: `layout`, or the one recognized for `auto`."""
    if layout not in LAYOUT_CHOICES:
        raise UserError(f"--layout {layout}: expected one of {', '.join(LAYOUT_CHOICES)}")
    return recognize(path) if layout == "auto" else layout


def writes(path: Path, layout: str) -> bool:
    """Whether reading `path` as `layout` writes in the staging folder: a zip is unpacked, and a
    flat layout's files are put together per student."""
    return path.is_file() or resolve(path, layout) in STAGED


def read_hand_ins(path: Path, layout: str, staging: Path) -> Download:
    """The hand-ins of the download at `path` (a folder, or a .zip) read as `layout` (`auto`: the
    one recognized); what is unpacked or put together goes in `staging`, emptied first."""
    if not path.exists():
        raise UserError(f"{path} does not exist")
    layout = resolve(path, layout)
    links: list[str] = []
    if path.is_file():
        shutil.rmtree(staging, ignore_errors=True)
        root = staging / UNPACKED / _path_safe(clean(path.stem, ID_CHARS))  # its name: gh classroom's folder
        links = unpack(path, root)
    else:
        if layout in STAGED:
            shutil.rmtree(staging, ignore_errors=True)
        root = path
    read = READERS[layout](_root(root, layout), staging)
    unattributed = read.unattributed + [f"{name} (a link)" for name in links]
    beside = path.parent if path.is_file() else path
    return Download(layout, read.entries, beside, read.names, read.handed_in, read.late, unattributed)


def _root(folder: Path, layout: str) -> Path:
    """The folder the layout's names are in: `folder`, or the one folder it wraps where that one
    is read as the layout (Gradescope's `assignment_<n>_export/`, an export unzipped in a folder)."""
    inner = _Tree.of(folder).wrapped()
    if layout != "folders" and inner is not None and inner.path is not None and _recognized(inner) == layout:
        return inner.path
    return folder


def _items(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not _ignored(p.name) and p.name != TIMES_FILE), key=lambda p: p.name)


def _shown(path: Path) -> str:
    return clean(path.name, ID_CHARS)


def _folders(root: Path, staging: Path) -> Download:
    return Download("folders", find_entries(root), root, unattributed=left_aside(root))


def _canvas(root: Path, staging: Path) -> Download:
    """Canvas: a student's files by user id, each file's latest version under its own name."""
    chosen: dict[str, dict[str, tuple[tuple[int, int], Path]]] = {}
    names: dict[str, str] = {}
    late: set[str] = set()
    unattributed = []
    for item in _items(root):
        found = CANVAS.match(item.name)
        if found is None or not _plain_file(item):
            unattributed.append(_shown(item))
            continue
        user = found["user"]
        names.setdefault(user, found["name"])
        if found["late"]:
            late.add(user)
        file, version = _unversioned(found["file"])
        order = (version, int(found["attachment"]))
        files = chosen.setdefault(user, {})
        if file not in files or order > files[file][0]:
            files[file] = (order, item)
    ids = _unique_ids(list(chosen))
    entries = [
        Entry(ids[user], _assemble({f: p for f, (_, p) in files.items()}, staging, ids[user]))
        for user, files in chosen.items()
    ]
    return Download(
        "canvas",
        _sorted(entries),
        root,
        {ids[u]: clean(n, ID_CHARS) for u, n in names.items()},
        late=sorted(ids[u] for u in late),
        unattributed=unattributed,
    )


def _unversioned(file: str) -> tuple[str, int]:
    """A Canvas file's own name and version: `model-2.py` -> (`model.py`, 2), `model.py` -> (`model.py`, 0)."""
    path = PurePosixPath(file)
    again = AGAIN.match(path.stem)
    if again is None:
        return _file_name(file), 0
    return _file_name(again["stem"] + path.suffix), int(again["version"])


def _moodle(root: Path, staging: Path) -> Download:
    """Moodle: a folder per participant, or the participants' flat files put together."""
    folders: dict[str, Path] = {}
    flat: dict[str, dict[str, Path]] = {}
    names: dict[str, str] = {}
    unattributed = []
    for item in _items(root):
        found = MOODLE.match(item.name)
        if found is None or found["plugin"] != "file":  # an online text, feedback files: no code
            unattributed.append(_shown(item))
            continue
        participant, file = found["participant"], found["file"] or ""
        if item.is_dir() and not item.is_symlink() and not file:
            folders[participant] = item
        elif file and _plain_file(item):
            flat.setdefault(participant, {})[_file_name(file)] = item
        else:
            unattributed.append(_shown(item))
            continue
        names.setdefault(participant, found["name"])
    for participant in set(flat) & set(folders):  # a folder and flat files: the folder is the hand-in
        unattributed += [_shown(p) for p in flat.pop(participant).values()]
    ids = _unique_ids(sorted(set(folders) | set(flat)))
    entries = [Entry(ids[p], _hand_in(folder)) for p, folder in folders.items()]
    entries += [Entry(ids[p], _assemble(files, staging, ids[p])) for p, files in flat.items()]
    shown = {ids[p]: clean(n, ID_CHARS) for p, n in names.items() if p in ids}
    return Download("moodle", _sorted(entries), root, shown, unattributed=sorted(unattributed))


def _classroom(root: Path, staging: Path) -> Download:
    """GitHub Classroom: a repository per student, `<assignment>-<login>`."""
    items = _items(root)
    folders = [p for p in items if p.is_dir()]
    prefix = _classroom_prefix(root.name, [p.name for p in folders])
    logins = {p: p.name[len(prefix) :] for p in folders if p.name.startswith(prefix) and len(p.name) > len(prefix)}
    unattributed = [_shown(p) for p in items if p not in logins]
    ids = _unique_ids(list(logins.values()))
    entries = [Entry(ids[login], _hand_in(folder)) for folder, login in logins.items()]
    return Download("classroom", _sorted(entries), root, unattributed=unattributed)


def _gradescope(root: Path, staging: Path) -> Download:
    """Gradescope: the submissions' folders, by their submitters in submission_metadata.yml."""
    metadata = _metadata(root / GRADESCOPE_METADATA)
    taken: dict[str, tuple[datetime | None, Path, str]] = {}  # raw id -> when, folder, name
    unattributed = []
    for item in _items(root):
        if item.name == GRADESCOPE_METADATA:
            continue
        record = metadata.get(item.name)
        if not isinstance(record, dict) or not item.is_dir() or item.is_symlink():
            unattributed.append(_shown(item))
            continue
        when = _gradescope_time(_field(record, "created_at"))
        submitters = [s for s in _field(record, "submitters") or [] if isinstance(s, dict)] or [{}]
        for submitter in submitters:
            raw = next((str(v) for k in ("sid", "email") if (v := _field(submitter, k)) not in (None, "")), item.name)
            last = taken.get(raw)
            if last is None or (when and (last[0] is None or when > last[0])):  # two submissions: the later one
                taken[raw] = (when, item, str(_field(submitter, "name") or ""))
    ids = _unique_ids(list(taken))
    entries = [Entry(ids[raw], _hand_in(folder)) for raw, (_, folder, _) in taken.items()]
    names = {ids[raw]: clean(name, ID_CHARS) for raw, (_, _, name) in taken.items() if name}
    times = {ids[raw]: when for raw, (when, _, _) in taken.items() if when is not None}
    return Download("gradescope", _sorted(entries), root, names, times, unattributed=unattributed)


def _metadata(path: Path) -> dict[str, Any]:
    """submission_metadata.yml, read with PyYAML (loaded only here): folder -> its record."""
    try:
        import yaml
    except ImportError:
        raise UserError(f"reading {path.name} (a Gradescope export) needs PyYAML: pip install pyyaml") from None

    class Loader(yaml.SafeLoader):
        """Safe, and Ruby's tags (`!ruby/object:BigDecimal` for a score) read as the plain value they tag."""

    def untagged(loader: Loader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_scalar(node)

    Loader.add_multi_constructor("!", untagged)
    try:
        if not path.is_file() or path.is_symlink():
            raise UserError(f"{path}: a Gradescope export holds its submission_metadata.yml, here missing")
        if path.stat().st_size > MAX_METADATA_BYTES:
            raise UserError(f"{path} is larger than {MAX_METADATA_BYTES // 2**20} MB")
        loaded = yaml.load(path.read_text(encoding="utf-8", errors="replace"), Loader=Loader)  # a SafeLoader
    except (OSError, yaml.YAMLError) as failure:
        problem = clean(str(failure).splitlines()[0] if str(failure) else type(failure).__name__, 200)
        raise UserError(f"{path} cannot be read ({problem})") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{path} does not map the submissions' folders to their submitters")
    return {str(key).lstrip(":"): record for key, record in loaded.items()}


_RUBY_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d(?::\d\d)?)(\.\d+)?\s*(Z|[+-]\d\d:?\d\d)?$")


def _field(record: dict[str, Any], key: str) -> Any:
    """A record's `:key:` (Ruby's symbols, as Gradescope writes them), or `key:`."""
    return record.get(f":{key}", record.get(key))


def _gradescope_time(value: Any) -> datetime | None:
    """`:created_at:` as PyYAML reads it (a datetime) or as Ruby writes it (`2025-03-14 23:00:00.123456789 +0700`);
    None where it says none (then submissions.csv or the files say when)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)  # PyYAML gives UTC without a zone
    found = _RUBY_TIME.match(str(value).strip())
    if found is None:
        return None
    day, clock, fraction, zone = found.groups()
    zone = zone or ""
    if len(zone) == 5:  # +0700
        zone = zone[:3] + ":" + zone[3:]
    fraction = "." + fraction[1:7].ljust(6, "0") if fraction else ""  # Ruby's nanoseconds, as Python reads them
    try:
        return parse_time(f"{day}T{clock}{fraction}{zone}", GRADESCOPE_METADATA)
    except UserError:  # a day or an hour out of range
        return None


READERS = {
    "folders": _folders,
    "canvas": _canvas,
    "moodle": _moodle,
    "classroom": _classroom,
    "gradescope": _gradescope,
}


# --- ids, names and the students' folders ---------------------------------------------------------


def _unique_ids(raws: list[str]) -> dict[str, str]:
    """Each of the LMS's ids (an adversary's text) as a folder's name: cleaned as store.find_entries
    cleans a name, a slash or a leading dot replaced; where cleaning made two ids one, the changed
    one takes its digest."""
    ids = {raw: _path_safe(clean(raw, ID_CHARS)) for raw in raws}
    taken = Counter(ids.values())
    for raw in raws:
        if taken[ids[raw]] > 1 and ids[raw] != raw:
            ids[raw] += "~" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return ids


def _path_safe(name: str) -> str:
    name = name.replace("/", "_").replace("\\", "_").strip()
    return "_" + name if not name or name.startswith(".") else name


def _file_name(name: str) -> str:
    """A file's name from the LMS, as one file's name in a student's folder."""
    return _path_safe(clean(PurePosixPath(name.replace("\\", "/")).name or name, 255))


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _sorted(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: e.id)


def _hand_in(folder: Path) -> Path:
    """A student's folder, or the one zip or notebook it holds alone (read as such, as a batch reads one)."""
    if not folder.is_dir() or folder.is_symlink():
        return folder
    inside = [p for p in folder.iterdir() if not _ignored(p.name)]
    if len(inside) == 1 and _plain_file(inside[0]) and inside[0].suffix.lower() in (".zip", ".ipynb"):
        return inside[0]
    return folder


def _assemble(files: dict[str, Path], staging: Path, student: str) -> Path:
    """A student's files put together in their folder of `staging` (moved from the unpacked zip,
    else copied), their times kept, the folder's the newest of theirs: the hand-in's time, read
    from its files."""
    folder = staging / STUDENTS / student
    folder.mkdir(parents=True, exist_ok=True)
    total = sum(source.stat().st_size for source in files.values())
    if total > MAX_UNPACKED_BYTES:
        raise UserError(f"{folder.name}'s files are larger than {MAX_UNPACKED_BYTES // 2**30} GB")
    newest = 0.0
    for name, source in files.items():
        target = folder / name
        if source.is_relative_to(staging / UNPACKED):
            os.replace(source, target)
        else:
            shutil.copy2(source, target, follow_symlinks=False)
        newest = max(newest, target.stat().st_mtime)
    os.utime(folder, (newest, newest))
    return _hand_in(folder)
