"""Written answers read from a hand-in (grader.written): answers.md sections, notebook cells tagged with a
question's id, the starter's template as unanswered, bounds, hostile text, and digests."""

from __future__ import annotations

import json
import os
import time
import unicodedata
import zipfile
from pathlib import Path

import nbformat
import pytest

from grader import i18n
from grader.notebook import build_notebook
from grader.spec import Spec, load_spec
from grader.submission import folder_digest, materialize
from grader.written import (
    CELLS_FILE,
    KEPT_CHARS,
    MAX_ANSWER_CHARS,
    answer_digest,
    markdown_sections,
    question_of,
    read_answers,
)
from tests.kit import spec_of

SPEC_TOML = """title = "Toy"
files = ["toy.py"]
[profiles.quick]
device = "cpu"
[profiles.full]
device = "cpu"

[[questions]]
id = "q1"
points = 4
title = "How accuracy changes"
title_vi = "Độ chính xác thay đổi thế nào"

[[questions]]
id = "q10"
points = 2
title = "Ten epochs"
"""
STARTER = """# toy: written answers

Answer under each heading.

## q1: How accuracy changes

Give the numbers of your own runs.

_Your answer here._

## q10: Ten epochs

_Your answer here._
"""
MODULE = "def f():\n    return 1\n"


@pytest.fixture
def toy(tmp_path: Path) -> Spec:
    """An assignment of one module and two written questions, q1 and q10, in a kit of its own."""
    (tmp_path / "assignments" / "toy").mkdir(parents=True)
    (tmp_path / "assignments" / "toy" / "spec.toml").write_text(SPEC_TOML)
    starter = tmp_path / "starter" / "toy"
    starter.mkdir(parents=True)
    (starter / "toy.py").write_text(MODULE)
    (starter / "answers.md").write_text(STARTER)
    return load_spec("toy", tmp_path)


def hand_in(folder: Path, answers: str | bytes | None) -> Path:
    """A folder hand-in of the toy's module and, unless None, this answers.md."""
    folder.mkdir(parents=True)
    (folder / "toy.py").write_text(MODULE)
    if answers is not None:
        (folder / "answers.md").write_bytes(answers.encode() if isinstance(answers, str) else answers)
    return folder


def read(spec: Spec, path: Path, scratch: Path) -> tuple[dict[str, dict], list[str]]:
    """The answers of the hand-in `path`, by question, read as a grading reads them: from its materialized copy."""
    copy = materialize(path, spec.files, scratch, spec.starter_dir)
    answers, notes = read_answers(copy.folder, spec)
    return {a["question"]: a for a in answers}, notes


def notebook(path: Path, *cells: tuple[str, str, list[str]]) -> Path:
    """A notebook defining the toy's module, then cells (kind, text, tags)."""
    book = nbformat.v4.new_notebook()
    book.cells.append(nbformat.v4.new_code_cell(MODULE))
    for kind, text, tags in cells:
        maker = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        book.cells.append(maker(text, metadata={"tags": tags} if tags else {}))
    nbformat.write(book, str(path))
    return path


def test_a_section_runs_to_the_next_heading_of_its_level_or_higher_and_code_is_never_a_heading():
    text = "\n".join(
        [
            "# Answers",
            "intro, no question's",
            "## q1: how accuracy changes",
            "It rose.",
            "### details",  # deeper: still q1's
            "```python",
            "# a comment, not a heading",
            "## q10",  # in a fence: code
            "```",
            "## Notes",  # as high: q1 ends here
            "not an answer",
            "## **Q10** ##",  # emphasis, any case, a closing sequence
            "Ten.",
            "# Appendix",
            "## q1",  # a second section of q1: kept as well
            "More.",
        ]
    )
    sections = markdown_sections(text, ["q1", "q10"])
    assert sections == {
        "q1": ["It rose.\n### details\n```python\n# a comment, not a heading\n## q10\n```", "More."],
        "q10": ["Ten."],
    }


