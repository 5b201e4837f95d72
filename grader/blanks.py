"""Blanks: the holes of a starter, and which of them a submission still leaves open.

A starter file is its reference with holes. A hole (a *blank*) is either a `None` where the
reference has an expression or a statement, or a body `raise NotImplementedError(...)` where the
reference has a whole body. `pair_blanks` walks the two syntax trees side by side: every other
difference is a violation, so the pair can be checked in the kit's tests.

Which blanks a submission still leaves open is found by aligning its tokens with the starter's as
it was released (`Released`: in the kit, the starter folder paired with the reference; in a
student bundle, whose starter students fill in place, blanks.json): a blank whose token survives
unchanged, inside an unchanged run, is still open.
"""

from __future__ import annotations

import ast
import difflib
import io
import json
import tokenize
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from grader.i18n import place

if TYPE_CHECKING:
    from grader.spec import Spec
    from grader.submission import Materialized

BLANKS_FILE = "blanks.json"  # written into a student bundle, which has no reference


@dataclass(frozen=True)
class Blank:
    """One hole. `line`/`col` point at the `None` (or the `raise`) in the file it was found in."""

    file: str
    line: int
    col: int
    task: str
    code: str
    kind: str = "expression"  # "expression", "statement" or "body"
    where: str = ""  # the place as its author knows it, where that is not the file's line: "cell 14, line 3"

    def describe(self) -> str:
        return f"{self.where or place(self.file, self.line)}: {self.code}"


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    message: str

    def describe(self) -> str:
        return f"{self.file} line {self.line}: {self.message}"


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _raises_not_implemented(body: list[ast.stmt]) -> ast.Raise | None:
    """The `raise NotImplementedError(...)` of a body that is only that (after a docstring)."""
    stmts = body[1:] if body and _is_docstring(body[0]) else body
    if len(stmts) != 1 or not isinstance(stmts[0], ast.Raise) or stmts[0].exc is None:
        return None
    exc = stmts[0].exc
    target = exc.func if isinstance(exc, ast.Call) else exc
    if isinstance(target, ast.Name) and target.id == "NotImplementedError":
        return stmts[0]
    return None


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _task_of(stmt: ast.stmt) -> str:
    """The name a top-level statement defines: what tests call a task."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return stmt.name
    if isinstance(stmt, ast.Assign):
        target = stmt.targets[0]
        if isinstance(target, ast.Name):
            return target.id
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return stmt.target.id
    return "module"


class _PairWalker:
    def __init__(self, file: str, starter_lines: list[str]):
        self.file = file
        self.lines = starter_lines
        self.blanks: list[Blank] = []
        self.violations: list[Violation] = []
        self.task = "module"

    def blank(self, node: ast.AST, kind: str) -> None:
        code = self.lines[node.lineno - 1].strip()
        self.blanks.append(Blank(self.file, node.lineno, node.col_offset, self.task, code, kind))

    def differ(self, node: ast.AST, message: str) -> None:
        line = getattr(node, "lineno", 0)
        self.violations.append(Violation(self.file, line, message))

    def module(self, starter: ast.Module, reference: ast.Module) -> None:
        if len(starter.body) != len(reference.body):
            self.differ(starter, "the starter and the reference have different top-level statements")
            return
        for s, r in zip(starter.body, reference.body, strict=False):
            self.task = _task_of(r)
            self.statement(s, r)

    def statements(self, starter: list[ast.stmt], reference: list[ast.stmt], owner: ast.AST) -> None:
        if len(starter) != len(reference):
            self.differ(owner, "a block has a different number of statements than the reference's")
            return
        for s, r in zip(starter, reference, strict=False):
            self.statement(s, r)

    def statement(self, s: ast.stmt, r: ast.stmt) -> None:
        if isinstance(s, ast.Expr) and _is_none(s.value) and not (isinstance(r, ast.Expr) and _is_none(r.value)):
            self.blank(s.value, "statement")
            return
        self.node(s, r)

    def node(self, s: ast.AST, r: ast.AST) -> None:
        if _is_none(s) and not _is_none(r) and isinstance(r, ast.expr):
            self.blank(s, "expression")
            return
        if type(s) is not type(r):
            self.differ(s, f"the starter has {type(s).__name__} where the reference has {type(r).__name__}")
            return
        if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
            hole = _raises_not_implemented(s.body)
            if hole is not None and _raises_not_implemented(r.body) is None:
                self.blank(hole, "body")
                self.fields(s, r, skip=("body",))
                return
        self.fields(s, r)

    def fields(self, s: ast.AST, r: ast.AST, skip: tuple[str, ...] = ()) -> None:
        for name in s._fields:
            if name in skip or name == "ctx":
                continue
            sv, rv = getattr(s, name), getattr(r, name)
            if isinstance(sv, list):
                if (sv and isinstance(sv[0], ast.stmt)) or (rv and isinstance(rv[0], ast.stmt)):
                    self.statements(sv, rv, s)
                elif len(sv) != len(rv):
                    self.differ(s, f"'{name}' has {len(sv)} items in the starter, {len(rv)} in the reference")
                else:
                    for si, ri in zip(sv, rv, strict=False):
                        self._value(s, name, si, ri)
            else:
                self._value(s, name, sv, rv)

    def _value(self, owner: ast.AST, name: str, sv: object, rv: object) -> None:
        if isinstance(sv, ast.AST) and isinstance(rv, ast.AST):
            self.node(sv, rv)
        elif sv != rv:
            self.differ(owner, f"'{name}' differs: {sv!r} in the starter, {rv!r} in the reference")


def pair_blanks(starter_src: str, reference_src: str, file: str) -> tuple[list[Blank], list[Violation]]:
    """The blanks of a starter file, and every difference from its reference that is not one."""
    walker = _PairWalker(file, starter_src.splitlines())
    walker.module(ast.parse(starter_src, file), ast.parse(reference_src, file))
    return walker.blanks, walker.violations


@dataclass(frozen=True)
class Released:
    """The starter as released to students: each file's text, and its blanks (positions in that text).

    What a submission leaves open is always measured against this, never against the starter
    folder as it is now: students fill that folder in place.
    """

    starters: dict[str, str]
    blanks: list[Blank]

    def save(self, path: Path) -> None:
        """blanks.json, for a bundle (which has no reference to pair the starter with)."""
        document = {"starters": self.starters, "blanks": [asdict(b) for b in self.blanks]}
        path.write_text(json.dumps(document, indent=1) + "\n")

    def left_open(self, submission: Materialized) -> list[Blank]:
        """The blanks `submission` leaves as they were, at its lines (and, for a notebook, its cells)."""
        still_open = []
        for file, starter in self.starters.items():
            text = submission.source(file)
            if text is not None:
                mine = [b for b in self.blanks if b.file == file]
                found = open_blanks(starter, mine, text, file)
                still_open += [replace(b, where=submission.where(file, b.line)) for b in found]
        return still_open

    def in_missing_files(self, submission: Materialized) -> int:
        """How many blanks are in files the submission does not have: neither open nor filled."""
        return sum(b.file in submission.missing for b in self.blanks)


def released_blanks(spec: Spec) -> Released:
    """The starter as released: paired with the reference in the kit, read from blanks.json in a bundle."""
    if spec.reference_dir.is_dir():
        starters = {file: (spec.starter_dir / file).read_text() for file in spec.files}
        blanks: list[Blank] = []
        for file, starter in starters.items():
            try:
                blanks += pair_blanks(starter, (spec.reference_dir / file).read_text(), file)[0]
            except SyntaxError:  # an instructor's starter being written: its tests will say so
                continue
        return Released(starters, blanks)
    saved = spec.folder / BLANKS_FILE
    if not saved.is_file():
        return Released({}, [])
    table = json.loads(saved.read_text())
    return Released(table["starters"], [Blank(**b) for b in table["blanks"]])


ANSWER_MIN_LENGTH = 25  # shorter lines (`return x`, `x = self.pool(x)`) are too common to tell an answer


def normalized(line: str) -> str:
    """A line with its whitespace collapsed: how answer lines are compared."""
    return " ".join(line.split())


def answer_lines(starter_src: str, reference_src: str, min_length: int = ANSWER_MIN_LENGTH) -> set[str]:
    """The lines (normalized, longer than `min_length`) that the reference adds to its starter: the
    answers. A line that the starter already holds, even inside a longer one, gives nothing away."""
    starter = [normalized(line) for line in starter_src.splitlines()]
    reference = [normalized(line) for line in reference_src.splitlines()]
    added = set()
    for tag, _i1, _i2, j1, j2 in difflib.SequenceMatcher(None, starter, reference, autojunk=False).get_opcodes():
        if tag in ("replace", "insert"):
            added |= {line for line in reference[j1:j2] if len(line) > min_length}
    return {line for line in added if not any(line in mine for mine in starter)}


def spec_answers(spec: Spec) -> set[str]:
    """Every answer line of an assignment's reference (see `answer_lines`)."""
    return {
        line
        for file in spec.files
        for line in answer_lines((spec.starter_dir / file).read_text(), (spec.reference_dir / file).read_text())
    }


