"""Notebook submissions: cells read as the assignment's modules, and the starter written as a notebook."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import types
from concurrent.futures import Future
from pathlib import Path

import nbformat
import pytest

from grader import render
from grader.cli import main
from grader.errors import SubmissionProblem
from grader.grading import grade
from grader.notebook import (
    GRADE_TAG,
    SETUP_CELL,
    build_notebook,
    module_cells,
    notebook_modules,
    python_source,
)
from grader.options import GradingOptions
from grader.report import Report
from grader.submission import materialize
from tests.kit import ASSIGNMENTS, GRADINGS, ROOT, spec_of

SPEC = spec_of("assignment2")


def write_notebook(path: Path, *cells: str | tuple[str, str]) -> Path:
    """A notebook of code cells (str), or (kind, text) with kind "markdown", "raw" or "tagged" (code)."""
    notebook = nbformat.v4.new_notebook()
    for cell in cells:
        kind, text = ("code", cell) if isinstance(cell, str) else cell
        if kind == "markdown":
            notebook.cells.append(nbformat.v4.new_markdown_cell(text))
        elif kind == "raw":
            notebook.cells.append(nbformat.v4.new_raw_cell(text))
        else:
            notebook.cells.append(nbformat.v4.new_code_cell(text))
            if kind == "tagged":
                notebook.cells[-1].metadata["tags"] = [GRADE_TAG]
    nbformat.write(notebook, str(path))
    return path


def load(source: str) -> types.ModuleType:
    module = types.ModuleType("m")
    exec(compile(source, "m.py", "exec"), module.__dict__)
    return module


def code_cells(notebook: nbformat.NotebookNode) -> list[str]:
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


# --- reading cells -------------------------------------------------------------------------------


def test_python_source_skips_shell_and_magic_lines_and_non_python_cells():
    cell = "!pip install d2l\n%matplotlib inline\nimport os\nfiles = !ls\nos.path?\nif True:\n    !nvidia-smi\n"
    assert python_source(cell) == "pass\npass\nimport os\npass\npass\nif True:\n    pass"
    assert python_source("%%time\nx = 1") == "\nx = 1"
    assert python_source("%%bash\necho hi") is None
    assert python_source("%%writefile lenet.py\nnet = 1") is None
    modulo = "x = (10\n% 3)"  # valid Python: left as it is
    assert python_source(modulo) == modulo


def test_each_name_gets_its_last_definition_and_what_it_needs_and_nothing_else(tmp_path):
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        ("markdown", "# My homework"),
        "import math\nimport json\nimport package_that_does_not_exist",
        "net = make_net(None)  # the first try: would fail if it ran",
        "%matplotlib inline\n!pip install d2l\ndata = load_data(256)  # would fail: nothing needs it",
        "SCALE = 2\n\ndef helper(x):\n    return x * SCALE",
        "def make_net(width):\n    return [math.sqrt(width)] * 2",
        "def train(net, data):\n    return [helper(v) for v in net]",
        "net = make_net(16)\nnet = net + [0.0]",
        "train(net, data)\nfor epoch in range(10**9):\n    pass\nassert False, 'top-level code ran'",
        ("raw", "not code"),
        "from __future__ import annotations  # must open the module: compile() says so otherwise\nSCALE = 3",
    )
    source = notebook_modules(notebook, {"m.py": ["net", "train"]})["m.py"]
    module = load(source)
    assert module.net == [4.0, 4.0, 0.0]
    assert module.train(module.net, None) == [12.0, 12.0, 0.0]  # SCALE is read when train runs: the last one
    for left_out in ("json", "package_that_does_not_exist", "make_net(None)", "load_data", "range(10**9)", "SCALE = 2"):
        assert left_out not in source


def test_a_module_imports_what_another_defines_and_defines_its_own_names(tmp_path, monkeypatch):
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        "def box_iou(a, b):\n    return 'mine'",  # nb_boxes.py
        "from nb_boxes import box_iou  # a .py habit\nfrom os.path import join as box_iou  # shadows it\n\n"
        "def mean_iou(a, b):\n    return box_iou(a, b)",  # nb_metrics.py
    )
    modules = notebook_modules(notebook, {"nb_boxes.py": ["box_iou"], "nb_metrics.py": ["mean_iou"]})
    assert "os.path" not in modules["nb_boxes.py"] + modules["nb_metrics.py"]
    assert "\nfrom nb_boxes import box_iou\n" in modules["nb_metrics.py"]
    folder = tmp_path / "modules"
    folder.mkdir()
    for file, text in modules.items():
        (folder / file).write_text(text)
    monkeypatch.syspath_prepend(str(folder))
    try:
        assert importlib.import_module("nb_metrics").mean_iou(1, 2) == "mine"
    finally:
        for name in ("nb_boxes", "nb_metrics"):
            sys.modules.pop(name, None)


def test_a_tagged_cell_runs_as_it_is_in_the_modules_it_touches(tmp_path):
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        "net = [1]\nother = 0",
        ("tagged", "net.append(2)\nfor i in range(2):\n    net.append(i)"),
        ("tagged", "print('unrelated')"),
        "net.append(99)  # untagged: left out",
    )
    modules = notebook_modules(notebook, {"a.py": ["net"], "b.py": ["other"]})
    assert load(modules["a.py"]).net == [1, 2, 0, 1]
    assert "net.append" not in modules["b.py"] and "unrelated" not in modules["a.py"] + modules["b.py"]


def test_a_missing_name_is_reported_by_name_with_the_cells_that_were_skipped(tmp_path):
    notebook = write_notebook(tmp_path / "nb.ipynb", "net = 1", "def train(net):\n    return net +\n")
    module = load(notebook_modules(notebook, {"m.py": ["net", "train"]})["m.py"])
    assert module.net == 1
    with pytest.raises(AttributeError, match=r"^the notebook does not define `train` \(a name of m.py") as error:
        module.train  # noqa: B018
    assert "cell 2 is not Python (line 2: " in str(error.value) and "and was skipped" in str(error.value)
    with pytest.raises(AttributeError, match="module 'm' has no attribute 'other'"):
        module.other  # noqa: B018


def test_places_in_a_rebuilt_module_are_the_cells_and_lines_its_author_wrote(tmp_path):
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        ("markdown", "# Homework"),
        "import math\n\ndef train(net):\n    return None",  # the first try: not graded
        "data = load()  # top-level work, left out\nSCALE = 2",
        "%matplotlib inline\n# my second try\ndef train(net):\n    return net * SCALE\nnet = 3; other = 1",
    )
    folder = tmp_path / "modules"
    modules = materialize(
        notebook, ("m.py",), folder, starter_dir=_starter(tmp_path, "net = None\ndef train(n): pass\n")
    )
    lines = modules.source("m.py").splitlines()
    at = {text: number for number, text in enumerate(lines, start=1)}
    assert modules.where("m.py", at["SCALE = 2"]) == "cell 3, line 2"
    assert modules.where("m.py", at["    return net * SCALE"]) == "cell 4, line 4"
    assert modules.where("m.py", at["net = 3"]) == "cell 4, line 5"
    assert modules.where("m.py", 1) == ""  # the grader's own header
    reason = f"NameError (m.py line {at['    return net * SCALE']}): name 'SCALE' is not defined"
    assert modules.localize(reason) == "NameError (cell 4, line 4): name 'SCALE' is not defined"
    assert modules.notes == [
        "`train` is defined 2 times: graded is the last one, in cell 4 (line 3), not the one in cell 2 (line 3)"
    ]
    # a snapshot of the rebuilt modules (as `grade batch` keeps them) keeps the places and the notes
    again = materialize(folder, ("m.py",), tmp_path / "again")
    assert again.where("m.py", at["net = 3"]) == "cell 4, line 5" and again.notes == modules.notes


def _starter(tmp_path: Path, source: str) -> Path:
    (tmp_path / "starter").mkdir()
    (tmp_path / "starter" / "m.py").write_text(source)
    return tmp_path / "starter"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "hw.ipynb is not a notebook: it is not valid JSON"),
        (
            json.dumps({"nbformat": 5, "nbformat_minor": 0, "cells": [], "metadata": {}}),
            "Unsupported nbformat version 5",
        ),
        (json.dumps([1, 2]), "hw.ipynb is not a notebook: "),
        (nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("hi")])), "has no code cells"),
        (nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])), "defines none of"),
    ],
    ids=["invalid JSON", "nbformat 5", "not an object", "no code cells", "none of the names"],
)
def test_a_malformed_notebook_is_one_clear_problem(tmp_path, content, message):
    (tmp_path / "hw.ipynb").write_text(content)
    with pytest.raises(SubmissionProblem, match=message):
        materialize(tmp_path / "hw.ipynb", SPEC.files, tmp_path / "out", SPEC.starter_dir)


def test_the_command_line_says_what_is_wrong_with_a_notebook_in_one_line(tmp_path):
    (tmp_path / "hw.ipynb").write_text("{not json")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from grader.cli import run; run()",
            "assignment2",
            "--submission",
            str(tmp_path / "hw.ipynb"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2
    assert result.stderr == "error: hw.ipynb is not a notebook: it is not valid JSON\n"


# --- writing the starter as a notebook -----------------------------------------------------------


def test_module_cells_cut_at_definitions_and_tag_top_level_runs():
    source = (
        "import torch\nX = 1\n\n\n# helper\ndef f():\n    pass\n\n\n"
        "print(f())\nfor i in range(2):\n    pass\n\nclass A:\n    pass\n"
    )
    assert module_cells(source) == [
        ("import torch\nX = 1", False),
        ("# helper\ndef f():\n    pass", False),
        ("print(f())\nfor i in range(2):\n    pass", True),
        ("class A:\n    pass", False),
    ]


def test_a_starter_statement_that_runs_at_top_level_survives_the_round_trip(tmp_path):
    source = "from torch import nn\n\nnet = nn.Linear(2, None)\nnet.requires_grad_(False)\n"
    cells = [("tagged" if tagged else "code", text) for text, tagged in module_cells(source)]
    module = notebook_modules(write_notebook(tmp_path / "nb.ipynb", *cells), {"m.py": ["net"]})["m.py"]
    assert ast.dump(ast.parse(module)) == ast.dump(ast.parse(source))


def test_the_starter_notebook_holds_the_starter_modules_after_a_title_and_a_setup_cell(tmp_path):
    assert main(["notebook", "assignment2", "--out", str(tmp_path / "hw.ipynb")]) == 0
    notebook = nbformat.read(str(tmp_path / "hw.ipynb"), as_version=4)
    nbformat.validate(notebook)
    title, setup, *cells = notebook.cells
    assert title.cell_type == "markdown" and [c.cell_type for c in cells] == ["code"] * len(cells)
    assert (
        title.source.startswith(f"# assignment2: {SPEC.title}") and "assignments/assignment2/README.md" in title.source
    )
    assert setup.source == SETUP_CELL and "pip" in SETUP_CELL and 'find_spec("grader")' in SETUP_CELL
    modules: dict[str, list[str]] = {}
    for text in code_cells(notebook)[1:]:  # each module starts a cell with its name
        header = text.split("\n", 1)[0].removeprefix("# ")
        modules.setdefault(header if header in SPEC.files else list(modules)[-1], []).append(text)
    assert list(modules) == list(SPEC.files)
    for file, texts in modules.items():
        expected = (SPEC.starter_dir / file).read_text()
        assert ast.dump(ast.parse("\n\n".join(texts))) == ast.dump(ast.parse(expected)), file
    assert nbformat.writes(build_notebook(SPEC)) == nbformat.writes(notebook)  # the same every time
    assert main(["notebook", "assignment2", "--out", str(tmp_path / "hw.ipynb")]) == 2  # never overwrites


def test_the_setup_cell_installs_the_grader_from_the_repository_only_where_it_is_missing(monkeypatch):
    ran: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda command, check: ran.append(command))
    exec(SETUP_CELL, {})  # here `grader` imports: nothing to do
    assert ran == []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # Colab
    with pytest.raises(RuntimeError, match="put your repository's address in REPOSITORY"):
        exec(SETUP_CELL, {})
    exec(SETUP_CELL.replace("https://github.com/YOUR-ACCOUNT/YOUR-REPOSITORY", "https://example.org/me/hw"), {})
    assert ran[0][:2] == ["git", "clone"] and "https://example.org/me/hw" in ran[0]
    assert ran[1][1:4] == ["-m", "pip", "install"] and ran[1][-1] == f"./{ran[0][-1]}"


def reference_notebook_modules(name: str, folder: Path):
    spec = spec_of(name)
    path = folder / f"{name}.ipynb"
    nbformat.write(build_notebook(spec, spec.reference_dir), str(path))
    return materialize(path, spec.files, folder / name, spec.starter_dir)


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_each_reference_as_a_notebook_keeps_its_definitions(name, tmp_path):
    spec, copy = spec_of(name), reference_notebook_modules(name, tmp_path)
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign, ast.AugAssign)
    for file in spec.files:
        kept = {ast.dump(node) for node in ast.parse(copy.source(file)).body}
        for node in ast.parse((spec.reference_dir / file).read_text()).body:
            if isinstance(node, definitions):
                assert ast.dump(node) in kept, f"{file}: {ast.unparse(node).splitlines()[0]}"


LOAD_EACH = """
import importlib, sys
for folder, *names in (arg.split(",") for arg in sys.argv[1:]):
    sys.path.insert(0, folder)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:
            sys.exit(f"{folder}: {name}: {type(error).__name__}: {error}")
    for name in names:
        del sys.modules[name]
    sys.path.remove(folder)
