"""Notebooks: read a Jupyter notebook as the assignment's modules, and write a starter as one.

Reading. Each module of the assignment (`lenet.py`, `training.py`...) is rebuilt from the code
cells: it keeps the imports, functions, classes and assignments that the names of its starter
module (its top-level functions, classes and assigned names) need, found by walking the cells
backwards from those names. So, as after "Restart and run all", the last definition of a name
wins, a helper or a constant that a function uses comes along, and the notebook's own top-level
work (loading data, training runs, plots: calls, loops, expressions, and assignments nothing
needs) never runs. Each module is built on its own, so one that fails to load costs only the
tests of its names, as with `.py` files; what one module uses of another's names it imports
from it (`from training import train`), as the `.py` files do.

- Shell and magic lines (`!pip install ...`, `%matplotlib inline`, `x = !ls`, `net?`) are
  skipped; in a `%%time`, `%%timeit`, `%%capture` or `%%prun` cell only the magic line is;
  any other cell magic (`%%bash`, `%%writefile`...) skips its cell.
- A cell tagged `grade` (Jupyter: View > Cell toolbar > Tags) runs as it is, top-level calls
  and loops included, in each module whose names it touches.
- A cell that is not Python even then is skipped, and said so.
- A module's own names must be defined (def, class, assignment), not imported: in one
  namespace, an import made for another module must not stand for them.
- A name that no cell defines is reported by name when a test asks for it.
- Each rebuilt module marks where its statements come from (`# cell 14, line 3`): reasons and
  blanks then say where the student wrote the code (`cell_places`), and a module's header notes
  each of its names defined more than once, which definition is graded and where the others are.

Writing. `build_notebook` turns the starter modules into cells (one per function or class, the
imports and assignments between them grouped), tagging `grade` any top-level statement that the
reading would otherwise leave out, and commenting out the imports of the assignment's other
modules (their names are defined in the notebook), so that the notebook runs in Jupyter and
defines what the `.py` files define.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import itertools
import re
import symtable
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.errors import SubmissionProblem, UserError
from grader.i18n import _, ngettext
from grader.spec import Spec

if TYPE_CHECKING:  # nbformat (and its jsonschema) loads only to read or write a notebook
    from nbformat import NotebookNode

GRADE_TAG = "grade"
ANSWER_PLACEHOLDER = "_Your answer here._"  # a written answer's cell as the starter has it: not answered yet
MAX_NOTEBOOK_BYTES = 64 * 2**20  # outputs (plots) make notebooks far larger than their code
_PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun"})
_BINDINGS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
_MAY_BIND = (ast.AugAssign, ast.If, ast.Try, *((ast.TryStar,) if hasattr(ast, "TryStar") else ()))
# `!pip ...`, `%matplotlib ...`, `files = !ls`, `net?`, `??net`
_MAGIC_LINE = re.compile(r"^\s*(?:[!%]|[\w.,\s\[\]()*]+=\s*[!%]|\?{1,2}[\w.]+\s*$|[\w.]+\?{1,2}\s*$)")
_BUILTINS = frozenset(dir(builtins))  # read by everything: they tie no cell to a module
_COMPREHENSIONS = frozenset({"listcomp", "setcomp", "dictcomp", "genexpr"})  # scopes of their own before 3.12


@dataclass(frozen=True)
class Statement:
    """One top-level statement of a code cell, with the global names it binds and reads."""

    cell: int  # 1-based position of its cell in the notebook
    line: int  # 1-based line of the cell where the statement starts
    text: str
    binds: frozenset[str]
    definite: bool  # it surely binds `binds` (a plain assignment, import, def or class)
    uses: frozenset[str]  # global names it reads when it runs
    deferred: frozenset[str]  # global names its functions (and methods) read when they are called
    definition: bool  # kept when needed (imports, defs, classes, assignments, if/try)
    tagged: bool = False  # in a cell tagged `grade`: kept when it touches the module
    star: bool = False  # `from x import *`: may bind anything
    imports: frozenset[str] = frozenset()  # the top-level packages it imports from


@dataclass(frozen=True)
class Cells:
    """The statements of a notebook's code cells, and why cells were skipped."""

    statements: list[Statement]
    notes: list[str]


