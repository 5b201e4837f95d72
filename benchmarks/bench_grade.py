"""One `grade`, against bare pytest on the same tests and against the peer's `otter run`.

Times `grade <assignment> --submission reference/<assignment> --profile quick` against the same
tests run as bare pytest in one process and, with --otter, against Otter-Grader's `otter run` on
the equivalent port of assignment2's checks (benchmarks/peer.py), the commands taken in turn to
share the machine's noise; prints the medians, the harness overhead and the ratios.

    .venv/bin/python benchmarks/bench_grade.py [--assignment assignment2] [--repeat 3] [--no-accuracy]
        [--otter ../otter-venv/bin/otter [--peer-bench ../shared/peer-bench]]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

from peer import OtterPort  # this script's folder

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
    parser.add_argument("--otter", type=Path, help="an `otter` command whose Python imports torch")
    parser.add_argument("--peer-bench", type=Path, default=ROOT.parent / "shared" / "peer-bench")
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
    timings: dict[str, list[float]] = {"grade": [], "bare pytest": [], "otter run": []}
    with contextlib.ExitStack() as held:
        port = held.enter_context(OtterPort(args.otter.resolve(), args.peer_bench.resolve())) if args.otter else None
        for _ in range(args.repeat):
            timings["grade"].append(timed(grade))
            timings["bare pytest"].append(timed(bare))
            if port is not None:
                timings["otter run"].append(port.run())
    medians = {name: statistics.median(values) for name, values in timings.items() if values}
    for name, values in timings.items():
        if values:
            print(f"{name:12s} median {medians[name]:6.2f} s   runs: {', '.join(f'{v:.2f}' for v in values)}")
    overhead = medians["grade"] - medians["bare pytest"]
    print(f"harness overhead {overhead:+.2f} s ({medians['grade'] / medians['bare pytest']:.2f}x bare pytest)")
    if "otter run" in medians:
        print(f"grade / otter run: {medians['grade'] / medians['otter run']:.2f} (medians, taken in turn)")


if __name__ == "__main__":
    main()
