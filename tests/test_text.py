"""A hand-in's text, cleaned once where it enters the grader (grader.text): escape sequences and
control characters never reach a writer, and names stay told apart."""

from __future__ import annotations

import re

import pytest

from grader import codec
from grader.batch.store import find_entries
from grader.errors import SubmissionProblem
from grader.sandbox.api import SubmissionError
from grader.text import CUT, clean

HOSTILE = (
    "\x1b[31mred\x1b[0m \x1b]52;c;ZXZpbA==\x07 \x1b]0;title\x1b\\ \x1b[2J\x1b[H bell\x07 del\x7f"
    " csi\x9b2J c1\x85 nul\x00 tab\tcr\r\nend"
)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def test_clean_drops_csi_and_shows_every_other_control():
    one_line = clean(HOSTILE, 1000)
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", one_line)
    assert one_line.startswith("red ")  # colours and screen clears are formatting: gone
    assert "\\x1b]52;c;ZXZpbA==\\x07" in one_line  # the clipboard write is shown, harmless
    assert "\\x1b]0;title\\x1b\\" in one_line
    assert "[2J" not in one_line and " csi c1" in one_line  # CSI by ESC [ and by U+009B
    assert "bell\\x07 del\\x7f" in one_line and "c1\\x85 nul\\x00" in one_line
    assert "tab\\tcr\\r\\nend" in one_line  # a name or a reason is one line


def test_clean_keeps_lines_and_tabs_where_asked():
    kept = clean(HOSTILE, 1000, lines=True)
    assert not CONTROL.search(kept)
    assert kept.endswith("tab\tcr\nend")  # CR LF is one newline
    assert clean("10%\r20%\r30%", 100, lines=True) == "10%\n20%\n30%"  # a progress bar's lines


def test_clean_is_idempotent_and_leaves_plain_text_and_markup_alone():
    text = "ảnh [bold]x[/bold] <b>y</b> `z` =1+2"
    assert clean(text, 100) == text
    assert clean(clean(HOSTILE, 1000), 1000) == clean(HOSTILE, 1000)


def test_clean_caps_the_length_at_the_start_or_the_end():
    assert clean("a" * 50 + "z", 10) == "a" * 9 + CUT
    assert clean("a" + "z" * 50, 10, tail=True) == CUT + "z" * 9
    assert len(clean("\x07" * 100, 10)) == 10


def test_decode_passes_every_string_and_key_through_the_cleaner():
    message = codec.encode({"legend": ["\x1b[2Jtrain\x07", ("\x1b]0;x\x07",)], "k\x1b[1m": {3: "\x00"}})
    value = codec.decode(message, strings=lambda text: clean(text, 100, lines=True))
    assert value == {"legend": ["train\\x07", ("\\x1b]0;x\\x07",)], "k": {3: "\\x00"}}
    assert codec.decode(message)["legend"][0] == "\x1b[2Jtrain\x07"  # the sandbox's side is unchanged


def test_a_submission_error_is_cleaned_where_it_is_made():
    error = SubmissionError("ValueError (x.py line 3): \x1b]52;c;aGk=\x07boom", "a\x1b[31m\n" * 5, importing="x\x07.py")
    assert str(error) == error.reason == "ValueError (x.py line 3): \\x1b]52;c;aGk=\\x07boom"
    assert error.output == "a\n" * 5 and error.importing == "x\\x07.py"
    assert not CONTROL.search(error.brief)


def test_a_problem_with_a_hand_in_is_cleaned():
    assert str(SubmissionProblem("\x1b]0;x\x07.zip is not a readable zip file")).startswith("\\x1b]0;x\\x07.zip")


@pytest.mark.parametrize("name", ["=1+2", "@SUM(A1)", "\x1b[31mbob\x07", "a\tb"])
def test_an_entry_name_becomes_a_clean_id(tmp_path, name):
    (tmp_path / f"{name}.py").write_text("")
    (entry,) = find_entries(tmp_path)
    assert not CONTROL.search(entry.id) and "\t" not in entry.id
    assert entry.id == clean(name, 1000)  # `=1+2` stays itself: only writers of formulas escape it


def test_names_that_only_cleaning_made_equal_stay_apart(tmp_path):
    for name in ("bob.py", "bob\x1b[0m.py", "bob\x1b[1m.py", "ada.py", "ada.zip"):
        (tmp_path / name).write_text("")
    ids = [entry.id for entry in find_entries(tmp_path)]
    assert len(set(ids)) == 5 and {"bob", "ada.py", "ada.zip"} <= set(ids)  # the plain name keeps its id
    assert sum(i.startswith("bob~") for i in ids) == 2
