"""The sandbox: probes run next to student code in a child process, and come back as data."""

from __future__ import annotations

import pytest
import torch

from grader.sandbox import Sandbox, SandboxLimits, SubmissionError, start_server
from grader.submission import materialize


@pytest.fixture(scope="module", autouse=True)
def server():
    start_server()


def sandbox_for(tmp_path, source: str, **limits) -> Sandbox:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "student.py").write_text(source)
    copy = materialize(tmp_path / "in", ("student.py",), tmp_path / "copy")
    (tmp_path / "runs").mkdir()
    return Sandbox(copy, limits=SandboxLimits(**{"timeout_s": 20, **limits}), scratch=tmp_path / "runs")


# Probes: they run in the sandbox, as instructors' probes do.
def call_square(sub, x):
    return sub.student.square(x)


def read_value(sub):
    return sub.student.VALUE


def module_itself(sub):
    return sub.student


def student_object(sub):
    return sub.student.Net()


def test_a_probe_returns_data(tmp_path):
    box = sandbox_for(tmp_path, "def square(x):\n    return {'y': x * x, 'n': 3}\n")
    result = box.run(call_square, torch.arange(3.0))
    assert torch.equal(result["y"], torch.tensor([0.0, 1.0, 4.0])) and result["n"] == 3


def test_an_error_in_student_code_names_its_line(tmp_path):
    box = sandbox_for(tmp_path, "def square(x):\n    y = x\n    return y @ None\n")
    with pytest.raises(SubmissionError) as error:
        box.run(call_square, torch.ones(2))
    assert error.value.frames == (("student.py", 3),)
    assert str(error.value).startswith("TypeError (student.py line 3)")


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("import sys\nsys.exit(3)\n", "the submission called sys.exit(3)"),
        ("import os\nos._exit(0)\n", "the submission ended its process (exit code 0)"),
        ("while True:\n    pass\n", "ran past its 2 s time limit"),
        ("while True:\n    print('spam' * 100)\n", "printed more than 16 KB of output"),
        ("import torch\nbig = torch.ones(2**34)\n", "can't allocate memory"),
        ("open('big.bin', 'wb').write(b'0' * 3 * 2**20)\n", "wrote a file larger than the 1 MB limit"),
    ],
    ids=["sys.exit", "os._exit", "endless loop", "endless output", "too much memory", "too large a file"],
)
def test_a_misbehaving_import_costs_only_its_probe(tmp_path, source, reason):
    box = sandbox_for(tmp_path, source, timeout_s=2, output_kb=16, memory_mb=1024, file_mb=1)
    with pytest.raises(SubmissionError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        box.run(read_value)


def test_student_objects_never_come_back(tmp_path):
    box = sandbox_for(
        tmp_path, "import torch\nclass Net(torch.nn.Linear):\n    def __init__(self):\n        super().__init__(2, 2)\n"
    )
    for probe in (module_itself, student_object):
        with pytest.raises(SubmissionError, match="not plain data"):
            box.run(probe)


def test_each_run_starts_from_a_fresh_copy(tmp_path):
    source = "import os\nVALUE = os.path.exists('marker')\nopen('marker', 'w').close()\n"
    box = sandbox_for(tmp_path, source)
    assert box.run(read_value) is False
    assert box.run(read_value) is False
