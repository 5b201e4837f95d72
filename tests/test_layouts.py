"""`--layout`: an LMS's download (Canvas, Moodle, GitHub Classroom, Gradescope), its folder or its zip,
read into one entry per student; the gradebook gives the grades back in the LMS's own ids."""

from __future__ import annotations

import csv
import io
import os
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from rich.console import Console

import grader.batch.executors as executors_module
import grader.batch.run as run_module
from grader.batch import LAYOUT_CHOICES
from grader.batch.executors import LocalExecutor
from grader.batch.gradebook import write_gradebook
from grader.batch.late import Deadline, hand_in_times, parse_time
from grader.batch.layouts import read_hand_ins, recognize
from grader.batch.outcomes import BatchResult
from grader.batch.run import BatchOptions, run_batch
from grader.cli import main
from grader.errors import UserError
from grader.report import build_report
from grader.runner import Run
from grader.spec import LatePolicy
from tests.kit import spec_of
from tests.test_batch import DRY_RUN, collected_once
from tests.test_gradebook import class_of_five, read_csv

SPEC = spec_of("assignment2")  # two files, lenet.py and training.py: the smallest hand-in in two files
REFERENCE = {file: (SPEC.reference_dir / file).read_text() for file in SPEC.files}
STARTER = {file: (SPEC.starter_dir / file).read_text() for file in SPEC.files}
LONG_AGO = datetime(2025, 3, 1, tzinfo=timezone.utc).timestamp()  # the files' times: before any deadline here


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
        os.utime(folder / name, (LONG_AGO, LONG_AGO))
    return folder


def zipped(folder: Path, archive: Path, under: str = "") -> Path:
    """`folder`'s files in a zip, as an LMS gives its download (`under`: a folder wrapping them)."""
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.rglob("*")):
            out.write(path, under + path.relative_to(folder).as_posix())
    return archive


# --- the downloads, as each LMS gives them --------------------------------------------------------


def canvas(folder: Path) -> Path:
    """Three students, two files each: nguyenvanan handed lenet.py in again (`lenet-1.py`, the
    reference, replaces the starter's), tranthib late; and a file of nobody's."""
    return write(
        folder,
        {
            "nguyenvanan_10234_556677_lenet.py": STARTER["lenet.py"],
            "nguyenvanan_10234_556678_training.py": REFERENCE["training.py"],
            "nguyenvanan_10234_556690_lenet-1.py": REFERENCE["lenet.py"],
            "tranthib_LATE_10235_556680_lenet.py": REFERENCE["lenet.py"],
            "tranthib_LATE_10235_556681_training.py": REFERENCE["training.py"],
            "levanc_10236_556682_lenet.py": STARTER["lenet.py"],
            "levanc_10236_556683_training.py": STARTER["training.py"],
            "grading-notes.txt": "not a hand-in",
        },
    )


def moodle_folders(folder: Path) -> Path:
    """Moodle with "download submissions in folders": a folder per participant, an online text beside."""
    return write(
        folder,
        {
            **{f"Nguyễn Văn An_5501_assignsubmission_file_/{f}": text for f, text in REFERENCE.items()},
            **{f"Trần Thị Bình_5502_assignsubmission_file_/{f}": text for f, text in STARTER.items()},
            "Trần Thị Bình_5502_assignsubmission_onlinetext_/onlinetext.html": "<p>done</p>",
        },
    )


def moodle_flat(folder: Path) -> Path:
    return write(
        folder,
        {
            **{f"Nguyễn Văn An_5501_assignsubmission_file_{f}": text for f, text in REFERENCE.items()},
            "Lê Văn Cường_5503_assignsubmission_file_lenet.py": STARTER["lenet.py"],
        },
    )


def classroom(folder: Path) -> Path:
    """gh classroom clone student-repos: `<assignment>-submissions/<assignment>-<login>/`, each a repository."""
    write(folder, {f"assignment2-{login}/{f}": REFERENCE[f] for login in ("alice", "bob-smith") for f in SPEC.files})
    for login in ("alice", "bob-smith"):
        (folder / f"assignment2-{login}" / ".git").mkdir()
    return folder


