"""The two kinds of failure the command line tells apart."""

from pathlib import Path


class UserError(Exception):
    """A mistake in what the user asked for (a wrong name, a missing path): one line, exit code 2."""


class GraderError(Exception):
    """The grader itself is broken (not the submission): exit code 3."""


def make_folder(folder: Path, label: str) -> None:
    """`mkdir -p folder`; where that cannot be done, the user's mistake in one line: "LABEL: cannot create it"."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as failure:
        raise UserError(f"{label}: cannot create it ({failure.strerror})") from None
