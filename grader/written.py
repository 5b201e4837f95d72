"""Written answers: read from a hand-in as plain text, on the grader's side (no student code runs).

A hand-in answers its assignment's written questions (spec.questions) in `answers.md`, a section per
question: a Markdown heading whose text is or begins with the question's id (`## epochs`,
`## epochs: 5 epochs or 10?`), the answer running to the next heading of the same or a higher level
(a heading inside a fenced code block is code, not a heading); or in a notebook, in Markdown cells
tagged with the id (several: joined). Both may be handed in; a question's texts are then joined.

Reading happens in two steps, so that a batch reads each hand-in once:
1. `keep_answers` (called by grader.submission.materialize) copies what a hand-in holds of answers
   beside its modules, as it is: `answers.md` (a plain file, never a link; bounded), and a notebook's
   tagged Markdown cells as `answers.json`. A batch's snapshot thus keeps them, a changed answer
   changes the snapshot's digest (graded again: the report has the new answer), and every later copy
   of the folder (a grading's, a Ray node's) carries them.
2. `read_answers` (grader.grading) finds the spec's questions in that folder. An answer is answered
   when it has a line beyond the starter's own for its question (the starter's answers.md section,
   its heading, its title, the placeholder): a student who left the template as it was has not.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import sys
import unicodedata
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from grader.i18n import _, ngettext
from grader.notebook import ANSWER_PLACEHOLDER, read_notebook
from grader.spec import Question, Spec
from grader.text import clean

ANSWERS_FILE = "answers.md"
CELLS_FILE = "answers.json"  # a notebook's tagged Markdown cells, kept by keep_answers
KEPT_CHARS = 1_000_000  # what is read of answers.md (bytes) and of a notebook's tagged cells (characters)
_KEPT_BYTES = {ANSWERS_FILE: KEPT_CHARS + 1, CELLS_FILE: 8 * KEPT_CHARS}  # copied of each: +1, to see it is longer
MAX_ANSWER_CHARS = 20_000  # of one answer, as the report keeps it
MAX_TAG_CHARS = 32  # a question's id is no longer (grader.spec)
PLACEHOLDERS = (ANSWER_PLACEHOLDER, "_Câu trả lời của bạn._")  # the starters' placeholder lines

_HEADING = re.compile(r" {0,3}(#{1,6})(?=[ \t]|$)")  # an ATX heading's opening: its text is found by hand
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


# --- 1. keeping what a hand-in holds of answers ---------------------------------------------------


def keep_answers(source: Path, dest: Path) -> None:
    """Copy the written answers of the hand-in `source` (a folder, a zip, a notebook) into `dest`,
    the folder of its modules. Nothing there, or nothing readable: nothing is kept (no answer)."""
    try:
        if source.is_dir():
            for name in (ANSWERS_FILE, CELLS_FILE):  # CELLS_FILE: a snapshot's, copied again
                found = _plain_file(source, name)
                if found is not None and not (dest / name).exists():
                    with found.open("rb") as file:
                        (dest / name).write_bytes(file.read(_KEPT_BYTES[name]))
        elif source.suffix.lower() == ".zip":
            with zipfile.ZipFile(source) as archive:
                data = _zip_member(archive, ANSWERS_FILE)
            if data is not None:
                (dest / ANSWERS_FILE).write_bytes(data)
        elif source.suffix.lower() == ".ipynb":
            cells = notebook_cells(source)
            if cells["cells"]:
                (dest / CELLS_FILE).write_text(json.dumps(cells, sort_keys=True))  # ASCII: a lone surrogate too
    except Exception:  # whatever a hostile zip member (zlib, CRC, encryption) or notebook raises: the modules
        pass  # were read, and answers that cannot be are unanswered ones


def _plain_file(folder: Path, name: str) -> Path | None:
    """`folder`'s file called `name` (in any case), if it is a plain file: a link could point anywhere."""
    for path in sorted(folder.iterdir()):
        if path.name.lower() == name and path.is_file() and not path.is_symlink():
            return path
    return None


def _zip_member(archive: zipfile.ZipFile, name: str) -> bytes | None:
    """The start of the shallowest member called `name` (in any case), as grader.submission reads a zip:
    by name, nothing extracted."""
    members = [
        m
        for m in archive.infolist()
        if PurePosixPath(m.filename).name.lower() == name and not m.is_dir() and "__MACOSX" not in m.filename
    ]
    if not members:
        return None
    with archive.open(min(members, key=lambda m: m.filename.count("/"))) as member:
        return member.read(_KEPT_BYTES[name])


