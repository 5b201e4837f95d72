"""Blanks: the starter/reference pair check, and which blanks a submission leaves open."""

from dataclasses import replace

from grader.blanks import Blank, Released, open_blanks, pair_blanks
from grader.submission import materialize

REFERENCE = '''\
import torch

def train(net, data, lr):
    """Train."""
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    for x, y in data:
        optimizer.zero_grad()
        loss = net(x, y)
        loss.backward()
    return optimizer

def helper(x=None):
    return x * 2

net = torch.nn.Linear(4, 2)
'''

STARTER = '''\
import torch

def train(net, data, lr):
    """Train."""
    optimizer = None  # the optimizer
    for x, y in None:
        None  # zero the gradients
        loss = net(x, y)
        loss.backward()
    return optimizer

def helper(x=None):
    """Double x."""
    raise NotImplementedError("helper")

net = torch.nn.Linear(None, 2)
'''


def test_pair_finds_each_kind_of_blank_with_its_task():
    blanks, violations = pair_blanks(STARTER.replace('    """Double x."""\n', ""), REFERENCE, "m.py")
    assert violations == []
    assert [(b.task, b.line, b.kind) for b in blanks] == [
        ("train", 5, "expression"),
        ("train", 6, "expression"),
        ("train", 7, "statement"),
        ("helper", 13, "body"),
        ("net", 15, "expression"),
    ]
    assert blanks[2].describe() == "m.py line 7: None  # zero the gradients"


def test_a_docstring_may_stay_above_a_body_blank():
    reference = REFERENCE.replace("def helper(x=None):\n", 'def helper(x=None):\n    """Double x."""\n')
    blanks, violations = pair_blanks(STARTER, reference, "m.py")
    assert violations == []
    assert [b.kind for b in blanks].count("body") == 1


def test_pair_reports_differences_that_are_not_blanks():
    changed = STARTER.replace("loss.backward()", "loss.backward(retain_graph=True)").replace("lr=lr", "lr=0.1")
    _, violations = pair_blanks(changed, REFERENCE, "m.py")
    assert violations and all(v.file == "m.py" for v in violations)
    extra_statement = STARTER.replace("    return optimizer\n", "    print(1)\n    return optimizer\n")
    _, violations = pair_blanks(extra_statement, REFERENCE, "m.py")
    assert any("number of statements" in v.message for v in violations)


def _open(submission: str) -> list:
    starter = STARTER.replace('    """Double x."""\n', "")
    blanks, _ = pair_blanks(starter, REFERENCE, "m.py")
    return open_blanks(starter, blanks, submission, "m.py")


def test_every_blank_is_open_in_the_starter_and_none_in_the_reference():
    starter = STARTER.replace('    """Double x."""\n', "")
    assert len(_open(starter)) == 5
    assert _open(REFERENCE) == []


def test_open_blanks_follow_the_submission_lines_after_edits_elsewhere():
    starter = STARTER.replace('    """Double x."""\n', "")
    edited = starter.replace("import torch\n", "import torch\nimport math\n\n\nSCALE = 2  # None of this matters\n")
    edited = edited.replace("optimizer = None  # the optimizer", "optimizer = torch.optim.SGD(net.parameters(), lr=lr)")
    still = _open(edited)
    assert [(b.task, b.line) for b in still] == [("train", 10), ("train", 11), ("helper", 17), ("net", 19)]
    assert still[0].code == "for x, y in None:"


def test_a_filled_body_blank_is_closed_even_if_another_raise_remains():
    starter = STARTER.replace('    """Double x."""\n', "")
    filled = starter.replace(
        'raise NotImplementedError("helper")', 'if x is None:\n        raise ValueError("x")\n    return 2 * x'
    )
    assert "helper" not in {b.task for b in _open(filled)}


def test_an_unparsable_submission_has_no_open_blanks_to_report():
    assert _open("def broken(:\n") == []


def test_what_is_open_is_measured_against_the_starter_as_released_not_as_edited(tmp_path):
    """A student bundle's starter is filled in place: its blanks are still counted from the released one."""
    starter = STARTER.replace('    """Double x."""\n', "")
    blanks = [*pair_blanks(starter, REFERENCE, "m.py")[0], Blank("n.py", 1, 4, "x", "x = None")]
    released = Released({"m.py": starter, "n.py": "x = None\n"}, blanks)
    (tmp_path / "in").mkdir()
    filled = starter.replace("optimizer = None", "optimizer = torch.optim.SGD(net.parameters())")
    (tmp_path / "in" / "m.py").write_text(filled.replace("Linear(None, 2)", "Linear(4, 2)"))
    submission = materialize(tmp_path / "in", ("m.py", "n.py"), tmp_path / "out")
    still = [(b.task, b.line) for b in released.left_open(submission)]
    assert len(released.blanks) == 6 and still == [("train", 6), ("train", 7), ("helper", 13)]
    assert submission.missing == ("n.py",) and released.in_missing_files(submission) == 1  # neither open nor filled


def test_a_blank_says_where_its_author_put_it(tmp_path):
    blank = Blank("lenet.py", 8, 4, "net", "nn.Conv2d(1, None)")
    assert blank.describe() == "lenet.py line 8: nn.Conv2d(1, None)"
    assert replace(blank, where="cell 4, line 2").describe() == "cell 4, line 2: nn.Conv2d(1, None)"
