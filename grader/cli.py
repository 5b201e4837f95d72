"""The `grade` command.

    grade list
    grade <assignment> [--submission PATH] [--profile quick|full|auto] [--json F] [--markdown F]
                       [--junit F] [--html F] [--fail-under PCT] [--select EXPR] [--marks EXPR] [--seed N]
                       [--lang en|vi]
    grade batch <assignment> <submissions> --out DIR [--workers N] [--timeout S] [--only ID] [--failed]
                [--force] [--seed N] [--deadline TIME [--late-policy RULE] | --no-deadline] [--canvas-assignment ID]
                [--executor local|ray [--address ADDR]] [--lang en|vi]
                [--layout auto|folders|canvas|moodle|classroom|gradescope]
    grade release <assignment> --out DIR
    grade notebook <assignment> [--out F]
    grade calibrate <assignment> [--profile quick|full] [--seeds N] [--workers N] [--device cpu|cuda] [--select EXPR]
    grade review <assignment> GRADEBOOK [--port N] [--grader NAME] [--lang en|vi]
    grade similarity <assignment> <submissions> --out DIR [--top N] [--layout auto|folders|canvas|...]
    grade course COURSE.toml --out DIR
    grade gradescope <assignment> --out autograder.zip
    grade data list | fetch NAME | import NAME PATH   [--data-dir DIR]
    grade doctor [ASSIGNMENT] [--profile quick|full|auto] [--data-dir DIR]

A report file F may be `-`: standard output (the table then goes to standard error). In a student
bundle, batch, calibrate, release, review and course are refused: they need the kit or its gradebooks.

Exit codes: 0 graded, 1 below --fail-under (grade doctor: the profile cannot run here), 2 a mistake
in the command or the submission, 3 the grader itself is broken.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from grader import render, render_html
from grader.batch import LAYOUT_CHOICES
from grader.errors import GraderError, UserError
from grader.options import GradingOptions, parse_limits
from grader.spec import LatePolicy, Spec, assignment_names, did_you_mean, find_root, load_spec

if TYPE_CHECKING:
    from grader.batch.late import Deadline

EXIT_BELOW_THRESHOLD = 1
EXIT_NOT_READY = 1  # grade doctor: the profile asked for cannot run here
EXIT_USAGE = 2
EXIT_GRADER_BROKEN = 3


INSTRUCTOR_COMMANDS = ("batch", "calibrate", "release", "review", "course")  # the kit, or a batch's gradebooks
STDOUT = Path("-")  # `--json -`: the report on standard output


class AssignmentGroup(click.Group):
    """Subcommands, plus one grading command per assignment: `grade assignment2`. In a student bundle,
    the instructors' commands are neither listed nor run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        return [n for n in names if n not in INSTRUCTOR_COMMANDS] if _in_bundle() else names

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in INSTRUCTOR_COMMANDS and _in_bundle():
            raise UserError(f"`grade {name}` is an instructor's command: it needs the course kit, not a student bundle")
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        known = assignment_names(find_root())
        if name not in known:
            hint = did_you_mean(name, known + self.list_commands(ctx))
            raise UserError(f"unknown assignment '{name}'{hint} (known: {', '.join(known) or 'none'})")
        return _grade_command(name)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        try:
            names = ", ".join(assignment_names(find_root()))
        except UserError:
            names = "(none found here)"
        formatter.write_paragraph()
        formatter.write_text(f"Assignments: {names}. Run `grade ASSIGNMENT --help` for its options.")


@click.group(cls=AssignmentGroup)
@click.version_option(package_name="cnn-assignment-kit")
def cli() -> None:
    """Grade convolutional-network assignments: `grade list`, then `grade assignment2`."""


def _in_bundle() -> bool:
    from grader.blanks import is_bundle

    try:
        return is_bundle(find_root())
    except UserError:  # not in a kit at all: a command will say so
        return False