GRADESCOPE_METADATA = """\
submission_101:
  :submitters:
  - :name: Nguyen Van An
    :sid: '20250001'
    :email: an@example.edu
  :created_at: 2025-03-14 23:00:00.123456789 +0700
  :score: 10.0
  :history: []
submission_102:
  :submitters:
  - :name: Tran Thi Binh
    :sid: '20250002'
    :email: binh@example.edu
  - :name: Le Van Cuong
    :sid:
    :email: cuong@example.edu
  :created_at: 2025-03-16 05:59:00.000000000 +07:00
  :score: !ruby/object:BigDecimal 18:0.8e1
submission_103:
  :submitters:
  - :name: "Mallory \\e[31m"
    :sid: ../../etc/passwd
    :email: m@example.edu
  :created_at: 2025-03-14 20:00:00 +07:00
"""


def gradescope(folder: Path) -> Path:
    """Gradescope's export: a folder per submission (one a group's) and submission_metadata.yml; and a
    folder the metadata does not name."""
    write(folder, {f"submission_{n}/{f}": REFERENCE[f] for n in (101, 102, 103, 104) for f in SPEC.files})
    (folder / "submission_metadata.yml").write_text(GRADESCOPE_METADATA)
    return folder


# --- recognizing a layout ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "layout"),
    [
        (canvas, "canvas"),
        (lambda f: zipped(canvas(f / "files"), f / "submissions.zip"), "canvas"),
        (moodle_folders, "moodle"),
        (moodle_flat, "moodle"),
        (lambda f: zipped(moodle_folders(f / "files"), f / "moodle.zip"), "moodle"),
        (lambda f: classroom(f / "assignment2-submissions"), "classroom"),
        (gradescope, "gradescope"),
        (lambda f: zipped(gradescope(f / "files"), f / "export.zip", "assignment_4521_export/"), "gradescope"),
        (lambda f: write(f, {"alice/lenet.py": "", "bob.zip": "", "cy.py": "", "notes.txt": ""}), "folders"),
        (lambda f: write(f, {"student-01/lenet.py": "", "student-02/lenet.py": ""}), "folders"),  # no repositories
        (lambda f: write(f, {"ana.py": "", "bao.py": "", "cy_1_2_lenet.py": ""}), "folders"),  # one name alone
    ],
    ids=[
        "canvas",
        "canvas zip",
        "moodle folders",
        "moodle flat",
        "moodle zip",
        "classroom",
        "gradescope",
        "gradescope zip",
        "folders",
        "folders sharing a prefix",
        "folders with one canvas-like name",
    ],
)
def test_each_layout_is_recognized_by_its_names(tmp_path, make, layout):
    assert recognize(make(tmp_path)) == layout


# --- reading each layout ---------------------------------------------------------------------------


def staged(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(path.iterdir())}


def test_canvas_keeps_the_latest_version_of_each_file_under_its_own_name_and_who_is_late(tmp_path):
    download = read_hand_ins(canvas(tmp_path / "canvas"), "auto", tmp_path / "staging")
    assert download.layout == "canvas"
    assert [e.id for e in download.entries] == ["10234", "10235", "10236"]
    assert download.names == {"10234": "nguyenvanan", "10235": "tranthib", "10236": "levanc"}
    assert download.late == ["10235"] and download.unattributed == ["grading-notes.txt"]
    first = download.entries[0].path
    assert first.is_relative_to(tmp_path / "staging") and staged(first) == REFERENCE  # lenet-1.py, as lenet.py
    assert download.lines() == [
        "read as a canvas download: 3 students; marked late by Canvas: tranthib (10235)",
        "not attributed to a student, left aside: grading-notes.txt",
    ]
    times = hand_in_times(download.entries, download.beside)  # the files' own times, kept
    assert set(times.values()) == {datetime.fromtimestamp(LONG_AGO, timezone.utc)}

    again = write(tmp_path / "again", {"an_7_1_lenet.py": "1", "an_7_3_lenet-2.py": "3", "an_7_2_lenet-1.py": "2"})
    (only,) = read_hand_ins(again, "canvas", tmp_path / "staging").entries
    assert staged(only.path) == {"lenet.py": "3"}  # the highest number is the latest


def test_a_canvas_zip_reads_as_its_folder_does(tmp_path):
    folder = read_hand_ins(canvas(tmp_path / "files"), "canvas", tmp_path / "one")
    archive = read_hand_ins(zipped(tmp_path / "files", tmp_path / "submissions.zip"), "auto", tmp_path / "two")
    assert archive.layout == "canvas" and archive.beside == tmp_path  # submissions.csv: beside the zip
    assert [(e.id, staged(e.path)) for e in archive.entries] == [(e.id, staged(e.path)) for e in folder.entries]
    assert (archive.names, archive.late, archive.unattributed) == (folder.names, folder.late, folder.unattributed)
    assert all(e.path.is_relative_to(tmp_path / "two") for e in archive.entries)


