"""`grade similarity <assignment> <submissions> --out DIR`: which hand-ins share code beyond the starter.

Offline, with copydetect's winnowing (the fingerprinting of MOSS): code is tokenized first, so
renamed variables, moved comments and new blank lines change nothing. Each hand-in is read as
`grade batch` reads it (a folder, a `.py`, a `.zip` or a notebook, the notebook by the modules rebuilt
from its cells), and every fingerprint of the starter's modules (as `.py` files and as the rebuilt
starter notebook) is boilerplate: the lines students were given never match.

    DIR/pairs.csv    a,b,score for every pair of hand-ins, the most similar first
    DIR/report.html  every pair of students and its score; the most similar side by side, the code
                     they share highlighted (copydetect's matches); one page that loads nothing
    DIR/handins/     the modules that were compared, one folder per hand-in
    DIR/.download/   a zip unpacked, an LMS's flat files put together per student (--layout)

A pair's score is JPlag's "average similarity": the tokens of each hand-in's own code (what is not
the starter's) that the other has too, over the own code of both: 0 shares nothing, 1 is the same
code up to names. Hand-ins that only filled the blanks converge on the same few tokens: read the
score of a fill-in-the-blank assignment against its class's distribution, not as a verdict.
"""

from __future__ import annotations

import csv
import html
import itertools
import shutil
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from grader.batch.layouts import read_hand_ins
from grader.batch.store import take_snapshot
from grader.errors import UserError, make_folder
from grader.notebook import write_notebook
from grader.render import spreadsheet_cell
from grader.render_html import _headers, _page
from grader.spec import Spec
from grader.submission import materialize
from grader.text import clean

if TYPE_CHECKING:
    from copydetect.detector import CodeFingerprint

HANDINS = "handins"
PAIRS = "pairs.csv"
REPORT = "report.html"
DOWNLOAD = ".download"  # in DIR: what an LMS's download unpacked or put together


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    score: float


@dataclass(frozen=True)
class Similarity:
    """What `grade similarity` found: the pairs, most similar first, and the hand-ins it could not read."""

    pairs: list[Pair]
    skipped: dict[str, str]  # hand-in -> why it could not be read
    compared: int
    said: list[str] = field(default_factory=list)  # what reading the download said: its layout, files left aside


def similarity(spec: Spec, submissions: Path, out: Path, layout: str = "auto") -> Similarity:
    """Compare every two hand-ins in `submissions` (read as `layout`, as `grade batch` reads them: a
    folder of hand-ins, or an LMS's download); write DIR/pairs.csv, DIR/report.html and DIR/handins/."""
    try:
        from copydetect import CopyDetector
    except ImportError:
        raise UserError("grade similarity needs copydetect: pip install '.[similarity]'") from None

    make_folder(out, f"--out {out}")
    download = read_hand_ins(submissions, layout, out / DOWNLOAD)
    handins = out / HANDINS
    shutil.rmtree(handins, ignore_errors=True)  # what an earlier run read: not these hand-ins
    read, skipped, seen = [], {}, set()
    for entry in download.entries:
        if entry.path in seen:  # a group's hand-in, once (Gradescope gives each member the group's)
            continue
        seen.add(entry.path)
        snapshot = take_snapshot(entry, spec, handins / entry.id)
        if snapshot.folder is None:
            skipped[entry.id] = snapshot.problem
            shutil.rmtree(handins / entry.id, ignore_errors=True)
        else:
            read.append(entry.id)
    if len(read) < 2:
        unread = f" ({len(skipped)} more cannot be read)" if skipped else ""
        raise UserError(
            f"{submissions} holds {len(read)} readable hand-in(s) of {spec.name}{unread}: two are needed to compare"
        )
    with tempfile.TemporaryDirectory(prefix="grader-boilerplate-") as scratch:
        detector = CopyDetector(
            test_dirs=[str(handins)],
            extensions=["py"],
            ignore_leaf=True,  # a hand-in's modules are not compared with each other
            autoopen=False,
            silent=True,
        )
        for path in _boilerplate(spec, Path(scratch)):
            detector.add_file(str(path), type="boilerplate")
        detector.run()
    documents = _documents(read, handins, detector.file_data)
    pairs = _pairs(documents, detector.conf.noise_t)
    with (out / PAIRS).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "score"])
        writer.writerows((spreadsheet_cell(pair.a), spreadsheet_cell(pair.b), f"{pair.score:.4f}") for pair in pairs)
    shown = detector.conf.display_t
    (out / REPORT).write_text(_report(spec.name, pairs, documents, detector.conf.noise_t, shown, skipped))
    return Similarity(pairs, skipped, len(read), download.lines())


def _boilerplate(spec: Spec, scratch: Path) -> list[Path]:
    """The starter's modules, as handed out and as a notebook of them reads back."""
    notebook = write_notebook(spec, scratch / f"{spec.name}.ipynb")
    rebuilt = materialize(notebook, spec.files, scratch / "notebook", spec.starter_dir)
    return [spec.starter_dir / file for file in spec.files] + sorted(rebuilt.folder.glob("*.py"))


