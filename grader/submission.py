"""Turn what a student hands in (a folder, a `.py`, a zip, a notebook) into a folder of modules."""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

from grader.errors import SubmissionProblem
from grader.i18n import _, place_word
from grader.notebook import cell_places, module_notes, notebook_modules, starter_names, top_level_names
from grader.written import keep_answers

MAX_FILE_BYTES = 2 * 1024 * 1024
SINGLE_MODULE = "submission.py"


@dataclass(frozen=True)
class Materialized:
    """A clean copy of a submission: `modules` maps each assignment module to its file in `folder`."""

    folder: Path
    modules: dict[str, str]
    kind: str
    missing: tuple[str, ...] = ()

    def source(self, file: str) -> str | None:
        """The text of the submission's version of an assignment file, or None if it has none."""
        name = self.modules.get(Path(file).stem)
        return None if name is None else self._text(name)

    def _text(self, name: str) -> str:
        return (self.folder / name).read_bytes().decode("utf-8", errors="replace")

    @cached_property
    def _places(self) -> dict[str, dict[int, tuple[int, int]]]:
        """For each module rebuilt from a notebook, by its file here: line -> (cell, line in the cell)."""
        return {name: places for name in set(self.modules.values()) if (places := cell_places(self._text(name)))}

    def where(self, file: str, line: int) -> str:
        """Where line `line` of `file` (the assignment's name for it, or its name here) is for its
        author, when that is not the file's line: "cell 14, line 3"; else ""."""
        name = file if file in self._places else self.modules.get(Path(file).stem, "")
        place = self._places.get(name, {}).get(line)
        return _("cell {cell}, line {line}").format(cell=place[0], line=place[1]) if place else ""

    def localize(self, text: str) -> str:
        """`text` with each "lenet.py line 22" of a module rebuilt from a notebook said as "cell 14, line 3"."""
        words = "|".join(map(re.escape, {"line", place_word()}))  # Python's own, and the grader's
        for name in self._places:
            pattern = re.compile(rf"\b{re.escape(name)},? (?:{words}) (\d+)")
            text = pattern.sub(lambda m, name=name: self.where(name, int(m[1])) or m[0], text)
        return text

    @property
    def notes(self) -> list[str]:
        """What the grader noted reading the submission (files missing; in a notebook, cells skipped and
        names defined twice), each once."""
        names = dict.fromkeys(self.modules.values())
        notes = [_("{file} is missing from the submission").format(file=file) for file in self.missing]
        return list(dict.fromkeys(notes + [note for name in names for note in module_notes(self._text(name))]))


def materialize(path: Path, files: tuple[str, ...], dest: Path, starter_dir: Path | None = None) -> Materialized:
    """Copy the assignment's files out of `path` into the empty folder `dest`.

    A notebook is split into the assignment's modules by the names each starter module defines:
    it needs `starter_dir`. The hand-in's written answers come along, beside the modules, as they
    are (grader.written.keep_answers): a batch's snapshot keeps them, and its digest with them.
    """
    copy = _modules(path, files, dest, starter_dir)
    keep_answers(path, dest)
    return copy


def _modules(path: Path, files: tuple[str, ...], dest: Path, starter_dir: Path | None) -> Materialized:
    if not path.exists():
        raise SubmissionProblem(_("submission not found: {path}").format(path=path))
    dest.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        return _from_folder(path, files, dest, starter_dir)
    suffix = path.suffix.lower()
    if suffix == ".py":
        return _single_module(_read_limited(path), files, dest, starter_dir)
    if suffix == ".zip":
        return _from_zip(path, files, dest, starter_dir)
    if suffix == ".ipynb":  # one module per assignment file, each with what its starter's names need
        if starter_dir is None:
            raise SubmissionProblem(
                _("{name}: a notebook can only be graded for a given assignment").format(name=path.name)
            )
        modules = notebook_modules(path, starter_names(starter_dir, files))
        return _collect({file: text.encode() for file, text in modules.items()}, files, dest, "notebook")
    problem = _("cannot grade {name}: hand in a folder, a .py file, a .zip or a .ipynb notebook")
    raise SubmissionProblem(problem.format(name=path.name))