# --- reading a notebook --------------------------------------------------------------------------


def read_notebook(path: Path) -> NotebookNode:
    """The notebook at `path`, as version 4; a `SubmissionProblem` when it is not one."""
    import nbformat

    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise SubmissionProblem(
            _("{name} is larger than {mb} MB").format(name=path.name, mb=MAX_NOTEBOOK_BYTES // 2**20)
        )
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        with warnings.catch_warnings():  # a missing cell id or an extra key is no reason to refuse it
            warnings.simplefilter("ignore")
            notebook = nbformat.reads(text, as_version=4, capture_validation_error={})
    except nbformat.reader.NotJSONError:
        raise SubmissionProblem(_("{name} is not a notebook: it is not valid JSON").format(name=path.name)) from None
    except nbformat.NBFormatError as error:
        problem = _("{name} is not a notebook Jupyter can read: {error}").format(name=path.name, error=error)
        raise SubmissionProblem(problem) from None
    except Exception as error:  # jsonschema's ValidationError, or JSON that is not an object
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SubmissionProblem(_("{name} is not a notebook: {error}").format(name=path.name, error=first)) from None
    if not any(_code_cells(notebook)):
        raise SubmissionProblem(_("{name} has no code cells").format(name=path.name))
    return notebook


def _code_cells(notebook: Any) -> Iterator[tuple[int, str, bool]]:
    """(1-based position, source, tagged `grade`) of each code cell that holds something."""
    cells = notebook.get("cells", [])
    for index, cell in enumerate(cells if isinstance(cells, list) else [], start=1):
        source = cell.get("source", "") if isinstance(cell, dict) else ""
        if cell.get("cell_type") == "code" and isinstance(source, str) and source.strip():
            tags = cell.get("metadata", {}).get("tags", [])
            yield index, source, isinstance(tags, list) and GRADE_TAG in tags


def notebook_cells(notebook: NotebookNode) -> Cells:
    """The top-level statements of the code cells, in order."""
    statements: list[Statement] = []
    notes: list[str] = []
    for index, cell_source, tagged in _code_cells(notebook):
        source = python_source(cell_source)
        if source is None:
            continue  # a %%bash, %%writefile... cell
        try:
            statements += [_statement(node, source, index, tagged) for node in ast.parse(source).body]
        except SyntaxError as error:  # from the parser, or from symtable (`nonlocal` at top level...)
            note = _("cell {cell} is not Python (line {line}: {error}) and was skipped")
            notes.append(note.format(cell=index, line=error.lineno, error=error.msg))
    return Cells(statements, notes)


def python_source(source: str) -> str | None:
    """A cell's Python, shell and magic lines blanked to `pass`; None for a non-Python cell magic.

    Lines keep their numbers, so positions in the result are positions in the cell. A cell that
    parses as it is stays as it is: `%` at the start of a line may be a continued modulo.
    """
    lines = source.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), 0)
    if lines[first].lstrip().startswith("%%"):
        magic = lines[first].lstrip()[2:].split(maxsplit=1)
        if not magic or magic[0] not in _PYTHON_CELL_MAGICS:
            return None
        lines[first] = ""
    text = "\n".join(lines)
    with contextlib.suppress(SyntaxError):
        ast.parse(text)
        return text
    return "\n".join(_blank_magic(line) for line in lines)


def _blank_magic(line: str) -> str:
    if line.lstrip().startswith("#") or not _MAGIC_LINE.search(line):
        return line
    return line[: len(line) - len(line.lstrip())] + "pass"  # `pass` keeps an indented block valid


