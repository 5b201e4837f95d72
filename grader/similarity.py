"""`grade similarity <assignment> <submissions> --out DIR`: which hand-ins share code beyond the starter.

Offline, with copydetect's winnowing (the fingerprinting of MOSS): code is tokenized first, so
renamed variables, moved comments and new blank lines change nothing. Each hand-in is read as
`grade batch` reads it (a folder, a `.py`, a `.zip` or a notebook, the notebook by the modules rebuilt
from its cells), and every fingerprint of the starter's modules (as `.py` files and as the rebuilt
starter notebook) is boilerplate: the lines students were given never match.

    DIR/pairs.csv    a,b,score for every pair of hand-ins, the most similar first
    DIR/report.html  copydetect's report: the file pairs it flags, the shared code highlighted
    DIR/handins/     the modules that were compared, one folder per hand-in

A pair's score is JPlag's "average similarity": the tokens of each hand-in's own code (what is not
the starter's) that the other has too, over the own code of both: 0 shares nothing, 1 is the same
code up to names. Hand-ins that only filled the blanks converge on the same few tokens: read the
score of a fill-in-the-blank assignment against its class's distribution, not as a verdict.
"""

from __future__ import annotations

import csv
import itertools
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grader.batch.store import find_entries, take_snapshot
from grader.errors import UserError, make_folder
from grader.notebook import write_notebook
from grader.render import spreadsheet_cell
from grader.spec import Spec
from grader.submission import materialize

HANDINS = "handins"
PAIRS = "pairs.csv"
REPORT = "report.html"


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


def similarity(spec: Spec, submissions: Path, out: Path) -> Similarity:
    """Compare every two hand-ins in `submissions`; write DIR/pairs.csv, DIR/report.html and DIR/handins/."""
    try:
        from copydetect import CopyDetector
    except ImportError:
        raise UserError("grade similarity needs copydetect: pip install '.[similarity]'") from None

    entries = find_entries(submissions)
    make_folder(out, f"--out {out}")
    handins = out / HANDINS
    shutil.rmtree(handins, ignore_errors=True)  # what an earlier run read: not these hand-ins
    read, skipped = [], {}
    for entry in entries:
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
            out_file=str(out / REPORT),
        )
        for path in _boilerplate(spec, Path(scratch)):
            detector.add_file(str(path), type="boilerplate")
        detector.run()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # copydetect's own use of importlib.resources
        detector.generate_html_report()
    pairs = _pairs(read, detector.file_data, detector.conf.noise_t)
    with (out / PAIRS).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "score"])
        writer.writerows((spreadsheet_cell(pair.a), spreadsheet_cell(pair.b), f"{pair.score:.4f}") for pair in pairs)
    return Similarity(pairs, skipped, len(read))


def _boilerplate(spec: Spec, scratch: Path) -> list[Path]:
    """The starter's modules, as handed out and as a notebook of them reads back."""
    notebook = write_notebook(spec, scratch / f"{spec.name}.ipynb")
    rebuilt = materialize(notebook, spec.files, scratch / "notebook", spec.starter_dir)
    return [spec.starter_dir / file for file in spec.files] + sorted(rebuilt.folder.glob("*.py"))


def _pairs(ids: list[str], fingerprints: dict, k: int) -> list[Pair]:
    """Every two hand-ins (`ids`, folders of DIR/handins), each file's tokens counted once however many of
    the other's files share them."""
    from copydetect.utils import find_fingerprint_overlap

    handins: dict[str, list] = {id_: [] for id_ in ids}
    for path, fingerprint in sorted(fingerprints.items()):
        handins[Path(path).parent.name].append(fingerprint)

    def shared(files: list, others: list) -> tuple[int, float]:
        """How many tokens of `files` the `others` have too, and how many `files` have of their own."""
        count = 0
        for mine in files:
            covered = np.zeros(len(mine.filtered_code), dtype=bool)
            for other in others:
                starts, _ = find_fingerprint_overlap(mine.hashes, other.hashes, mine.hash_idx, other.hash_idx)
                for offset in range(k):  # each match covers the k tokens from its start
                    covered[starts + offset] = True
            count += int(covered.sum())
        return count, sum(float(mine.token_coverage) for mine in files)

    pairs = []
    for a, b in itertools.combinations(sorted(handins), 2):
        shared_a, own_a = shared(handins[a], handins[b])
        shared_b, own_b = shared(handins[b], handins[a])
        own = own_a + own_b
        pairs.append(Pair(a, b, (shared_a + shared_b) / own if own else 0.0))
    return sorted(pairs, key=lambda pair: (-pair.score, pair.a, pair.b))
