"""What `grade` shows on a terminal while it works: the running test, and how far a training is.

Fed by the records that only the screen needs (grader.runner: a test starting, a probe's progress);
nothing of it reaches a report.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from grader.plugin.records import ScreenLine


class LiveProgress:
    """A line that follows the grading: `with LiveProgress(console) as live: grade(..., on_progress=live.update)`."""

    def __init__(self, console: Console):
        self.enabled = console.is_terminal
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
        )
        self.task: TaskID | None = None
        self.name = ""

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            self.progress.start()
            self.task = self.progress.add_task("starting the tests (Python, torch, the sandbox)")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def update(self, record: ScreenLine) -> None:
        if not self.enabled:
            return
        if record["kind"] == "start":
            self.name = str(record.get("name", ""))
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(self.name)
        elif record["kind"] == "progress" and self.task is not None:
            self.progress.update(self.task, description=f"{self.name} · {describe(record.get('fields', {}))}")


def describe(fields: dict[str, Any]) -> str:
    """ "epoch 3.2 of 12 · 1,250 steps · train loss 0.412" from a probe's progress fields."""
    parts = []
    epoch = fields.get("epoch")
    if isinstance(epoch, (int, float)):
        of = fields.get("of")
        parts.append(f"epoch {epoch:.1f}" + (f" of {of:g}" if isinstance(of, (int, float)) else ""))
    steps = fields.get("steps")
    if isinstance(steps, int) and steps:
        parts.append(f"{steps:,} steps")
    for key, value in fields.items():
        if key not in ("epoch", "of", "steps") and isinstance(value, float):
            parts.append(f"{key} {value:.3g}")
    return " · ".join(parts) or "working"