def _statement(node: ast.stmt, source: str, cell: int, tagged: bool) -> Statement:
    text = _source_of(node, source)
    line = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])
    table = symtable.symtable(text, f"cell {cell}", "exec")
    binds = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    changed = _changed_names(node)  # `net.fc = ...` changes `net`: it is part of defining it
    now = {s.get_name() for s in table.get_symbols() if s.is_referenced()}
    deferred: set[str] = set()
    scopes = [(scope, False) for scope in table.get_children()]
    while scopes:  # a class body and a comprehension run now; a function or lambda body when called
        scope, later = scopes.pop()
        later = later or (scope.get_type() == "function" and scope.get_name() not in _COMPREHENSIONS)
        scopes += [(child, later) for child in scope.get_children()]
        (deferred if later else now).update(
            s.get_name() for s in scope.get_symbols() if s.is_global() and s.is_referenced()
        )
    return Statement(
        cell=cell,
        line=line,
        text=text,
        binds=frozenset(binds | changed),
        definite=isinstance(node, _BINDINGS) and not changed,
        uses=frozenset(now),
        deferred=frozenset(deferred),
        definition=_is_definition(node),
        tagged=tagged,
        star=isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names),
        imports=frozenset(_imported_modules(node)),
    )


def _imported_modules(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name.split(".")[0] for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return {node.module.split(".")[0]}
    return set()


def _source_of(node: ast.stmt, source: str) -> str:
    """The exact text of a top-level statement, decorators included."""
    if hasattr(node, "body"):  # a compound statement owns its lines: nothing precedes it on its first
        first = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])
        return "\n".join(source.splitlines()[first - 1 : node.end_lineno])
    return ast.get_source_segment(source, node) or ""


def _is_definition(node: ast.stmt) -> bool:
    """Imports, defs, classes, assignments, and if/try around them: kept when a module needs them."""
    if isinstance(node, ast.AnnAssign) and node.value is None:
        return False  # `x: int` binds nothing
    return isinstance(node, _BINDINGS + _MAY_BIND) and not _is_main_guard(node)


def _changed_names(node: ast.stmt) -> set[str]:
    """The names an assignment changes without binding them: `net.fc = ...`, `config["lr"] += 1`."""
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    else:
        return set()
    names = set()
    for target in targets:
        base = target
        while isinstance(base, (ast.Attribute, ast.Subscript)):
            base = base.value
        if base is not target and isinstance(base, ast.Name):
            names.add(base.id)
    return names