def notebook_cells(path: Path) -> dict[str, Any]:
    """A notebook's Markdown cells that have tags: {"cells": [{cell (1-based), tags, text}], "cut"}, at most
    KEPT_CHARS of text in all (`cut`: some was left out)."""
    cells, left, cut = [], KEPT_CHARS, False
    for number, cell in enumerate(read_notebook(path).cells, start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "markdown":
            continue  # a notebook that fails validation is read as far as it can be
        metadata, text = cell.get("metadata"), cell.get("source")
        tags = metadata.get("tags") if isinstance(metadata, dict) else None
        text = "".join(text) if isinstance(text, list) and all(isinstance(t, str) for t in text) else text
        if not isinstance(tags, list) or not isinstance(text, str):
            continue
        tags = [tag for tag in tags if isinstance(tag, str) and len(tag) <= MAX_TAG_CHARS][:100]
        if tags:
            cut = cut or len(text) > left
            cells.append({"cell": number, "tags": tags, "text": text[:left]})
            left -= len(cells[-1]["text"])
    return {"cells": cells, "cut": cut}


# --- 2. reading the questions' answers -----------------------------------------------------------


def read_answers(folder: Path, spec: Spec) -> tuple[list[dict[str, Any]], list[str]]:
    """The answer to each of the spec's questions in `folder` (a materialized hand-in), as the report
    keeps them ([{question, title, answered, text, digest, source}]), and notes on what could not be read."""
    if not spec.questions:
        return [], []
    ids = [q.id for q in spec.questions]
    found: dict[str, list[tuple[str | int, str]]] = {qid: [] for qid in ids}  # question -> (file or cell, text)
    text, notes = _markdown(folder / ANSWERS_FILE)
    for qid, sections in markdown_sections(text, ids).items():
        found[qid] += [(ANSWERS_FILE, section) for section in sections]
    cells, cell_notes = _cells(folder / CELLS_FILE)
    notes += cell_notes
    for cell in cells:
        for qid in dict.fromkeys(tag for tag in cell["tags"] if tag in found):
            found[qid].append((cell["cell"], cell["text"]))
    template = markdown_sections(_markdown(spec.starter_dir / ANSWERS_FILE)[0], ids)
    answers = []
    for question in spec.questions:
        pieces = found[question.id]
        full = clean(normalize("\n\n".join(text for _where, text in pieces)), sys.maxsize, lines=True)
        if len(full) > MAX_ANSWER_CHARS:
            cut = _("the answer to {question} is longer than {limit} characters: only its start is kept")
            notes.append(cut.format(question=question.id, limit=MAX_ANSWER_CHARS))
        shown = clean(full, MAX_ANSWER_CHARS, lines=True)
        answers.append(
            {
                "question": question.id,
                "title": question.shown_title,
                "answered": _answered(shown, question, template.get(question.id, [])),
                "text": shown,
                "digest": answer_digest(shown),
                "source": _source([where for where, _text in pieces]),
            }
        )
    return answers, notes


def _markdown(path: Path) -> tuple[str, list[str]]:
    """The text of answers.md (as kept: at most KEPT_CHARS + 1 bytes), "" without one, and notes on
    what was wrong with it. UTF-8, or UTF-16 with its byte order mark (Windows Notepad's "Unicode")."""
    if not path.is_file():
        return "", []
    data, notes = path.read_bytes(), []
    if len(data) > KEPT_CHARS:
        notes.append(
            _("{name} is larger than {kb} kB: only its start is read").format(name=path.name, kb=KEPT_CHARS // 1000)
        )
        data = data[:KEPT_CHARS]
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace"), notes
    try:  # an incremental decoder: a character that the cut split is left out, not an error
        return codecs.getincrementaldecoder("utf-8-sig")().decode(data, final=len(data) < KEPT_CHARS), notes
    except UnicodeDecodeError:
        notes.append(_("{name} is not UTF-8 text: what cannot be read in it is shown as �").format(name=path.name))
        return data.decode("utf-8-sig", errors="replace"), notes


def _cells(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The tagged cells kept from a notebook ([{cell, tags, text}]), and notes: cells cut, a file that is
    not what keep_answers writes (a hand-in may hold a file of that name)."""
    if not path.is_file():
        return [], []
    try:
        kept = json.loads(path.read_bytes())
        cells = [
            {"cell": int(cell["cell"]), "tags": [str(t) for t in cell["tags"]], "text": str(cell["text"])}
            for cell in kept["cells"]
        ]
    except (ValueError, TypeError, KeyError, OverflowError):
        return [], [_("{name} cannot be read: its answers are left out").format(name=path.name)]
    cut = _("the notebook's answers are longer than {kb} kB in all: only their start is read")
    return cells, [cut.format(kb=KEPT_CHARS // 1000)] if kept.get("cut") is True else []


def markdown_sections(text: str, ids: list[str]) -> dict[str, list[str]]:
    """The sections of `text` by question id (a list: a question may have several headings): each is
    the text under an ATX heading (`## ...`) that names the question (`question_of`), up to the next
    heading of the same or a higher level, or the next that names a question. A line in fenced code
    (a `# comment` in a pasted snippet) is never a heading."""
    sections: dict[str, list[str]] = {}
    current: tuple[str, int, list[str]] | None = None  # (question, heading level, lines)
    fence = ""
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        heading = None if fence else _heading(line)
        if fence:
            fence = "" if _closes(line, fence) else fence
        elif opening := _FENCE.match(line):
            fence = opening[1]
        if heading:
            level, question = heading[0], question_of(heading[1], ids)
            if current is not None and (question or level <= current[1]):
                sections.setdefault(current[0], []).append("\n".join(current[2]))
                current = None
            if question:
                current = (question, level, [])
                continue
        if current is not None:
            current[2].append(line)
    if current is not None:
        sections.setdefault(current[0], []).append("\n".join(current[2]))
    return sections


def _heading(line: str) -> tuple[int, str] | None:
    """An ATX heading's level and text (`## q1: why ##` -> 2, "q1: why"), or None. By hand, not by one
    regular expression: one with a lazy text and an optional closing sequence takes quadratic time on a
    long line of spaces, and a hand-in is an adversary's."""
    opening = _HEADING.match(line)
    if not opening:
        return None
    text = line[opening.end() :].strip()
    unclosed = text.rstrip("#")
    if unclosed != text and (not unclosed or unclosed[-1] in " \t"):
        text = unclosed.rstrip()
    return len(opening[1]), text


def _closes(line: str, fence: str) -> bool:
    """Whether `line` closes the code block that `fence` opened: the same character, as many at least, nothing after."""
    closing = _FENCE.match(line)
    return (
        bool(closing)
        and closing[1][0] == fence[0]
        and len(closing[1]) >= len(fence)
        and not line[closing.end() :].strip()
    )


def question_of(heading: str, ids: list[str]) -> str | None:
    """The question a heading names: the longest id that its text (past any emphasis) is or begins with,
    followed by no letter or digit (`q1` is not `q10`'s heading), in any case."""
    text = heading.lstrip("*_` ").lower()
    named = [qid for qid in ids if text.startswith(qid.lower()) and not _word(text[len(qid) : len(qid) + 1])]
    return max(named, key=len, default=None)


def _word(character: str) -> bool:
    return character.isalnum() or character == "_"


def _answered(text: str, question: Question, template: list[str]) -> bool:
    """Whether `text` has a line that is not the starter's for `question`: its section in the starter's
    answers.md, a heading that names it, its title, a placeholder (compared without emphasis or case)."""
    known = {_bare(line) for section in template for line in section.split("\n")}
    known |= {_bare(line) for line in (question.title, question.title_vi, *PLACEHOLDERS)}
    for line in text.split("\n"):
        heading = _heading(line)
        if _bare(line) and _bare(line) not in known and not (heading and question_of(heading[1], [question.id])):
            return True
    return False


def _bare(line: str) -> str:
    return line.strip().strip("*_ ").casefold()


def _source(places: list[str | int]) -> str:
    """Where an answer was found (files, and notebook cells by number): "answers.md", "cell 12",
    "answers.md, cells 12, 14"; "" for nowhere."""
    files = [str(p) for p in dict.fromkeys(places) if isinstance(p, str)]
    cells = [str(p) for p in places if isinstance(p, int)]
    if cells:
        files.append(ngettext("cell {cells}", "cells {cells}", len(cells)).format(cells=", ".join(cells)))
    return ", ".join(files)


def normalize(text: str) -> str:
    """An answer as it is compared: Unicode NFC (macOS writes Vietnamese decomposed), newlines as \\n,
    no trailing spaces, no blank lines around it."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def answer_digest(text: str) -> str:
    """The SHA-256 of an answer's normalized text: what a mark records (grader.manual), so that an answer
    changed since it was marked is marked for review again, and one only re-saved is not."""
    return hashlib.sha256(normalize(text).encode()).hexdigest()