def test_a_student_who_hands_in_one_zip_or_notebook_is_read_from_it(tmp_path):
    write(tmp_path / "d", {"an_7_1_submission.zip": "zip", "bao_8_2_work.ipynb": "{}", "cy_9_3_lenet.py": ""})
    paths = {e.id: e.path for e in read_hand_ins(tmp_path / "d", "canvas", tmp_path / "s").entries}
    assert (paths["7"].name, paths["8"].name, paths["9"].name) == ("submission.zip", "work.ipynb", "9")


def test_moodle_reads_a_folder_per_participant_or_their_flat_files(tmp_path):
    folders = read_hand_ins(moodle_folders(tmp_path / "folders"), "auto", tmp_path / "s1")
    assert folders.layout == "moodle" and [e.id for e in folders.entries] == ["5501", "5502"]
    assert folders.names == {"5501": "Nguyễn Văn An", "5502": "Trần Thị Bình"}
    assert folders.entries[0].path == tmp_path / "folders" / "Nguyễn Văn An_5501_assignsubmission_file_"  # as it is
    assert folders.unattributed == ["Trần Thị Bình_5502_assignsubmission_onlinetext_"]
    flat = read_hand_ins(moodle_flat(tmp_path / "flat"), "auto", tmp_path / "s2")
    assert [(e.id, staged(e.path)) for e in flat.entries] == [
        ("5501", REFERENCE),
        ("5503", {"lenet.py": STARTER["lenet.py"]}),
    ]
    assert flat.names["5503"] == "Lê Văn Cường"


def test_classroom_names_each_repository_by_its_login(tmp_path):
    download = read_hand_ins(classroom(tmp_path / "assignment2-submissions"), "auto", tmp_path / "s")
    assert download.layout == "classroom" and [e.id for e in download.entries] == ["alice", "bob-smith"]
    write(tmp_path / "cloned", {f"a2-{login}/lenet.py": "" for login in ("ann", "bao", "cy")})
    plain = read_hand_ins(tmp_path / "cloned", "classroom", tmp_path / "s")  # named: no .git needed
    assert [e.id for e in plain.entries] == ["ann", "bao", "cy"]


def test_gradescope_names_each_submitter_by_sid_with_the_time_it_states(tmp_path):
    download = read_hand_ins(gradescope(tmp_path / "export"), "auto", tmp_path / "s")
    ids = [e.id for e in download.entries]
    assert download.layout == "gradescope"
    assert ids == ["20250001", "20250002", "_.._.._etc_passwd", "cuong@example.edu"]  # a group: each member
    paths = {e.id: e.path.name for e in download.entries}
    assert paths["20250002"] == paths["cuong@example.edu"] == "submission_102"
    assert download.unattributed == ["submission_104"]  # the metadata names no one for it
    assert download.names["20250002"] == "Tran Thi Binh" and "\x1b" not in download.names["_.._.._etc_passwd"]
    seven = timezone(timedelta(hours=7))
    assert download.handed_in["20250001"] == datetime(2025, 3, 14, 23, 0, 0, 123456, tzinfo=seven)
    assert download.handed_in["cuong@example.edu"] == datetime(2025, 3, 16, 5, 59, tzinfo=seven)
    wrapped = zipped(tmp_path / "export", tmp_path / "export.zip", "assignment_4521_export/")
    assert [e.id for e in read_hand_ins(wrapped, "auto", tmp_path / "z").entries] == ids


def test_gradescope_metadata_is_read_safely(tmp_path):
    export = gradescope(tmp_path / "export")
    (export / "submission_metadata.yml").write_text(
        "submission_101: !!python/object/apply:os.system ['touch " + str(tmp_path / "ran") + "']\n"
    )
    with pytest.raises(UserError, match=r"submission_metadata\.yml cannot be read \(could not determine a constructor"):
        read_hand_ins(export, "gradescope", tmp_path / "s")
    assert not (tmp_path / "ran").exists()


def test_gradescope_without_pyyaml_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(UserError, match=r"needs PyYAML: pip install pyyaml$"):
        read_hand_ins(gradescope(tmp_path / "export"), "gradescope", tmp_path / "s")


