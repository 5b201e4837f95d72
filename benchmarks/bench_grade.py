"""How much the `grade` harness costs on top of the tests themselves.

Times `grade <assignment> --submission reference/<assignment> --profile quick` against the same
tests run as bare pytest in one process, alternating the two to share the machine's noise, and
prints both medians, the harness overhead and their ratio.

    .venv/bin/python benchmarks/bench_grade.py [--assignment assignment2] [--repeat 3] [--no-accuracy]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", default="assignment2")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-accuracy", action="store_true", help="leave out the trained-accuracy tests")
    args = parser.parse_args()
    reference = f"reference/{args.assignment}"
    grade = [
        sys.executable,
        "-c",
        "from grader.cli import run; run()",
        args.assignment,
        "--submission",
        reference,
        "--profile",
        "quick",
    ]
    bare = [
        sys.executable,
        "-m",
        "pytest",
        f"assignments/{args.assignment}",
        "--submission",
        reference,
        "--profile",
        "quick",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    if args.no_accuracy:
        grade += ["--marks", "not accuracy"]
        bare += ["-m", "not accuracy"]
    timings: dict[str, list[float]] = {"grade": [], "bare pytest": []}
    for _ in range(args.repeat):
        timings["grade"].append(timed(grade))
        timings["bare pytest"].append(timed(bare))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    for name, values in timings.items():
        print(f"{name:12s} median {medians[name]:6.2f} s   runs: {', '.join(f'{v:.2f}' for v in values)}")
    overhead = medians["grade"] - medians["bare pytest"]
    print(f"harness overhead {overhead:+.2f} s ({medians['grade'] / medians['bare pytest']:.2f}x bare pytest)")


if __name__ == "__main__":
    main()
