"""Turning what students hand in into a folder of modules."""

import zipfile

import pytest

from grader.errors import SubmissionProblem
from grader.submission import materialize

FILES = ("lenet.py", "training.py")


def test_a_folder_keeps_only_the_assignment_files(tmp_path):
    (tmp_path / "in").mkdir()
    for name in (*FILES, "notes.py", "torch.py"):
        (tmp_path / "in" / name).write_text(f"# {name}\n")
    out = materialize(tmp_path / "in", FILES, tmp_path / "out")
    assert sorted(p.name for p in out.folder.iterdir()) == sorted(FILES)
    assert out.modules == {"lenet": "lenet.py", "training": "training.py"}
    assert out.missing == ()


def test_a_folder_missing_a_file_says_which(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "lenet.py").write_text("net = 1\n")
    out = materialize(tmp_path / "in", FILES, tmp_path / "out")
    assert out.missing == ("training.py",)
    assert out.source("training.py") is None


def test_a_single_py_file_stands_for_every_module(tmp_path):
    (tmp_path / "all.py").write_text("net = 1\ndef train_ch6(): pass\n")
    out = materialize(tmp_path / "all.py", FILES, tmp_path / "out")
    assert out.modules == {"lenet": "submission.py", "training": "submission.py"}
    assert out.source("lenet.py") == out.source("training.py")


def test_a_single_py_file_stands_for_the_modules_whose_names_it_defines(tmp_path):
    starter = tmp_path / "starter"
    starter.mkdir()
    (starter / "lenet.py").write_text("net = None\n")
    (starter / "training.py").write_text("def train_ch6(net):\n    return None\n")
    (tmp_path / "lenet_only.py").write_text("from torch import nn\n\nnet = nn.Flatten()\n")
    out = materialize(tmp_path / "lenet_only.py", FILES, tmp_path / "out", starter)
    assert out.modules == {"lenet": "submission.py"} and out.missing == ("training.py",)
    assert out.notes == ["training.py is missing from the submission"]
    (tmp_path / "both.py").write_text("net = 1\ndef train_ch6(net): pass\n")
    assert materialize(tmp_path / "both.py", FILES, tmp_path / "out2", starter).missing == ()
    (tmp_path / "broken.py").write_text("def net(:\n")  # every module, so that each test says what is wrong
    assert materialize(tmp_path / "broken.py", FILES, tmp_path / "out3", starter).missing == ()


def test_a_zip_is_read_without_extracting_escaping_paths(tmp_path):
    archive = tmp_path / "hand-in.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("student/lenet.py", "net = 1\n")
        z.writestr("student/deep/lenet.py", "net = 2\n")
        z.writestr("../training.py", "escape = True\n")
        z.writestr("/abs/training.py", "escape = True\n")
    out = materialize(archive, FILES, tmp_path / "out")
    assert out.source("lenet.py") == "net = 1\n"
    assert out.missing == ("training.py",)
    assert not (tmp_path / "training.py").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "none of the assignment's files"),
        (lambda p: p.with_suffix(".zip").write_bytes(b"not a zip"), "not a readable zip file"),
        (lambda p: p.with_suffix(".txt").write_text("hello"), "hand in a folder"),
        (lambda p: None, "submission not found"),
    ],
    ids=["empty folder", "broken zip", "wrong kind", "missing"],
)
def test_broken_submissions_are_one_clear_problem(tmp_path, make, message):
    target = tmp_path / "hand-in"
    make(target)
    candidates = [p for p in tmp_path.iterdir() if p.name.startswith("hand-in")] or [target]
    with pytest.raises(SubmissionProblem, match=message):
        materialize(candidates[0], FILES, tmp_path / "out")


def test_a_symlink_is_not_followed(tmp_path):
    (tmp_path / "secret.py").write_text("password = 1\n")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "lenet.py").symlink_to(tmp_path / "secret.py")
    (tmp_path / "in" / "training.py").write_text("x = 1\n")
    out = materialize(tmp_path / "in", FILES, tmp_path / "out")
    assert out.missing == ("lenet.py",)