@cli.command("list")
def list_assignments() -> None:
    """The assignments, with their points."""
    from grader.runner import collect

    root = find_root()
    specs = [load_spec(name, root) for name in assignment_names(root)]
    run = collect(root, specs)
    if run.collected is None or run.collect_errors:
        raise GraderError(f"the tests could not be collected:\n{run.log_tail}")
    points: dict[str, float] = {}
    counts: dict[str, int] = {}
    for test in run.collected:
        name = test["nodeid"].split("/", 1)[0]
        points[name] = points.get(name, 0.0) + test["points"]
        counts[name] = counts.get(name, 0) + 1
    table = Table(show_edge=False, pad_edge=False)
    for column in ("assignment", "title", "tests", "points", "files"):
        table.add_column(column)
    for spec in specs:
        table.add_row(
            spec.name, spec.title, str(counts.get(spec.name, 0)), f"{points.get(spec.name, 0):g}", ", ".join(spec.files)
        )
    Console().print(table)


@cli.command("calibrate")
@click.argument("assignment")
@click.option("--profile", type=click.Choice(["quick", "full"]), default="quick", show_default=True)
@click.option("--seeds", type=click.IntRange(1, 1000), default=10, show_default=True, help="How many seeds (0..N-1).")
@click.option("--workers", type=click.IntRange(1, 512), default=1, show_default=True, help="Seeds run at once.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Instead of the profile's own device.")
@click.option("--select", metavar="EXPR", help="Only the accuracy tests matching this -k expression.")
def calibrate_command(
    assignment: str, profile: str, seeds: int, workers: int, device: str | None, select: str | None
) -> None:
    """Run the reference's accuracy tests over many seeds, to set a threshold."""
    from grader.calibrate import calibration_runs, summary

    spec = load_spec(assignment)
    console = Console()
    runs = []
    for run in calibration_runs(spec, profile, range(seeds), workers, device, select):
        runs.append(run)
        values = ", ".join(f"{name}: {acc:.2%}" for name, acc in run.accuracies.items())
        console.print(f"seed {run.seed:3d}  {values}  ({run.duration_s:.1f} s)")
    thresholds = {name: value for run in runs for name, value in run.thresholds.items()}
    for name, stats in summary(runs).items():
        now = f"; threshold now {thresholds[name]:.0%}" if name in thresholds else ""
        console.print(
            f"[bold]{name}[/]: {stats['runs']} runs, min {stats['min']:.2%}, mean {stats['mean']:.2%}, "
            f"max {stats['max']:.2%}, stdev {stats['stdev']:.2%}{now}"
        )


@cli.command("notebook")
@click.argument("assignment")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Default: ./ASSIGNMENT.ipynb.")
def notebook_command(assignment: str, out: Path | None) -> None:
    """Write the starter as a Jupyter notebook, for students who work in Jupyter or Colab."""
    from grader.notebook import write_notebook

    click.echo(f"wrote {write_notebook(load_spec(assignment), out or Path(f'{assignment}.ipynb'))}")


@cli.command("release")
@click.argument("assignment")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="A new or empty folder.")
def release_command(assignment: str, out: Path) -> None:
    """Write the student bundle: starter, public tests, grader, README, CI (no reference, no hidden test)."""
    from grader.release import release

    files = release(load_spec(assignment), out)
    click.echo(f"wrote {len(files)} files to {out}")


PROFILE = click.option(
    "--profile", type=click.Choice(["quick", "full", "auto"]), default="auto", show_default=True
)  # `grade`, `grade batch`, `grade gradescope` and `grade doctor`: one profile option


def grading_options(command: Any) -> Any:
    """The options that decide how a submission is graded, declared once for `grade` and `grade batch`."""
    shared = (
        PROFILE,
        click.option(
            "--data-dir", type=click.Path(file_okay=False), help="Where the datasets are (default: $GRADER_DATA_DIR)."
        ),
        click.option(
            "--device",
            type=click.Choice(["cpu", "cuda"]),
            help="Run the profile on this device instead of its own (--profile full --device cpu: no GPU needed).",
        ),
        click.option("--select", metavar="EXPR", help="Only the tests matching a pytest -k expression (e.g. 'lenet')."),
        click.option("--marks", metavar="EXPR", help="Only the tests matching a pytest -m expression: 'not accuracy'."),
        click.option("--show-hidden", is_flag=True, help="Show the details of hidden tests in the reports."),
        click.option(
            "--seed",
            type=int,
            help="The seed the inputs are drawn from (default: each hand-in's own, from the course's secret).",
        ),
        click.option(
            "--lang",
            type=click.Choice(["en", "vi"]),
            help="The language of reasons, titles and reports (default: the spec's, else the locale's, else en).",
        ),
    )
    for option in reversed(shared):
        command = option(command)
    return command