def test_a_zip_with_a_path_out_of_its_folder_is_refused_in_one_line(tmp_path, capsys):
    for evil in ("../escaped.py", "/tmp/escaped-absolute.py", "a/../../escaped.py"):
        archive = tmp_path / "download.zip"
        with zipfile.ZipFile(archive, "w") as out:
            out.writestr("an_7_1_lenet.py", "")
            out.writestr(zipfile.ZipInfo(evil), "import os")
        with pytest.raises(UserError, match=r"would be unpacked outside its folder: the zip is refused$"):
            read_hand_ins(archive, "auto", tmp_path / "out" / "staging")
        assert not list(tmp_path.rglob("escaped*")) and not (tmp_path / "out" / "staging").exists()
        assert not Path("/tmp/escaped-absolute.py").exists()
        args = ["batch", "assignment2", str(archive), "--out", str(tmp_path / "gradebook"), "--layout", "canvas"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "the zip is refused" in err and err.count("\n") == 1, err
    assert not (tmp_path / "gradebook" / "grades.csv").exists()


def test_a_link_in_a_zip_is_not_unpacked_but_listed(tmp_path):
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("an_7_1_lenet.py", "x = 1\n")
        link = zipfile.ZipInfo("an_7_2_training.py")
        link.external_attr = (0o120777 << 16) | 0x20  # a symbolic link to /etc/passwd
        out.writestr(link, "/etc/passwd")
    download = read_hand_ins(archive, "auto", tmp_path / "staging")
    assert [(e.id, staged(e.path)) for e in download.entries] == [("7", {"lenet.py": "x = 1\n"})]
    assert download.unattributed == ["an_7_2_training.py (a link)"]


def test_stated_times_come_first_then_submissions_csv(tmp_path):
    download = read_hand_ins(gradescope(tmp_path / "export"), "gradescope", tmp_path / "s")
    assert hand_in_times(download.entries, download.beside, download.handed_in) == download.handed_in
    entries = read_hand_ins(canvas(tmp_path / "canvas"), "canvas", tmp_path / "s").entries
    (tmp_path / "canvas" / "submissions.csv").write_text("id,time\n10235,2025-03-16T05:59+07:00\n")
    stated = {"10234": parse_time("2025-03-14T20:00+07:00", "x"), "10236": parse_time("2025-03-14T21:00+07:00", "x")}
    times = hand_in_times(entries, tmp_path / "canvas", stated)
    assert times == {**stated, "10235": parse_time("2025-03-16T05:59+07:00", "x")}
    with pytest.raises(UserError, match=r"no time for 10236 "):
        hand_in_times(entries, tmp_path / "canvas", {"10234": stated["10234"]})


def test_the_layouts_of_the_command_line_are_the_readers():
    assert LAYOUT_CHOICES == ("auto", "folders", "canvas", "moodle", "classroom", "gradescope")


# --- graded end to end -------------------------------------------------------------------------------


def graded(download: Path, tmp_path: Path, **batch) -> tuple[BatchResult, Path, str]:
    said = Console(file=io.StringIO(), width=300)
    out = tmp_path / "gradebook"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "_collect", collected_once)
        result = run_batch(SPEC, download, out, DRY_RUN, BatchOptions(workers=2, console=said, **batch))
    return result, out, said.file.getvalue()


@pytest.fixture(scope="module")
def canvas_batch(tmp_path_factory) -> tuple[BatchResult, Path, str]:
    folder = tmp_path_factory.mktemp("canvas")
    return graded(canvas(folder / "download"), folder)


@pytest.fixture(scope="module")
def moodle_batch(tmp_path_factory) -> tuple[BatchResult, Path, str]:
    folder = tmp_path_factory.mktemp("moodle")
    return graded(moodle_folders(folder / "download"), folder)