def _documents(ids: list[str], handins: Path, fingerprints: dict) -> dict[str, dict[str, CodeFingerprint]]:
    """Each hand-in (`ids`, folders of `handins`) as one document: its modules' fingerprints by their
    path inside the hand-in."""
    documents: dict[str, dict[str, CodeFingerprint]] = {id_: {} for id_ in ids}
    for path, fingerprint in sorted(fingerprints.items()):
        module = Path(path).relative_to(handins)
        documents[module.parts[0]][Path(*module.parts[1:]).as_posix()] = fingerprint
    return documents


def _shared(mine: CodeFingerprint, others: Iterable[CodeFingerprint], k: int) -> np.ndarray:
    """The tokens of module `mine` that any of `others` has too, as copydetect's slices (starts, ends):
    each match covers the k tokens from its start, and overlapping matches are counted once."""
    from copydetect.utils import find_fingerprint_overlap, get_copied_slices

    starts = [find_fingerprint_overlap(mine.hashes, other.hashes, mine.hash_idx, other.hash_idx)[0] for other in others]
    return get_copied_slices(np.concatenate([np.empty(0, dtype=int), *starts]), k)


def _pairs(documents: dict[str, dict[str, CodeFingerprint]], k: int) -> list[Pair]:
    """Every two hand-ins, most similar first: each module's tokens counted once however many of the
    other's modules share them."""

    def shared(mine: dict[str, CodeFingerprint], others: dict[str, CodeFingerprint]) -> tuple[int, float]:
        """How many tokens of `mine` the `others` have too, and how many `mine` has of its own."""
        count = sum(int(np.sum(np.diff(_shared(module, others.values(), k), axis=0))) for module in mine.values())
        return count, sum(float(module.token_coverage) for module in mine.values())

    pairs = []
    for a, b in itertools.combinations(sorted(documents), 2):
        shared_a, own_a = shared(documents[a], documents[b])
        shared_b, own_b = shared(documents[b], documents[a])
        own = own_a + own_b
        pairs.append(Pair(a, b, (shared_a + shared_b) / own if own else 0.0))
    return sorted(pairs, key=lambda pair: (-pair.score, pair.a, pair.b))


_STYLE = """
td.points a { color: inherit; } section { margin-top: 2rem; }
.sides { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
.sides h3 { font-size: .95rem; margin: .8rem 0 .2rem; font-family: monospace; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: .8rem; margin: 0; }
mark { background: #ffd7a8; }
"""


def _report(
    assignment: str,
    pairs: list[Pair],
    documents: dict[str, dict[str, CodeFingerprint]],
    k: int,
    shown: float,
    skipped: dict[str, str],
) -> str:
    """report.html: every pair of students and its score, then each pair from `shown` up side by side,
    the code each shares with the other highlighted. One offline page, named by student ids only."""
    e = html.escape
    unread = f" {len(skipped)} could not be read: {', '.join(sorted(skipped))}." if skipped else ""
    body = [
        f"<h1>{e(assignment)} · similar hand-ins</h1>",
        f'<p class="muted">{len(documents)} hand-ins compared, {len(pairs)} pairs.{e(unread)} A score is the share '
        "of the two hand-ins' own code (beyond the starter) that the other has too, from 0 to 1; the pairs "
        f"from {shown:g} up are shown below.</p>",
        f"<table><thead><tr>{_headers(('a', 'b', 'score'), 'score')}</tr></thead><tbody>",
    ]
    for number, pair in enumerate(pairs):
        score = f'<a href="#pair-{number}">{pair.score:.2f}</a>' if pair.score >= shown else f"{pair.score:.2f}"
        body.append(f"<tr><td>{e(pair.a)}</td><td>{e(pair.b)}</td><td class='points'>{score}</td></tr>")
    body.append("</tbody></table>")
    for number, pair in enumerate(pairs):
        if pair.score >= shown:
            sides = "".join(
                _side(student, documents[student], documents[other], k)
                for student, other in ((pair.a, pair.b), (pair.b, pair.a))
            )
            body.append(
                f'<section id="pair-{number}"><h2>{e(pair.a)} · {e(pair.b)}: {pair.score:.2f}</h2>'
                f'<div class="sides">{sides}</div></section>'
            )
    return _page(f"{assignment}: similar hand-ins", body, _STYLE)


def _side(student: str, modules: dict[str, CodeFingerprint], others: dict[str, CodeFingerprint], k: int) -> str:
    """One student's modules that share code with `others`, that code highlighted by copydetect."""
    from copydetect.utils import highlight_overlap

    parts = [f"<div><h2>{html.escape(student)}</h2>"]
    for name, module in modules.items():
        tokens = _shared(module, others.values(), k)
        if tokens.shape[1] == 0:
            continue
        # Token positions to the module's own text, as copydetect's compare_files maps its slices.
        characters = tokens.astype(int)
        if len(module.offsets) > 0:
            at = np.clip(np.searchsorted(module.offsets[:, 0], characters), 0, module.offsets.shape[0] - 1)
            characters += module.offsets[:, 1][at]
        code, _ = highlight_overlap(module.raw_code, characters, "<mark>", "</mark>", escape_html=True)
        # Escaped already; the control characters a hand-in may hold are shown as their escapes.
        parts.append(f"<h3>{html.escape(name)}</h3><pre>{clean(code, sys.maxsize, lines=True)}</pre>")
    return "".join(parts) + "</div>"