GRADING_OPTION_NAMES = ("profile", "data_dir", "device", "select", "marks", "show_hidden", "seed", "lang")


def options_for(spec: Spec, chosen: dict[str, Any], **more: Any) -> GradingOptions:
    """The GradingOptions of the `grading_options` in `chosen` (taken out of it) and a command's own
    `more`, in the language they choose."""
    from grader import i18n

    picked = {name: chosen.pop(name) for name in GRADING_OPTION_NAMES}
    picked["lang"] = picked["lang"] or i18n.default_language(spec.language)
    options = GradingOptions(**picked, **more)
    i18n.use(options.lang)  # the table, the summary and the report files
    return options


def layout_option(command: Any) -> Any:
    """--layout of `grade batch` and `grade similarity`: how the hand-ins were given (grader.batch.layouts)."""
    return click.option(
        "--layout",
        type=click.Choice(LAYOUT_CHOICES),
        default="auto",
        show_default=True,
        help="One entry per student (folders), or an LMS's download, its folder or .zip: canvas, moodle, "
        "classroom (gh classroom clone), gradescope (its export); auto recognizes them by their names.",
    )(command)


SUBMISSIONS = click.argument("submissions", type=click.Path(exists=True, path_type=Path))  # a folder, or a .zip


@cli.command("batch")
@click.argument("assignment")
@SUBMISSIONS
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="The gradebook's folder.")
@layout_option
@click.option(
    "--workers",
    type=click.IntRange(1, 512),
    help="Submissions graded at once (default: cores and memory; with Ray, what the cluster's nodes hold).",
)
@click.option("--timeout", type=click.FloatRange(1), help="Seconds per submission (default: the spec's).")
@click.option("--limit", "limits", multiple=True, metavar="NAME=N", help="Override a spec limit: test_timeout_s=30.")
@grading_options
@click.option("--allow-unisolated", is_flag=True, help="Grade even where no sandbox works (recorded in every report).")
@click.option("--only", multiple=True, metavar="ID[,ID]", help="Grade these students again; keep the others as stored.")
@click.option("--failed", is_flag=True, help="Grade again those whose last grading hit a grader error or busy machine.")
@click.option("--force", is_flag=True, help="Grade every student again, even those whose grades are up to date.")
@click.option("--deadline", metavar="TIME", help="ISO-8601 (2025-03-14T23:59+07:00): later hand-ins lose points.")
@click.option("--late-policy", metavar="RULE", help="With --deadline: '10%/day,max 3' (default: the spec's [late]).")
@click.option(
    "--no-deadline", is_flag=True, help="Drop the late penalties (a run without --deadline keeps the last one's)."
)
@click.option("--canvas-assignment", metavar="ID", help="The Canvas assignment's id, for canvas.csv's column.")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Grade on this machine's workers, or one Ray task per submission on a cluster (pip install '.[ray]').",
)
@click.option(
    "--address", metavar="ADDR", help="With --executor ray: the cluster (auto, HOST:PORT; default $RAY_ADDRESS)."
)
def batch_command(
    assignment: str, timeout: float | None, limits: tuple[str, ...], allow_unisolated: bool, **batch: Any
) -> int:
    """Grade a folder of submissions (one per student, or an LMS's download); run it again to grade only what is
    left or changed."""
    overrides = parse_limits(limits)
    if timeout is not None:
        overrides["total_timeout_s"] = timeout
    spec = load_spec(assignment)
    options = options_for(spec, batch, limits=overrides, allow_unisolated=allow_unisolated)
    return grade_batch(spec, options, **batch)