"""


def test_every_reference_as_a_notebook_loads_its_modules_together(tmp_path):
    """As the sandbox does: each module imported from the folder of all, one assignment at a time."""
    folders = [reference_notebook_modules(name, tmp_path) for name in ASSIGNMENTS]
    args = [",".join([str(c.folder), *spec_of(n).module_names]) for n, c in zip(ASSIGNMENTS, folders, strict=True)]
    result = subprocess.run(
        [sys.executable, "-c", LOAD_EACH, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]


# --- grading notebooks ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_notebooks_graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Future[Report]]:
    """Each reference as a notebook, all submitted at once to run side by side; without the training
    runs: the modules are the reference's, definition for definition (above), and the reference's
    trained accuracy is checked in test_assignments.py."""
    futures = {}
    for name in ASSIGNMENTS:
        spec = spec_of(name)
        path = tmp_path_factory.mktemp("notebook") / f"{name}.ipynb"
        nbformat.write(build_notebook(spec, spec.reference_dir), str(path))
        futures[name] = GRADINGS.submit((name, "reference notebook"), spec, path, marks="not accuracy")
    return futures


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_each_reference_as_a_notebook_scores_full_marks(reference_notebooks_graded, name):
    report = reference_notebooks_graded[name].result()
    assert [(t.name, t.reason) for t in report.tests if t.status != "passed"] == []
    assert report.score == report.max_score > 0
    assert report.blanks["open"] == []


def test_a_messy_notebook_of_the_reference_scores_the_same_without_running_its_top_level_code(tmp_path):
    reference, starter = build_notebook(SPEC, SPEC.reference_dir), build_notebook(SPEC)
    messy = [
        ("markdown", "# My homework\nNotes."),
        "!pip install d2l==0.16.5\n%matplotlib inline\nimport matplotlib_is_not_needed",
        *code_cells(starter),  # the blanks, filled in again below: the last definition wins
        ("raw", "raw text"),
        *code_cells(reference),
        "pip install automagic  # not Python, even without its magic",
        "%%time\nfrom grader import d2l\ntrain_iter, test_iter = d2l.load_data_fashion_mnist(batch_size=256)\n"
        "train_ch6(net, train_iter, test_iter, 1000, 0.9, torch.device('cpu'))",
        "X = torch.rand(size=(1, 1, 28, 28))\nfor layer in net:\n    X = layer(X)\n    print(type(layer), X.shape)",
        "net?",
        "%%bash\nexit 1",
        "assert False, 'top-level code ran'",
    ]
    report = grade(
        SPEC, write_notebook(tmp_path / "messy.ipynb", *messy), GradingOptions(profile="quick", marks="not accuracy")
    )
    ran = [t for t in report.tests if t.outcome != "not run"]
    assert [t.name for t in ran] == [t.name for t in report.tests if not t.accuracy]
    assert [(t.name, t.reason) for t in ran if t.status != "passed"] == []
    assert report.blanks["open"] == []
    assert any(note.startswith("`train_ch6` is defined 2 times: graded is the last one") for note in report.notes)


def test_the_starter_as_a_notebook_scores_zero_and_every_failure_names_a_blank(tmp_path):
    path = tmp_path / "starter.ipynb"
    nbformat.write(build_notebook(SPEC), str(path))
    report = grade(SPEC, path, GradingOptions(profile="quick"))
    assert report.score == 0
    for test in report.tests:  # each blank where the student sees it: in a cell, not in a rebuilt module
        assert re.match(r"not filled in yet: cell \d+, line \d+: ", test.reason), f"{test.name}: {test.reason}"
    assert len(report.blanks["open"]) == report.blanks["total"] > 0
    assert all(re.match(r"cell \d+, line \d+: ", blank) for blank in report.blanks["open"])


def test_a_name_defined_twice_says_which_is_graded_and_its_errors_point_to_its_cell(tmp_path):
    cells = code_cells(build_notebook(SPEC, SPEC.reference_dir))
    retry = "# my second try\nnet = nn.Sequential(nn.Flatten(), my_layer())"
    path = write_notebook(tmp_path / "retry.ipynb", ("markdown", "# LeNet"), *cells, retry)
    report = grade(SPEC, path, GradingOptions(profile="quick", select="lenet"))
    cell, first = len(cells) + 2, next(n for n, c in enumerate(cells, start=2) if "net = nn.Sequential" in c)
    (error,) = report.load_errors
    assert error["place"] == f"cell {cell}, line 2" and error["reason"].startswith(f"NameError (cell {cell}, line 2)")
    assert render.load_errors(report)[1] == f"  cell {cell}, line 2: net = nn.Sequential(nn.Flatten(), my_layer())"
    ran = [t for t in report.tests if t.outcome != "not run" and not t.hidden]
    assert ran and all(f"(cell {cell}, line 2)" in t.reason and ".py line" not in t.reason for t in ran)
    (note,) = [n for n in report.notes if n.startswith("`net`")]
    assert note.startswith(f"`net` is defined 2 times: graded is the last one, in cell {cell} (line 2), not the one")
    assert f"in cell {first} (line " in note
    assert render.markdown(report).count(note) == 1  # said once, above the table


def test_a_name_the_notebook_lacks_fails_its_tests_by_name(tmp_path):
    cells = [text for text in code_cells(build_notebook(SPEC, SPEC.reference_dir)) if "net = nn.Sequential" not in text]
    report = grade(
        SPEC, write_notebook(tmp_path / "no-net.ipynb", *cells), GradingOptions(profile="quick", select="lenet")
    )
    ran = [t for t in report.tests if t.outcome != "not run"]
    assert ran and all(t.status == "failed" for t in ran)
    for test in ran:
        assert "the notebook does not define `net` (a name of lenet.py in the assignment)" in test.reason, test.reason