def test_a_long_line_of_spaces_after_a_hash_takes_no_time():
    """A heading's text is found in linear time: a regular expression with a lazy text and an optional
    closing sequence would take minutes on this line."""
    start = time.monotonic()
    assert markdown_sections("## q1\n### a" + " " * 300_000 + "b\nc", ["q1"])["q1"][0].endswith("b\nc")
    assert time.monotonic() - start < 2


@pytest.mark.parametrize(
    ("heading", "question"),
    [
        ("q1", "q1"),
        ("q1: how accuracy changes", "q1"),
        ("Q1. Accuracy", "q1"),
        ("q10", "q10"),  # not q1's
        ("q1.b", "q1.b"),  # the longest id it begins with
        ("q1_extra", None),
        ("question 1", None),
        ("", None),
    ],
)
def test_a_heading_names_the_longest_id_it_begins_with_as_a_whole_word(heading, question):
    assert question_of(heading, ["q1", "q10", "q1.b"]) == question


def test_a_folder_hand_in_is_answered_where_it_has_more_than_the_starter(toy, tmp_path):
    kept = STARTER.replace(
        "Give the numbers of your own runs.\n\n_Your answer here._",
        "Give the numbers of your own runs.\n\n_Your answer here._\n\nAfter 5 epochs 97.1%, after 10 98.0%.",
    )
    answers, notes = read(toy, hand_in(tmp_path / "ada", kept), tmp_path / "copy")
    assert notes == []
    assert answers["q1"]["answered"] and "After 5 epochs 97.1%, after 10 98.0%." in answers["q1"]["text"]
    assert answers["q1"]["source"] == "answers.md" and answers["q1"]["title"] == "How accuracy changes"
    assert not answers["q10"]["answered"] and answers["q10"]["text"] == "_Your answer here._"
    with i18n.using("vi"):
        assert read(toy, tmp_path / "ada", tmp_path / "vi")[0]["q1"]["title"] == "Độ chính xác thay đổi thế nào"


def test_the_starter_as_handed_out_is_unanswered_in_every_form(toy, tmp_path):
    starter, notes = read(toy, toy.starter_dir, tmp_path / "starter")
    emptied, _ = read(toy, hand_in(tmp_path / "bob", STARTER.replace("_Your answer here._", "")), tmp_path / "bob-copy")
    emphasis, _ = read(  # the same lines with other emphasis, other case: still the template
        toy,
        hand_in(tmp_path / "cy", STARTER.replace("_Your answer here._", "*your answer here.*")),
        tmp_path / "cy-copy",
    )
    missing, _ = read(toy, hand_in(tmp_path / "dee", None), tmp_path / "dee-copy")
    for answers in (starter, emptied, emphasis, missing):
        assert [a["answered"] for a in answers.values()] == [False, False]
    assert missing["q1"] == {
        "question": "q1",
        "title": "How accuracy changes",
        "answered": False,
        "text": "",
        "digest": answer_digest(""),
        "source": "",
    }
    assert notes == [] and not (tmp_path / "dee-copy" / "answers.md").exists()


def test_the_real_starters_answers_and_notebook_are_unanswered(tmp_path):
    """assignment3's answers.md and the notebook `grade release` writes: headings, titles and placeholders."""
    spec = spec_of("assignment3")
    assert spec.questions
    nbformat.write(build_notebook(spec), str(tmp_path / "a3.ipynb"))
    for path, scratch in ((spec.starter_dir, "folder"), (tmp_path / "a3.ipynb", "notebook")):
        answers, notes = read(spec, path, tmp_path / scratch)
        assert [a["answered"] for a in answers.values()] == [False] * len(spec.questions) and notes == [], scratch
    cells = json.loads((tmp_path / "notebook" / CELLS_FILE).read_text())["cells"]
    assert {tag for cell in cells for tag in cell["tags"]} == {q.id for q in spec.questions}