def grade_batch(
    spec: Spec,
    options: GradingOptions,
    submissions: Path,
    out: Path,
    workers: int | None,
    only: tuple[str, ...],
    failed: bool,
    force: bool,
    deadline: str | None,
    late_policy: str | None,
    no_deadline: bool,
    canvas_assignment: str | None,
    executor: str,
    address: str | None,
    layout: str = "auto",
) -> int:
    """`grade batch`, with its GradingOptions built: its flags read (grader.batch.run.BatchOptions), the
    batch run, its summary printed. The batch modules are imported here, not at every start of `grade`."""
    from grader.batch.gradebook import print_summary
    from grader.batch.run import BatchOptions, run_batch
    from grader.batch.where import ray_executor
    from grader.manual import marking_line

    if executor == "ray":
        ray_executor().check_address(address)  # before any test is collected: a mistake costs no time
    elif address is not None:
        raise UserError("--address is the Ray cluster's: give it with --executor ray")
    ids = tuple(i.strip() for item in only for i in item.split(",") if i.strip())  # --only a --only b,c
    console = Console()
    batch = BatchOptions(
        workers=workers,
        where=executor,
        address=address,
        layout=layout,
        only=ids,
        failed=failed,
        force=force,
        deadline=_deadline(spec, deadline, late_policy, no_deadline),
        no_deadline=no_deadline,
        canvas_assignment=canvas_assignment,
        console=console,
    )
    result = run_batch(spec, submissions, out, options, batch)
    print_summary(result, console)
    if spec.questions:  # the last line: what the TAs have left to mark (grade review)
        console.print(marking_line(o.report for o in result.outcomes), markup=False, highlight=False, soft_wrap=True)
    if result.errors:
        names = ", ".join(o.id for o in result.errors)
        raise GraderError(f"{len(result.errors)} submissions could not be graded ({names}): run again to retry them")
    return 0


def _deadline(spec: Spec, deadline: str | None, late_policy: str | None, no_deadline: bool) -> Deadline | None:
    """--deadline with --late-policy, or with the spec's [late]."""
    from grader.batch.late import Deadline, parse_time

    if no_deadline and (deadline is not None or late_policy is not None):
        raise UserError("--no-deadline drops the late penalties: give it without --deadline and --late-policy")
    if deadline is None:
        if late_policy is not None:
            raise UserError("--late-policy needs a --deadline")
        return None
    policy = LatePolicy.parse(late_policy) if late_policy is not None else spec.late
    if policy is None:
        raise UserError(
            f"--deadline needs a late policy: --late-policy '10%/day,max 3', or [late] in {spec.name}'s spec.toml"
        )
    return Deadline(parse_time(deadline, "--deadline"), policy)


@cli.command("review")
@click.argument("assignment")
@click.argument("gradebook", type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="The port on 127.0.0.1 (default: a free one).")
@click.option("--grader", "grader_name", metavar="NAME", envvar="USER", default="", help="Who marks (default: $USER).")
@click.option("--lang", type=click.Choice(["en", "vi"]), help="The page's language (default: the spec's or locale's).")
def review_command(assignment: str, gradebook: Path, port: int, grader_name: str, lang: str | None) -> None:
    """Mark the written answers of a batch's GRADEBOOK in a local web page: one question at a time, by keyboard."""
    from grader import i18n
    from grader.review import Review
    from grader.review_server import serve

    spec = load_spec(assignment)
    i18n.use(lang or i18n.default_language(spec.language))
    serve(Review(spec, gradebook, grader_name), port)


@cli.command("similarity")
@click.argument("assignment")
@SUBMISSIONS
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Where the results go.")
@layout_option
@click.option("--top", type=click.IntRange(0), default=10, show_default=True, help="How many pairs to print.")
def similarity_command(assignment: str, submissions: Path, out: Path, layout: str, top: int) -> None:
    """Rank every two hand-ins by the code they share beyond the starter: DIR/pairs.csv, DIR/report.html."""
    from grader.similarity import PAIRS, REPORT, similarity

    found = similarity(load_spec(assignment), submissions, out, layout)
    for line in found.said:
        click.echo(line, err=True)
    for handin, problem in found.skipped.items():
        click.echo(f"skipped {handin}: {problem}", err=True)
    for pair in found.pairs[:top]:
        click.echo(f"{pair.score:.2f}  {pair.a}  {pair.b}")
    click.echo(f"compared {found.compared} hand-ins: wrote {out / PAIRS} and {out / REPORT}")