def test_a_canvas_download_is_graded_under_the_canvas_user_ids(canvas_batch):
    result, out, said = canvas_batch
    assert [(o.id, o.report.score, o.status) for o in result.outcomes] == [
        ("10234", 2, "graded"),  # lenet-1.py, the reference, replaced the starter's lenet.py
        ("10235", 2, "graded"),
        ("10236", 0, "graded"),
    ]
    assert said.startswith(
        "read as a canvas download: 3 students; marked late by Canvas: tranthib (10235)\n"
        "not attributed to a student, left aside: grading-notes.txt\n"
    )
    rows = read_csv(out / "canvas.csv")
    assert [row[:2] for row in rows[2:]] == [["nguyenvanan", "10234"], ["tranthib", "10235"], ["levanc", "10236"]]
    assert [row[-1] for row in rows[2:]] == ["2", "2", "0"]
    assert sorted(p.name for p in (out / "students").iterdir()) == ["10234", "10235", "10236"]
    assert not (out / "moodle_worksheet.csv").exists()
    again, _, _ = graded(out.parent / "download", out.parent)  # put together again, the same: nobody graded again
    assert [o.resumed for o in again.outcomes] == [True, True, True]


def test_a_moodle_download_is_graded_and_given_back_in_its_grading_worksheet(moodle_batch):
    result, out, said = moodle_batch
    assert [(o.id, o.report.score) for o in result.outcomes] == [("5501", 2), ("5502", 0)]
    assert said.startswith("read as a moodle download: 2 students\n")
    with (out / "moodle_worksheet.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["Identifier"], r["Full name"], r["Grade"], r["Maximum Grade"]) for r in rows] == [
        ("Participant 5501", "Nguyễn Văn An", "2", "2"),
        ("Participant 5502", "Trần Thị Bình", "0", "2"),
    ]
    assert list(rows[0]) == [
        "Identifier",
        "Full name",
        "Email address",
        "Status",
        "Grade",
        "Maximum Grade",
        "Grade can be changed",
        "Last modified (submission)",
        "Last modified (grade)",
        "Feedback comments",
    ]
    assert all(r["Last modified (grade)"] and r["Feedback comments"] == "" for r in rows)


def test_the_worksheet_gives_no_grade_where_the_grader_failed_and_the_late_note(tmp_path):
    write_gradebook(tmp_path, class_of_five(), names={"ada": "Ada L."}, layout="moodle")
    rows = {row[0]: row for row in read_csv(tmp_path / "moodle_worksheet.csv")[1:]}
    assert rows["Participant ada"][1:2] == ["Ada L."] and rows["Participant ada"][4:6] == ["10", "10"]
    assert rows["Participant eve"][4] == rows["Participant eve"][8] == ""  # no grade yet: none to import
    assert rows["Participant cy"][9].startswith("handed in 2 days late")
    assert read_csv(tmp_path / "canvas.csv")[2][:2] == ["Ada L.", "ada"]


def test_gradescope_times_decide_the_late_days(tmp_path, monkeypatch):
    def fake_grade(spec, folder, options, env, cancel, label, worker):
        test = {"nodeid": "t.py::test_a", "name": "a", "points": 2.0, "tasks": [], "accuracy": False, "hidden": False}
        result = {"t.py::test_a": {"outcome": "passed", "reason": "", "output": "", "duration_s": 0.1}}
        return build_report(spec, Run(session={"profile": "quick"}, collected=[test], results=result), label)

    monkeypatch.setattr(executors_module, "grade", fake_grade)
    monkeypatch.setattr(run_module, "_collect", collected_once)
    export = gradescope(tmp_path / "export")
    for path in export.rglob("*.py"):  # handed in, by the files, long after any deadline
        os.utime(path, None)
    due = Deadline(parse_time("2025-03-14T23:59+07:00", "--deadline"), LatePolicy(0.1, 3))
    with LocalExecutor(1) as executor:
        result = run_batch(
            SPEC,
            export,
            tmp_path / "out",
            DRY_RUN,
            BatchOptions(executor=executor, console=Console(file=io.StringIO()), deadline=due),
        )
    late = {o.id: o.report.late["days"] for o in result.outcomes}
    assert late == {"20250001": 0, "20250002": 2, "_.._.._etc_passwd": 0, "cuong@example.edu": 2}
    assert result.outcomes[0].report.late["submitted_at"] == "2025-03-14T23:00:00+07:00"


def test_similarity_reads_a_download_as_the_batch_does(tmp_path, capsys):
    pytest.importorskip("copydetect")
    download = zipped(canvas(tmp_path / "files"), tmp_path / "submissions.zip")
    assert main(["similarity", "assignment2", str(download), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr()
    assert "read as a canvas download: 3 students" in printed.err
    pairs = {tuple(row[:2]) for row in read_csv(tmp_path / "out" / "pairs.csv")[1:]}
    assert pairs == {("10234", "10235"), ("10234", "10236"), ("10235", "10236")}
