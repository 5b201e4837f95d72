"""The two kinds of failure the command line tells apart, and the user mistakes several stages raise."""

from pathlib import Path

from grader.text import clean

NOTE_CHARS = 500  # a problem or a note: the grader's words around names from the hand-in


class UserError(Exception):
    """A mistake in what the user asked for (a wrong name, a missing path): one line, exit code 2."""


class SubmissionProblem(UserError):
    """The submission cannot be read as one (empty, unreadable, too large...). Its message names the
    hand-in's files (a zip's members, a notebook's error): cleaned here, once, for every writer."""

    def __init__(self, problem: str):
        super().__init__(clean(problem, NOTE_CHARS))


class GraderError(Exception):
    """The grader itself is broken (not the submission): exit code 3."""


def make_folder(folder: Path, label: str) -> None:
    """`mkdir -p folder`; where that cannot be done, the user's mistake in one line: "LABEL: cannot create it"."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as failure:
        raise UserError(f"{label}: cannot create it ({failure.strerror})") from None