@cli.command("course")
@click.argument("course_file", metavar="COURSE.toml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="The term's folder.")
def course_command(course_file: Path, out: Path) -> None:
    """The term's gradebook from the assignments' gradebooks: weights, dropped lowest, a bank of late days."""
    from grader.course import grade_course
    from grader.text import clean

    term, unwritten = grade_course(course_file, out)
    for line in term.problems + unwritten:  # ids are the hand-ins' names: plain text, cleaned again
        click.echo(clean(line, 1000))
    click.echo(
        f"{len(term.students)} students, {len(term.course.assignments)} assignments: "
        f"wrote {out / 'course.csv'}, canvas.csv, moodle.csv and index.html"
    )


@cli.command("gradescope")
@click.argument("assignment")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The zip to write: autograder.zip.")
@PROFILE
@click.option("--show-hidden", is_flag=True, help="Show the details of hidden tests once grades are published.")
@click.option("--allow-unisolated", is_flag=True, help="Grade even where the container refuses the sandbox.")
def gradescope_command(assignment: str, out: Path, profile: str, show_hidden: bool, allow_unisolated: bool) -> None:
    """Write a Gradescope autograder: setup.sh, run_autograder, the kit and the hidden tests (never the reference)."""
    from grader.gradescope import build

    options = GradingOptions(profile=profile, show_hidden=show_hidden, allow_unisolated=allow_unisolated)
    members = build(load_spec(assignment), out, options)
    click.echo(f"wrote {out} ({len(members)} files): the autograder of a Gradescope programming assignment")


@cli.group("data")
def data_group() -> None:
    """The full datasets and weights files the profiles need: list, fetch, import (verified)."""


DATA_DIR = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Default: $GRADER_DATA_DIR, else the cache."
)


def _staged(status: Any) -> None:
    click.echo(f"{status.name}: staged in {status.where}, {_verified(status)} ({status.detail})")


def _verified(status: Any) -> str:
    return {True: "verified", False: "NOT verified", None: "unverified"}[status.verified]


@data_group.command("list")
@DATA_DIR
def data_list(data_dir: Path | None) -> None:
    """Every dataset and weights file the full profiles need: where, present, verified, size."""
    from grader import data, staging

    root = find_root()
    specs = [load_spec(name, root) for name in assignment_names(root)]
    table = Table(show_edge=False, pad_edge=False)
    for column in ("name", "present", "verified", "size", "full profile of"):
        table.add_column(column, no_wrap=column == "name")
    folder = data.data_dir(data_dir)
    for need in staging.needs(specs):
        status = staging.need_status(need, folder)
        verdict = _verified(status) if status.present else "-"
        size = f"{status.size_bytes / 2**20:,.0f} MiB" if status.present else "-"
        users = ", ".join(sorted({used.split()[0] for used in need.used_by}))
        table.add_row(need.name, "yes" if status.present else "no", verdict, size, users)
    Console().print(table)
    click.echo(f"datasets: {folder}\nweights: {staging.weights_folder()}")


@data_group.command("fetch")
@click.argument("name")
@DATA_DIR
def data_fetch(name: str, data_dir: Path | None) -> None:
    """Download a dataset with torchvision (needs internet), then verify it."""
    from grader import data, staging

    root = data.data_dir(data_dir)
    _staged(staging.fetch(name, root))


@data_group.command("import")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@DATA_DIR
def data_import(name: str, path: Path, data_dir: Path | None) -> None:
    """Stage a dataset from PATH: a folder in torchvision's layout or with a CSV pair, an .npz, or a
    wheel, zip or tar archive holding one of these. Verified before anything is written."""
    from grader import data, staging

    root = data.data_dir(data_dir)
    _staged(staging.import_copy(name, path, root))


@cli.command("doctor")
@click.argument("assignment", required=False)
@PROFILE
@DATA_DIR
def doctor_command(assignment: str | None, profile: str, data_dir: Path | None) -> int:
    """Whether this machine can grade, per profile, and what to do where it cannot."""
    from grader.doctor import diagnose

    root = find_root()
    names = [assignment] if assignment else assignment_names(root)
    specs = [load_spec(name, root) for name in names]
    ready = True
    for line in diagnose(specs, profile, data_dir):
        click.echo(line.text)
        ready = ready and line.ok
    return 0 if ready else EXIT_NOT_READY


