"""`grade similarity`: hand-ins read as `grade batch` reads them, ranked by the code they share beyond the starter."""

from __future__ import annotations

import csv
import re
import shutil
import zipfile
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from grader.cli import main
from grader.notebook import build_notebook
from grader.similarity import HANDINS, PAIRS, REPORT
from tests.kit import spec_of

NAME = "assignment3"  # its starter notebook reads back as modules laid out unlike its .py files
HOSTILE = '# </pre><script>alert("alice")</script>\x07'  # in a comment: tokens unchanged
RENAMED = {"model": "network", "images": "xb", "labels": "yb", "criterion": "loss_fn", "opt": "optimiser"}


def renamed_copy(source: Path, folder: Path) -> Path:
    """The modules of `source` with their variables renamed, as a student hiding a copy would."""
    folder.mkdir()
    for module in source.glob("*.py"):
        text = module.read_text()
        for old, new in RENAMED.items():
            text = re.sub(rf"\b{old}\b", new, text)
        (folder / module.name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A class of hand-ins in every form, compared: the folder `grade similarity` wrote, and its exit code."""
    spec = spec_of(NAME)
    work = tmp_path_factory.mktemp("similarity")
    handins = work / "submissions"
    alice = shutil.copytree(spec.reference_dir, handins / "alice")
    with (alice / "training.py").open("a") as module:
        module.write(f"\n{HOSTILE}\n")
    copy = renamed_copy(spec.reference_dir, work / "copy")
    assert (copy / "training.py").read_text() != (spec.reference_dir / "training.py").read_text()
    nbformat.write(build_notebook(spec, copy), str(handins / "bob.ipynb"))  # compared by its rebuilt modules
    shutil.copytree(spec.starter_dir, handins / "carol")
    with zipfile.ZipFile(handins / "dave.zip", "w") as archive:
        for file in spec.files:
            archive.write(spec.starter_dir / file, f"dave/{file}")
    for student in ("erin", "gina"):
        nbformat.write(build_notebook(spec), str(handins / f"{student}.ipynb"))
    half = shutil.copytree(spec.starter_dir, handins / "frank")
    shutil.copy2(spec.reference_dir / "cnn.py", half / "cnn.py")
    (handins / "notes.txt").write_text("not a hand-in\n")
    out = work / "out"
    return out, main(["similarity", NAME, str(handins), "--out", str(out)])


def pairs(out: Path) -> list[tuple[str, str, float]]:
    with (out / PAIRS).open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["a", "b", "score"]
    return [(a, b, float(score)) for a, b, score in rows[1:]]


def test_every_pair_of_readable_hand_ins_is_scored_most_similar_first(compared, capsys):
    out, code = compared
    assert code == 0
    found = pairs(out)
    readable = ["alice", "bob", "carol", "dave", "erin", "frank", "gina"]
    assert sorted((a, b) for a, b, _ in found) == [(a, b) for i, a in enumerate(readable) for b in readable[i + 1 :]]
    scores = [score for _, _, score in found]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert sorted(p.name for p in (out / HANDINS).iterdir()) == readable  # notes.txt is none


def test_a_copy_with_renamed_variables_ranks_first(compared):
    out, _ = compared
    (first_a, first_b, first), (_, _, second), *_ = pairs(out)
    assert {first_a, first_b} == {"alice", "bob"}
    assert first > 0.9 and first > second


def test_untouched_starters_share_nothing_whatever_their_form(compared):
    out, _ = compared
    starters = {"carol", "dave", "erin", "gina"}  # a folder, a zip, two notebooks
    among = [score for a, b, score in pairs(out) if {a, b} <= starters]
    assert len(among) == 6 and max(among) < 0.1
    half = {frozenset((a, b)): score for a, b, score in pairs(out) if "frank" in (a, b)}
    assert half[frozenset(("alice", "frank"))] > 0.1  # the one module filled in, as the reference has it
    assert max(half[frozenset(("frank", other))] for other in starters) < 0.1


def test_the_html_report_shows_student_pairs_offline_with_the_shared_code_escaped(compared):
    out, _ = compared
    page = (out / REPORT).read_text()
    parser = PageParser()
    parser.feed(page)
    assert not re.search(r"https?:", page) and str(out.parent) not in page and "handins" not in page
    assert parser.tags["script"] == 0 and parser.tags["link"] == 0 and "Content-Security-Policy" in page
    assert "&lt;script&gt;alert(&#34;alice&#34;)&lt;/script&gt;\\x07" in page  # the comment, shown as text
    rows = [row for row in parser.rows if len(row) == 3]
    assert [(a, b, float(score)) for a, b, score in rows] == [(a, b, round(s, 2)) for a, b, s in pairs(out)]
    headings = [text for text in parser.headings if ":" in text]
    assert headings[0].startswith("alice · bob: 0.9") and len(headings) == len(parser.sections)
    first = page[page.index('<section id="pair-0">') : page.index("</section>")]
    assert first.count("<h3>training.py</h3>") == 2 and first.count("<mark>") > 2  # each side's shared code


class PageParser(HTMLParser):
    """What the page shows: its tags counted, its table's rows of cells, its headings, its sections."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.rows: list[list[str]] = []
        self.headings: list[str] = []
        self.sections: list[str] = []
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "h2"):
            self._text = []
        elif tag == "section":
            self.sections.append(dict(attrs)["id"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self.rows[-1].append("".join(self._text))
        elif tag == "h2":
            self.headings.append("".join(self._text))

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def test_mistakes_are_one_line_and_exit_code_2(tmp_path, capsys):
    spec = spec_of(NAME)
    (tmp_path / "one").mkdir()
    shutil.copytree(spec.starter_dir, tmp_path / "one" / "carol")
    (tmp_path / "one" / "notes.txt").write_text("")
    cases = [
        (["similarity", NAME, str(tmp_path / "missing")], "does not exist"),
        (["similarity", "assignment99", str(tmp_path / "one")], "unknown assignment 'assignment99'"),
        (["similarity", NAME, str(tmp_path / "one")], "holds 1 readable hand-in(s)"),
    ]
    for args, message in cases:
        assert main([*args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
