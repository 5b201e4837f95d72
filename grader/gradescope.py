"""`grade gradescope <assignment> --out autograder.zip`: the assignment as a Gradescope autograder.

The zip follows Gradescope's autograder specification
(https://gradescope-autograders.readthedocs.io/en/latest/specs/): Gradescope unpacks it into
/autograder/source, runs setup.sh once to build the image, copies run_autograder to
/autograder/run_autograder and runs that for every submission.

    setup.sh             bubblewrap, a venv with the CPU build of PyTorch, and the kit (`pip install .`)
    run_autograder       grades /autograder/submission, writes /autograder/results/results.json
    autograder.json      the assignment and the grading options chosen when the zip was made
    .grade/secret        the course's secret (grader/seeding.py): each hand-in's seed, as `grade batch` draws it
    pyproject.toml  grader/  starter/<assignment>/  assignments/   the student bundle (grader/release.py) ...
    assignments/<assignment>/hidden/ ...                            ... with the hidden tests added

The student bundle holds the grader, the public tests, the starter and the table of blanks; the
autograder adds the rest of the assignment's folder (the hidden tests first of all). The reference
never goes in: the blanks come from the bundle's table. Gradescope shows results.json, rendered
from the report like every other format (`render.gradescope`): hidden tests become visible once
grades are published, with only their points unless the zip was made with `--show-hidden`.

Gradescope runs each submission in a fresh container. Inside it the kit's sandbox still keeps
student code from the tests, unless the container refuses bubblewrap: then the autograder fails
(its output says why) unless it was made with `--allow-unisolated`, which every report records.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import zipfile
from importlib.metadata import version
from pathlib import Path

import grader
from grader import render
from grader.environment import GRADESCOPE_ENV
from grader.errors import GraderError, SubmissionProblem, UserError
from grader.options import GradingOptions
from grader.release import bundle_requirements, data_install, kit_project, release, render_template
from grader.seeding import SECRET_FILE, course_secret
from grader.spec import Spec, load_spec

CONFIG = "autograder.json"
SCRIPTS = {"setup.sh": "gradescope-setup.sh", "run_autograder": "gradescope-run_autograder"}
_FROM_BUNDLE = ("pyproject.toml", "grader", "assignments", "starter")  # not its README, CI workflow or notebook
_SKIPPED = ("__pycache__", ".pytest_cache", ".ipynb_checkpoints")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # every member's date: the same kit gives the same zip


def build(spec: Spec, out: Path, options: GradingOptions) -> list[str]:
    """Write the autograder of `spec` to the zip `out` (replaced if it exists); return its members."""
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder, give a file name (autograder.zip)")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: the folder {out.parent} does not exist")
    values = {
        "assignment": spec.name,
        "version": grader.__version__,
        "root_env": GRADESCOPE_ENV,
        "torch": " ".join(f"{name}=={_release_of(name)}" for name in ("torch", "torchvision")),
        "data_install": data_install(bundle_requirements(spec, kit_project(spec.root))[1], pip=".venv/bin/pip"),
    }
    members: dict[str, bytes] = {name: render_template(template, values).encode() for name, template in SCRIPTS.items()}
    config = {"assignment": spec.name, "options": json.loads(options.to_json())}
    members[CONFIG] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    # the course's secret: a hand-in gets the seed, so the grade, that `grade batch` gives it (never in a bundle)
    members[SECRET_FILE.as_posix()] = course_secret(spec.root)
    with tempfile.TemporaryDirectory(prefix="grader-autograder-") as scratch:
        bundle = Path(scratch) / "bundle"
        release(spec, bundle)
        for name in _FROM_BUNDLE:
            members.update(_files(bundle / name, name))
        members.update(_files(spec.folder, f"assignments/{spec.name}"))
    partial = out.with_name(f".{out.name}.partial")  # a zip is whole or not there
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in sorted(members):
                info = zipfile.ZipInfo(name, _EPOCH)
                mode = 0o100755 if name in SCRIPTS else 0o100600 if name == SECRET_FILE.as_posix() else 0o100644
                info.external_attr = mode << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, members[name])
        os.replace(partial, out)
    except OSError as failure:
        raise UserError(f"--out {out}: cannot write it ({failure.strerror})") from None
    return sorted(members)


def _files(source: Path, prefix: str) -> dict[str, bytes]:
    """The files under `source` (or `source` itself), by their name in the zip."""
    if source.is_file():
        return {prefix: source.read_bytes()}
    return {
        f"{prefix}/{path.relative_to(source).as_posix()}": path.read_bytes()
        for path in sorted(source.rglob("*"))
        if path.is_file() and path.suffix != ".pyc" and not set(_SKIPPED) & set(path.parts)
    }


def _release_of(package: str) -> str:
    """The installed version of `package`, without its local part (2.14.1+cu128 is 2.14.1 on the CPU index)."""
    return version(package).split("+")[0]


def submission_folder(folder: Path, spec: Spec) -> Path:
    """What to grade in Gradescope's submission folder: the files themselves, or, in a repository made
    from the student bundle (a GitHub submission), its starter folder, as the bundle's CI grades it."""
    released = folder / "starter" / spec.name
    if released.is_dir() and not any((folder / file).is_file() for file in spec.files):
        return released
    return folder


def run_autograder(root: Path) -> None:
    """Grade root/submission with the kit in root/source; write root/results/results.json.

    A submission that cannot be read gets 0 and the reason. Where the grader itself fails, no
    results.json is written, so that Gradescope shows the run as failed and it can be run again.
    """
    from rich.console import Console

    from grader.grading import grade
    from grader.sandbox import platform

    source = root / "source"
    config = json.loads((source / CONFIG).read_text())
    spec = load_spec(config["assignment"], source)
    options = GradingOptions(**config["options"])
    if not options.allow_unisolated and platform.mechanism() == platform.NONE:
        raise GraderError(
            "this container refuses the sandbox (bubblewrap), so student code would run unisolated: "
            "make the autograder with `grade gradescope --allow-unisolated` to grade anyway"
        )
    try:
        report = grade(spec, submission_folder(root / "submission", spec), options)
    except SubmissionProblem as problem:
        results = {"score": 0, "output": f"the submission cannot be graded: {problem}", "tests": []}
    else:
        render.terminal(report, Console(), options.show_hidden)  # Gradescope's stdout: for the staff only
        broken = report.sandbox_failures()
        if broken:
            raise GraderError(f"the sandbox failed in {len(broken)} tests ({', '.join(broken)}): run it again")
        results = render.gradescope(report, options.show_hidden)
    (root / "results").mkdir(exist_ok=True)
    (root / "results" / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> int:
    """`python -m grader.gradescope ROOT`, from run_autograder: exit 0 with results.json, else 3."""
    try:
        run_autograder(Path(argv[0]))
    except (UserError, GraderError) as failure:
        print(f"grader error: {failure}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