def folder_digest(folder: Path) -> str:
    """The SHA-256 of a materialized submission's modules, names and bytes: the same for the same
    hand-in, whether it came as a folder, a zip or again (a batch's snapshot, a grading's seed)."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(f"\0{path.name}\0".encode() + path.read_bytes())
    return digest.hexdigest()


def _read_limited(path: Path) -> bytes:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise SubmissionProblem(_("{name} is larger than {mb} MB").format(name=path.name, mb=MAX_FILE_BYTES // 2**20))
    return path.read_bytes()


def _single_module(data: bytes, files: tuple[str, ...], dest: Path, starter_dir: Path | None) -> Materialized:
    """One .py for the assignment: it stands for each module whose starter names it defines (for
    all of them when it defines none, or does not parse: its tests then say why)."""
    (dest / SINGLE_MODULE).write_bytes(data)
    stands_for = files
    if starter_dir is not None and len(files) > 1:
        try:
            defined = set(top_level_names(data.decode("utf-8", errors="replace")))
        except (SyntaxError, ValueError):  # ValueError: a null byte
            defined = set()
        named = tuple(file for file, names in starter_names(starter_dir, files).items() if defined & set(names))
        stands_for = named or files
    missing = tuple(f for f in files if f not in stands_for)
    return Materialized(dest, {Path(f).stem: SINGLE_MODULE for f in stands_for}, "file", missing)


def _collect(found: dict[str, bytes], files: tuple[str, ...], dest: Path, kind: str) -> Materialized:
    if not found:
        wanted = ", ".join(files)
        raise SubmissionProblem(_("the submission has none of the assignment's files ({wanted})").format(wanted=wanted))
    for name, data in found.items():
        (dest / name).write_bytes(data)
    missing = tuple(f for f in files if f not in found)
    return Materialized(dest, {Path(f).stem: f for f in files if f in found}, kind, missing)


def _from_folder(folder: Path, files: tuple[str, ...], dest: Path, starter_dir: Path | None) -> Materialized:
    found = {}
    for name in files:
        candidate = folder / name
        # A link could point anywhere on the grading machine: only plain files count.
        if candidate.is_file() and not candidate.is_symlink():
            found[name] = _read_limited(candidate)
    if not found:
        singles = [p for p in folder.iterdir() if p.suffix in (".py", ".ipynb") and p.is_file()]
        if len(singles) == 1:
            return materialize(singles[0], files, dest, starter_dir)
    return _collect(found, files, dest, "folder")


def _from_zip(path: Path, files: tuple[str, ...], dest: Path, starter_dir: Path | None) -> Materialized:
    """Read only the members we need, by name; nothing is extracted, so no path can escape."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise SubmissionProblem(_("{name} is not a readable zip file").format(name=path.name)) from None
    with archive:
        members = [
            m
            for m in archive.infolist()
            if not m.is_dir()
            and ".." not in PurePosixPath(m.filename).parts
            and not m.filename.startswith("/")
            and "__MACOSX" not in m.filename
        ]
        found: dict[str, bytes] = {}
        # The shallowest copy of each file wins (a zip often wraps everything in one folder).
        for member in sorted(members, key=lambda m: m.filename.count("/")):
            name = PurePosixPath(member.filename).name
            if name in files and name not in found:
                if member.file_size > MAX_FILE_BYTES:
                    too_large = _("{member} in {name} is too large")
                    raise SubmissionProblem(too_large.format(member=member.filename, name=path.name))
                found[name] = archive.read(member)
        if not found:
            singles = [m for m in members if m.filename.endswith((".py", ".ipynb"))]
            if len(singles) == 1:
                inner = dest.parent / f".{dest.name}-{PurePosixPath(singles[0].filename).name}"
                inner.write_bytes(archive.read(singles[0]))
                try:
                    return materialize(inner, files, dest, starter_dir)
                finally:
                    inner.unlink()
    return _collect(found, files, dest, "zip")