def _grade_command(name: str) -> click.Command:
    @click.command(name=name, help=f"Grade a submission of {name}.")
    @click.option(
        "--submission", type=click.Path(path_type=Path), help="A folder, .py, .zip or .ipynb (default: the starter)."
    )
    @grading_options
    @click.option(
        "--json", "json_path", type=click.Path(path_type=Path), help="Write the JSON report here (-: standard output)."
    )
    @click.option("--markdown", type=click.Path(path_type=Path), help="Write a Markdown report here (-: stdout).")
    @click.option("--junit", type=click.Path(path_type=Path), help="Write a JUnit XML report here (-: stdout).")
    @click.option("--html", "html_path", type=click.Path(path_type=Path), help="Write an HTML report, with pictures.")
    @click.option("--fail-under", type=click.FloatRange(0, 100), help="Exit 1 when the score is below this percentage.")
    @click.option("--download", is_flag=True, help="Allow downloading missing datasets.")
    @click.option(
        "--watch",
        is_flag=True,
        help="Grade again on every save: the checks that train nothing (`t`: every test once; --marks chooses).",
    )
    def command(
        submission: Path | None,
        json_path: Path | None,
        markdown: Path | None,
        junit: Path | None,
        html_path: Path | None,
        fail_under: float | None,
        download: bool,
        watch: bool,
        **chosen: Any,
    ) -> int:
        from grader.grading import grade
        from grader.progress import LiveProgress

        spec = load_spec(name)
        outputs = {"--json": json_path, "--markdown": markdown, "--junit": junit, "--html": html_path}
        if watch:
            from grader.watch import watch as watch_submission

            given = [flag for flag, path in {**outputs, "--fail-under": fail_under}.items() if path is not None]
            if given:
                raise UserError(f"--watch shows the table only: leave out {', '.join(given)}")
            options = options_for(spec, chosen, download=download)
            return watch_submission(spec, submission or spec.starter_dir, options, Console())
        for flag, path in outputs.items():
            _check_writable(flag, path)  # before grading, so that a typo costs no grading time
        to_stdout = [flag for flag, path in outputs.items() if path == STDOUT]
        if len(to_stdout) > 1:
            raise UserError(f"{' and '.join(to_stdout)} both ask for standard output (-): give all but one a file")
        options = options_for(spec, chosen, download=download)
        console = Console(stderr=bool(to_stdout))  # stdout is the report's: the table goes to stderr
        with LiveProgress(Console(stderr=True)) as live:
            report = grade(spec, submission or spec.starter_dir, options, on_progress=live.update)
        render.terminal(report, console, options.show_hidden)
        broken = report.sandbox_failures()
        _write("--json", json_path, lambda: json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
        _write("--markdown", markdown, lambda: render.markdown(report, options.show_hidden))
        _write("--junit", junit, lambda: render.junit(report, options.show_hidden))
        _write("--html", html_path, lambda: render_html.report_page(report, options.show_hidden))
        if broken:
            raise GraderError(f"the sandbox failed in {len(broken)} tests ({', '.join(broken)}): grade again")
        if fail_under is not None and report.percent < fail_under:
            click.echo(f"score {report.percent:.1f}% is below --fail-under {fail_under:g}%", err=True)
            return EXIT_BELOW_THRESHOLD
        return 0

    return command


def _check_writable(flag: str, path: Path | None) -> None:
    if path is None or path == STDOUT:
        return
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a folder, give a file name")
    if not path.parent.is_dir():
        raise UserError(f"{flag} {path}: the folder {path.parent} does not exist")


def _write(flag: str, path: Path | None, text: Any) -> None:
    if path is None:
        return
    if path == STDOUT:
        sys.stdout.write(text())
        sys.stdout.flush()
        return
    try:
        path.write_text(text())
    except OSError as failure:
        raise UserError(f"{flag} {path}: cannot write it ({failure.strerror})") from None


def main(argv: list[str] | None = None) -> int:
    """Run the command line; every user mistake is one line on stderr, never a traceback."""
    try:
        result = cli.main(args=argv, prog_name="grade", standalone_mode=False)
    except click.exceptions.Exit as stop:
        return stop.exit_code
    except click.UsageError as mistake:
        click.echo(f"error: {mistake.format_message()}", err=True)
        return EXIT_USAGE
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except UserError as mistake:
        click.echo(f"error: {mistake}", err=True)
        return EXIT_USAGE
    except GraderError as broken:
        click.echo(f"grader error: {broken}", err=True)
        return EXIT_GRADER_BROKEN
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())


__all__ = ["Spec", "cli", "main", "run"]