def is_bundle(root: Path) -> bool:
    """Whether `root` is a student bundle: no reference, and the blank tables that stand for it."""
    return not (root / "reference").is_dir() and any((root / "assignments").glob(f"*/{BLANKS_FILE}"))


# --- which blanks a submission leaves open ------------------------------------------------

_SKIPPED_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}


def _tokens(src: str) -> list[tokenize.TokenInfo]:
    try:
        return [t for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type not in _SKIPPED_TOKENS]
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return []


def _key(tok: tokenize.TokenInfo) -> str:
    return {tokenize.NEWLINE: "<nl>", tokenize.INDENT: "<in>", tokenize.DEDENT: "<de>"}.get(tok.type, tok.string)


def open_blanks(starter_src: str, blanks: list[Blank], submission_src: str, file: str) -> list[Blank]:
    """The blanks of `starter_src` that `submission_src` leaves as they were, at their new lines.

    A blank stays open when its token is matched, unchanged, inside a run of at least two
    matched tokens: a lone `None` elsewhere in the submission does not count.
    """
    starter_toks, sub_toks = _tokens(starter_src), _tokens(submission_src)
    if not sub_toks:
        return []
    matcher = difflib.SequenceMatcher(
        None, [_key(t) for t in starter_toks], [_key(t) for t in sub_toks], autojunk=False
    )
    matched: dict[int, int] = {}
    for block in matcher.get_matching_blocks():
        if block.size >= 2:
            matched.update({block.a + k: block.b + k for k in range(block.size)})
    by_position = {(t.start[0], t.start[1]): i for i, t in enumerate(starter_toks)}
    sub_lines = submission_src.splitlines()
    still_open = []
    for blank in blanks:
        index = by_position.get((blank.line, blank.col))
        if index is None or index not in matched:
            continue
        if blank.kind == "body" and index + 1 not in matched:  # `raise` kept, but not the error
            continue
        line = sub_toks[matched[index]].start[0]
        still_open.append(
            Blank(file, line, sub_toks[matched[index]].start[1], blank.task, sub_lines[line - 1].strip(), blank.kind)
        )
    return still_open