def test_notebook_cells_tagged_with_a_question_are_its_answer_joined(toy, tmp_path):
    path = notebook(
        tmp_path / "ada.ipynb",
        ("markdown", "## q1: How accuracy changes\n\n*Độ chính xác thay đổi thế nào*\n\n_Your answer here._", ["q1"]),
        ("markdown", "It rose from 97.1% to 98.0%.", ["q1", "other"]),
        ("markdown", "Untagged: no one's answer.", []),
        ("code", "print('tagged code is not an answer')", ["q10"]),
        ("markdown", "## q10: Ten epochs\n\n_Câu trả lời của bạn._", ["q10"]),
    )
    answers, notes = read(toy, path, tmp_path / "copy")
    assert notes == []
    assert answers["q1"]["answered"] and answers["q1"]["source"] == "cells 2, 3"
    assert answers["q1"]["text"].endswith("_Your answer here._\n\nIt rose from 97.1% to 98.0%.")
    assert not answers["q10"]["answered"] and answers["q10"]["source"] == "cell 6"


def test_a_notebook_in_a_folder_or_a_zip_and_answers_md_beside_it_are_both_read(toy, tmp_path):
    folder = tmp_path / "ada"
    folder.mkdir()
    notebook(folder / "work.ipynb", ("markdown", "From the notebook.", ["q1"]))
    (folder / "answers.md").write_text("## q1\nFrom answers.md.\n## q10\nTen.\n")
    answers, _ = read(toy, folder, tmp_path / "copy")
    assert answers["q1"]["text"] == "From answers.md.\n\nFrom the notebook."
    assert answers["q1"]["source"] == "answers.md, cell 2" and answers["q10"]["answered"]
    with zipfile.ZipFile(tmp_path / "ada.zip", "w") as archive:  # wrapped in a folder, as zips often are
        for path in folder.iterdir():
            archive.write(path, f"ada/{path.name}")
    zipped, _ = read(toy, tmp_path / "ada.zip", tmp_path / "zip-copy")
    assert zipped == answers
    for name in ("answers.md", CELLS_FILE):  # kept the same, either way
        assert (tmp_path / "zip-copy" / name).read_bytes() == (tmp_path / "copy" / name).read_bytes()


def test_the_answers_are_part_of_the_hand_ins_digest_and_a_snapshot_keeps_them(toy, tmp_path):
    """A changed answer is a changed hand-in (a batch grades it again: its report has the new answer); a
    snapshot, materialized again (a grading's copy, a Ray node's), reads the same answers."""
    first = read(toy, hand_in(tmp_path / "v1", "## q1\nIt rose.\n"), tmp_path / "c1")[0]
    second = read(toy, hand_in(tmp_path / "v2", "## q1\nIt fell.\n"), tmp_path / "c2")[0]
    none = hand_in(tmp_path / "v3", None)
    materialize(none, toy.files, tmp_path / "c3", toy.starter_dir)
    assert folder_digest(tmp_path / "c1") != folder_digest(tmp_path / "c2") != folder_digest(tmp_path / "c3")
    assert [p.name for p in (tmp_path / "c3").iterdir()] == ["toy.py"]  # no answers: the modules alone, as before
    assert first["q1"]["digest"] != second["q1"]["digest"]
    notebook(tmp_path / "nb.ipynb", ("markdown", "From a notebook.", ["q1"]))
    snapshot = tmp_path / "snapshot"
    materialize(tmp_path / "nb.ipynb", toy.files, snapshot, toy.starter_dir)
    again = read(toy, snapshot, tmp_path / "again")[0]
    assert again["q1"]["text"] == "From a notebook." and again["q1"]["source"] == "cell 2"
    assert folder_digest(tmp_path / "again") == folder_digest(snapshot)


def test_a_digest_is_stable_across_newlines_spaces_and_unicode_forms_and_changes_with_the_words():
    text = "Độ chính xác tăng.\nThen it flattens."
    same = [
        text.replace("\n", "\r\n"),
        "\n\n" + text.replace("\n", "   \n") + "\n\n",
        unicodedata.normalize("NFD", text),  # as macOS writes Vietnamese
    ]
    assert {answer_digest(variant) for variant in same} == {answer_digest(text)}
    assert answer_digest(text.replace("tăng", "giảm")) != answer_digest(text)
    assert answer_digest(text) == answer_digest(text)  # and the same across runs: SHA-256 of the text, no salt
    assert len(answer_digest(text)) == 64