def _is_main_guard(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":`, a script's own run."""
    if not isinstance(node, ast.If):
        return False
    parts = list(ast.walk(node.test))
    named = any(isinstance(n, ast.Name) and n.id == "__name__" for n in parts)
    return named and any(isinstance(n, ast.Constant) and n.value == "__main__" for n in parts)


def slice_for(statements: list[Statement], names: set[str], elsewhere: frozenset[str] = frozenset()) -> list[Statement]:
    """The statements that define `names`, and what those need, in notebook order.

    Walks backwards: a definition is kept when it binds a name still needed at that point; a
    sure binding satisfies the need (so earlier definitions are left out: the last one wins),
    and what the kept statement reads becomes needed before it, with what the functions it may
    call read. What the kept functions read is needed at the end, when the tests call them: the
    walk starts again until that settles. A tagged statement is kept when it touches a name the
    module is about. Names in `elsewhere` (another module's) are never looked for here.
    """
    at_end, touched = set(names), set(names)
    while True:
        needed, kept, deferred, reached = set(at_end), [], set(), set(touched)
        for index in range(len(statements) - 1, -1, -1):
            statement = statements[index]
            # The module's own names are defined, never imported: in one namespace, another
            # module's `from torchvision.ops import box_iou` must not stand for this one's box_iou.
            provides = statement.binds - names if statement.imports else statement.binds
            take = (
                statement.star
                or (statement.tagged and (statement.uses | statement.deferred | statement.binds) & touched)
                or (statement.definition and provides & needed)
            )
            if not take:
                continue
            kept.append(statement)
            if statement.definite:
                needed -= provides
            needed |= statement.uses | _read_by_calls(statements, index, statement.uses - elsewhere)
            needed -= elsewhere
            deferred |= statement.deferred
            reached |= (statement.uses | statement.deferred | statement.binds) - _BUILTINS
        if at_end >= deferred - elsewhere and touched >= reached:
            return kept[::-1]
        at_end |= deferred - elsewhere
        touched |= reached


def _read_by_calls(statements: list[Statement], index: int, names: frozenset[str]) -> set[str]:
    """What the functions and classes among `names`, as bound before `index`, read if called there.

    `net = make_net()` runs make_net's body now: the constants it reads must be defined before.
    """
    read: set[str] = set()
    pending, seen = list(names - _BUILTINS), set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        binder = next((s for s in reversed(statements[:index]) if name in s.binds), None)
        if binder is not None:
            read |= binder.deferred
            pending += binder.deferred - _BUILTINS
    return read


# --- the modules of an assignment ----------------------------------------------------------------


def top_level_names(source: str) -> list[str]:
    """What a starter module defines at top level: functions, classes and assigned names."""
    names: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return list(dict.fromkeys(names))


def starter_names(starter_dir: Path, files: tuple[str, ...]) -> dict[str, list[str]]:
    """The names each of `files` defines at top level in the starter."""
    return {file: top_level_names((starter_dir / file).read_text()) for file in files}


def notebook_modules(path: Path, names: dict[str, list[str]]) -> dict[str, str]:
    """The source of each module (file -> text) that `names` (file -> its names) asks for.

    A name of another module is imported from it, as the `.py` files do (`from training import
    train`), so that each object has one home; the notebook's own such imports, which cannot run
    in Jupyter anyway, are left out. `from __future__` imports open every module.
    """
    cells = notebook_cells(read_notebook(path))
    futures = list(dict.fromkeys(s.text for s in cells.statements if "__future__" in s.imports))
    modules, defined = {}, set()
    stems = {Path(file).stem: file for file in names}
    statements = [s for s in cells.statements if not s.imports & {*stems, "__future__"}]
    bound = {name for statement in statements for name in statement.binds}
    for file, wanted in names.items():
        siblings = {stem: other for stem, other in stems.items() if other != file}
        # What another module defines comes from it; so does the module itself (`import training`)
        # unless the notebook has a name of its own for it (`training = True`).
        elsewhere = {name: stem for stem, other in siblings.items() for name in names[other]}
        elsewhere |= {stem: stem for stem in siblings if stem not in bound}
        elsewhere = {name: stem for name, stem in elsewhere.items() if name not in wanted}
        kept = slice_for(statements, set(wanted), frozenset(elsewhere))
        read = {name for statement in kept for name in statement.uses | statement.deferred}
        header = futures + [f"import {stem}" for stem in siblings if stem in read]
        for stem in siblings:
            imported = [name for name, home in elsewhere.items() if home == stem and name != stem and name in read]
            header += [f"from {stem} import {', '.join(imported)}"] if imported else []
        kept_binds = {name for statement in kept for name in statement.binds}
        defined |= kept_binds & set(wanted)
        missing = [name for name in wanted if name not in kept_binds]
        notes = redefined(statements, kept, wanted)
        modules[file] = module_source(path.name, file, header, kept, missing, cells.notes, notes)
    if not defined and not any(s.star for s in cells.statements):
        wanted = ", ".join(name for found in names.values() for name in found)
        notes = "".join(f"; {note}" for note in cells.notes)
        problem = _("{name} defines none of the assignment's names ({wanted}){notes}")
        raise SubmissionProblem(problem.format(name=path.name, wanted=wanted, notes=notes))
    return modules


def redefined(statements: list[Statement], kept: list[Statement], names: list[str]) -> list[str]:
    """A note for each of `names` defined more than once, where an earlier definition is not graded:
    which one is (its cell), and where the others are."""
    notes = []
    for name in names:
        binders = [s for s in statements if name in s.binds and s.definite and s.definition and not s.imports]
        graded = [s for s in binders if any(s is k for k in kept)]
        ignored = [s for s in binders if not any(s is k for k in kept)]
        if graded and ignored:
            where = _("cell {cell} (line {line})")
            last, others = graded[-1], _(" and ").join(where.format(cell=s.cell, line=s.line) for s in ignored)
            note = ngettext(
                "`{name}` is defined {times} times: graded is the last one, in cell {cell} (line {line}),"
                " not the one in {others}",
                "`{name}` is defined {times} times: graded is the last one, in cell {cell} (line {line}),"
                " not those in {others}",
                len(ignored),
            )
            notes.append(note.format(name=name, times=len(binders), cell=last.cell, line=last.line, others=others))
    return notes


# How a rebuilt module marks where its lines come from: its first line, its notes, and before each
# statement that does not follow the previous one in its cell, the cell and line it starts on.
_HEADER = re.compile(r"^# \S+\.py, read from .+ by the grader: ")
_NOTE = "# note: "
_PLACE = re.compile(r"^# cell (\d+), line (\d+)$")
_GRADER_LINES = "# added by the grader"


def module_source(
    notebook: str,
    file: str,
    header: list[str],
    kept: list[Statement],
    missing: list[str],
    skipped: list[str],
    notes: list[str],
) -> str:
    """One module: its header (notes on the cells `skipped` and others, imports), then the kept statements,
    each under a `# cell N, line L` line unless it follows the previous one in its cell (`cell_places`
    reads them back). A name `missing` from the notebook says so when asked for, with the cells skipped."""
    lines = [f"# {file}, read from {notebook} by the grader: what its names need, in notebook order."]
    lines += [f"{_NOTE}{note}" for note in (*skipped, *notes)]
    lines += header
    follows = None  # (cell, line) where a statement that needs no mark would start
    for statement in kept:
        if (statement.cell, statement.line) != follows:
            if follows is None or statement.cell != follows[0]:
                lines.append("")
            lines.append(f"# cell {statement.cell}, line {statement.line}")
        lines.append(statement.text)
        follows = (statement.cell, statement.line + statement.text.count("\n") + 1)
    if missing:  # asking for a name the notebook never defined says so, by name (in plain code: the
        # sandbox sees nothing of the grader but its runtime)
        said = "".join(f"; {note}" for note in skipped)
        why = {
            name: _("the notebook does not define `{name}` (a name of {file} in the assignment){said}").format(
                name=name, file=file, said=said
            )
            for name in missing
        }
        lines += [
            "",
            _GRADER_LINES,
            f"__grader_missing__ = {why!r}",
            "",
            "",
            "def __getattr__(name):",
            "    if name in __grader_missing__:",
            "        raise AttributeError(__grader_missing__[name])",
            '    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")',
        ]
    return "\n".join(lines) + "\n"


def cell_places(text: str) -> dict[int, tuple[int, int]]:
    """For a module rebuilt from a notebook: each of its lines that came from a cell -> (cell, line)."""
    lines = text.splitlines()
    if not lines or not _HEADER.match(lines[0]):
        return {}
    places: dict[int, tuple[int, int]] = {}
    at: tuple[int, int] | None = None
    for number, line in enumerate(lines, start=1):
        mark = _PLACE.match(line)
        if mark:
            at = (int(mark[1]), int(mark[2]))
        elif line == _GRADER_LINES:
            at = None
        elif at is not None:
            places[number] = at
            at = (at[0], at[1] + 1)
    return places


def module_notes(text: str) -> list[str]:
    """For a module rebuilt from a notebook: the notes in its header (cells skipped, names defined twice)."""
    lines = text.splitlines()
    if not lines or not _HEADER.match(lines[0]):
        return []
    return [line.removeprefix(_NOTE) for line in itertools.takewhile(lambda x: x.startswith(_NOTE), lines[1:])]


# --- writing a starter notebook ------------------------------------------------------------------


def module_cells(source: str, siblings: frozenset[str] = frozenset()) -> list[tuple[str, bool]]:
    """A module cut into cells, (text, tagged): one per function or class, the other definitions
    between them grouped, and each run of other top-level statements in a cell tagged `grade`.

    Imports from `siblings` (the assignment's other modules) are commented out: in a notebook,
    what they import is defined in other cells.
    """
    lines = source.splitlines()
    tree = ast.parse(source)
    for node in tree.body:
        if _imported_modules(node) & siblings:
            for number in range(node.lineno - 1, node.end_lineno):
                lines[number] = f"# {lines[number]}"
            lines[node.end_lineno - 1] += "  # defined in this notebook"
    groups: list[tuple[int, str]] = []  # (last line of the group, kind)
    for node in tree.body:
        kind = "def" if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else "plain"
        if not _is_definition(node) and not _is_docstring(node):
            kind = "run"
        if groups and kind == groups[-1][1] != "def":
            groups[-1] = (node.end_lineno, kind)
        else:
            groups.append((node.end_lineno, kind))
    groups[-1] = (len(lines), groups[-1][1])  # trailing comments stay with the last cell
    cells, start = [], 0
    for end, kind in groups:
        text = "\n".join(lines[start:end]).strip("\n")
        if text:
            cells.append((text, kind == "run"))
        start = end
    return cells


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


# The notebook's first code cell: where `import grader` fails (Colab), it installs the grader from the
# student's repository (a bundle: `pip install` gives `grader.d2l` and the `grade` command). The
# grader leaves it out of every module: it defines none of the assignment's names.
SETUP_CELL = """\
# Setup, once per session, for Colab (or any Jupyter where `import grader` fails): this installs the
# course's grader (what the cells below import of it, and the `grade` command) from your copy of the
# assignment's repository. Put its address here (GitHub: Code > HTTPS). In Jupyter started in that
# repository, nothing is done.
REPOSITORY = "https://github.com/YOUR-ACCOUNT/YOUR-REPOSITORY"

import importlib
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("grader") is None:
    if "YOUR-ACCOUNT" in REPOSITORY:
        raise RuntimeError("put your repository's address in REPOSITORY, then run this cell again")
    subprocess.run(["git", "clone", "--depth", "1", REPOSITORY, "assignment-repository"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "./assignment-repository"], check=True)
    importlib.invalidate_caches()"""


def build_notebook(spec: Spec, folder: Path | None = None) -> NotebookNode:
    """The modules of `folder` (default: the starter) as a notebook, after a markdown cell and the setup cell."""
    import nbformat

    folder = folder or spec.starter_dir
    notebook = nbformat.v4.new_notebook()
    notebook.metadata.update(
        kernelspec={"name": "python3", "display_name": "Python 3", "language": "python"},
        language_info={"name": "python"},
    )
    intro = (
        f"# {spec.name}: {spec.title}\n\n*{spec.title_vi}*\n\n"
        f"The statement: `assignments/{spec.name}/README.md` (tiếng Việt: `README.vi.md`). "
        f"Fill in every `None` below, then grade this notebook: "
        f"`grade {spec.name} --submission {spec.name}.ipynb`.\n\n"
        "The grader reads the imports, functions, classes and assignments of the code cells (the last "
        "definition of a name wins) and leaves out shell and magic lines and top-level runs and plots; "
        f"cells tagged `{GRADE_TAG}` run as they are."
    )
    notebook.cells.append(nbformat.v4.new_markdown_cell(intro))
    notebook.cells.append(nbformat.v4.new_code_cell(SETUP_CELL))
    for file in spec.files:
        siblings = frozenset(Path(other).stem for other in spec.files if other != file)
        for index, (text, tagged) in enumerate(module_cells((folder / file).read_text(), siblings)):
            cell = nbformat.v4.new_code_cell(f"# {file}\n{text}" if index == 0 else text)
            if tagged:
                cell.metadata["tags"] = [GRADE_TAG]
            notebook.cells.append(cell)
    for question in spec.questions:  # the written answers: found by their tag (grader.written)
        answer = f"## {question.id}: {question.title}\n\n*{question.title_vi}*\n\n{ANSWER_PLACEHOLDER}"
        notebook.cells.append(nbformat.v4.new_markdown_cell(answer, metadata={"tags": [question.id]}))
    for number, cell in enumerate(notebook.cells, start=1):
        cell.id = f"{spec.name}-{number}"  # the same notebook every time it is written
    nbformat.validate(notebook)
    return notebook


def write_notebook(spec: Spec, out: Path, folder: Path | None = None) -> Path:
    """Write `build_notebook(spec, folder)` to `out`, which must not exist yet."""
    import nbformat

    if out.exists():
        raise UserError(f"{out} already exists: choose another --out, or move it away first")
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build_notebook(spec, folder), str(out))
    return out
