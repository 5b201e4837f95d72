"""Grade the whole gallery in one batch, in a process of its own (as root, or as a normal user):

    python -m tests.gallery.batch FOLDER PORT

FOLDER/submissions holds the hand-ins built from gallery.toml, FOLDER/grades the gradebook, and
FOLDER/terminal.txt what the batch printed."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from grader.batch.gradebook import print_summary
from grader.batch.run import BatchOptions, run_batch
from grader.options import GradingOptions
from grader.spec import load_spec
from tests.gallery import ENTRIES, LIMITS, build
from tests.kit import ANOTHER_SEED

# The accuracy test only trains the reference for a minute: it tells nothing about hostile code. A seed
# given: the normal user cannot read (or make) the course's secret in the root-owned kit, and both runs
# must draw the same inputs.
OPTIONS = GradingOptions(
    profile="quick", marks="not accuracy", seed=ANOTHER_SEED, limits=LIMITS, allow_unisolated=False
)


def main() -> None:
    folder, port = Path(sys.argv[1]), int(sys.argv[2])
    spec = load_spec("assignment2", Path(__file__).resolve().parents[2])
    submissions, out = folder / "submissions", folder / "grades"
    submissions.mkdir(parents=True)
    for entry in ENTRIES.values():
        build(entry, spec, submissions, out, port)
    with (folder / "terminal.txt").open("w") as terminal:
        console = Console(file=terminal, width=200)
        print_summary(run_batch(spec, submissions, out, OPTIONS, BatchOptions(workers=2, console=console)), console)


if __name__ == "__main__":
    main()