def test_hostile_text_is_cleaned_and_long_text_is_cut_and_said(toy, tmp_path):
    hostile = "## q1\n\x1b[2J\x1b]0;pwned\x07 <script>alert(1)</script>\x00 =SUM(A1)\n## q10\n" + "x" * 30_000 + "\n"
    answers, notes = read(toy, hand_in(tmp_path / "eve", hostile), tmp_path / "copy")
    q1 = answers["q1"]["text"]
    assert "\x1b" not in q1 and "\x07" not in q1 and "\x00" not in q1 and "\\x1b]0;pwned\\x07" in q1
    assert "<script>" in q1  # kept as text: every writer escapes it
    assert len(answers["q10"]["text"]) == MAX_ANSWER_CHARS and answers["q10"]["text"].endswith("…")
    assert notes == ["the answer to q10 is longer than 20000 characters: only its start is kept"]


def test_an_unreadable_answers_file_is_a_note_never_a_crash(toy, tmp_path):
    latin = read(toy, hand_in(tmp_path / "a", "## q1\nh\xe9llo\n".encode("latin-1")), tmp_path / "ca")
    assert latin[0]["q1"]["text"] == "h\ufffdllo" and latin[1] == [
        "answers.md is not UTF-8 text: what cannot be read in it is shown as �"
    ]
    notepad = "## q1\nĐộ chính xác\n".encode("utf-16")  # Windows Notepad's "Unicode", with its byte order mark
    assert read(toy, hand_in(tmp_path / "b", notepad), tmp_path / "cb")[0]["q1"]["text"] == "Độ chính xác"
    huge = "## q1\n" + "é" * KEPT_CHARS  # cut inside a character: the character is left out, not an error
    answers, notes = read(toy, hand_in(tmp_path / "c", huge), tmp_path / "cc")
    assert (
        notes[0] == "answers.md is larger than 1000 kB: only its start is read"
        and "\ufffd" not in answers["q1"]["text"]
    )

    forged = hand_in(tmp_path / "d", None)
    (forged / CELLS_FILE).write_text('{"cells": [{"cell": "x"}]}')
    assert read(toy, forged, tmp_path / "cd")[1] == ["answers.json cannot be read: its answers are left out"]

    with zipfile.ZipFile(tmp_path / "f.zip", "w") as archive:  # a member whose bytes fail its CRC
        archive.writestr("toy.py", MODULE)
        archive.writestr("answers.md", "## q1\nIt rose.\n")
    (tmp_path / "f.zip").write_bytes((tmp_path / "f.zip").read_bytes().replace(b"It rose.", b"It fell."))
    assert read(toy, tmp_path / "f.zip", tmp_path / "cf")[0]["q1"]["text"] == ""  # the modules are still read

    linked = hand_in(tmp_path / "e", None)
    (tmp_path / "secret.md").write_text("## q1\nsomeone else's\n")
    os.symlink(tmp_path / "secret.md", linked / "answers.md")  # a link could point anywhere: never followed
    assert not read(toy, linked, tmp_path / "ce")[0]["q1"]["answered"]

    odd = tmp_path / "odd.ipynb"  # a notebook with odd metadata: its cells are skipped, the rest is read
    notebook(odd, ("markdown", "A.", ["q1"]), ("markdown", "B.", ["q1"]))
    doc = json.loads(odd.read_text())
    doc["cells"][1]["metadata"]["tags"] = [["q1"], 7, "x" * 100]
    doc["cells"][2]["metadata"]["tags"] = "q1"
    odd.write_text(json.dumps(doc))
    answers, notes = read(toy, odd, tmp_path / "codd")
    assert not answers["q1"]["answered"] and notes == []


def test_an_assignment_without_questions_reads_nothing(tmp_path):
    spec = spec_of("assignment2")
    assert not spec.questions
    folder = tmp_path / "ada"
    folder.mkdir()
    for file in spec.files:
        (folder / file).write_text((spec.reference_dir / file).read_text())
    (folder / "answers.md").write_text("## q1\nan answer to nothing\n")
    copy = materialize(folder, spec.files, tmp_path / "copy", spec.starter_dir)
    assert read_answers(copy.folder, spec) == ([], [])
