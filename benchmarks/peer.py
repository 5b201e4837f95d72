"""The peer: Otter-Grader's `otter run` on the equivalent port of assignment2's checks.

The port lives in ../shared/peer-bench (its README sets up the Otter venv); `OtterPort` builds its
autograder and the reference notebook in a scratch folder, never in the kit, and times runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class OtterPort:
    """`with OtterPort(otter, peer_bench) as port: port.run()`: one `otter run` on the reference, in seconds."""

    def __init__(self, otter: Path, peer_bench: Path):
        self.otter, self.peer_bench = otter, peer_bench
        self._scratch = tempfile.TemporaryDirectory(prefix="bench-otter-")
        self.work = Path(self._scratch.name)
        self.runs = 0

    def __enter__(self) -> OtterPort:
        quiet = {"check": True, "stdout": subprocess.DEVNULL}
        notebook = [self.otter.parent / "python", self.peer_bench / "make_notebook.py", ROOT, self.work / "lenet.ipynb"]
        subprocess.run(notebook, **quiet)
        generate = [self.otter, "generate", "-t", "tests", "--no-requirements", "--no-environment"]
        subprocess.run(
            [*generate, "-o", self.work / "autograder.zip", "grading_helpers.py"], cwd=self.peer_bench, **quiet
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._scratch.cleanup()

    def run(self) -> float:
        """One `otter run` of the reference notebook (it must earn every point); its wall seconds."""
        self.runs += 1
        out = self.work / f"out-{self.runs}"
        out.mkdir()  # otter run wants it there
        command = [
            self.otter,
            "run",
            "-a",
            self.work / "autograder.zip",
            "-o",
            out,
            "--no-logo",
            self.work / "lenet.ipynb",
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        tests = json.loads((out / "results.json").read_text())["tests"]
        earned, full = sum(t.get("score", 0) for t in tests), sum(t.get("max_score", 0) for t in tests)
        if earned != full:
            sys.exit(f"otter run gave the reference {earned} / {full}: see {out}")
        return elapsed
