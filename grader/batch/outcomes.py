"""What a batch ends with: each student's line of the gradebook (`Outcome`) and the run's
(`BatchResult`). Plain data over reports: the run (grader.batch.run) makes them, the gradebook
(grader.batch.gradebook), the course (grader.course) and the screen read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from grader.report import Report


@dataclass
class Outcome:
    """One student's line of the gradebook. `status`: graded, unreadable, or error (the grader's)."""

    id: str
    report: Report
    status: str
    key: str
    resumed: bool = False

    @property
    def limits(self) -> list[str]:
        return sorted({t.limit for t in self.report.tests if t.limit})

    @property
    def grade(self) -> float | None:
        """What the gradebook records: the score after any late penalty; none where the grader failed
        (graded again at the next run)."""
        return None if self.status == "error" else self.report.final_score

    @property
    def busy(self) -> bool:
        """Whether the machine or the grader, not the code, failed a test (the wall-clock backstop, a
        broken sandbox): graded again, later, before it counts."""
        return machine_failed(self.report)


def machine_failed(report: Report) -> bool:
    """Whether a test of `report` met the wall-clock backstop (a busy machine) or a broken sandbox."""
    return any(t.limit in ("backstop", "grader") for t in report.tests)


@dataclass
class BatchResult:
    """A run of a batch: its folder, every student's outcome (in the order of the hand-ins), those
    left out and the files it could not write."""

    out: Path
    outcomes: list[Outcome]
    left_out: list[str] = field(default_factory=list)  # never graded, and not picked by --only/--failed
    unwritten: list[str] = field(default_factory=list)  # the files that could not be written, a line each

    @property
    def graded_now(self) -> int:
        return sum(not o.resumed for o in self.outcomes)

    @property
    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "error"]
