"""How fast `grade batch` grades a class, and what a submission costs beyond its tests.

Batch-grades N copies of the reference (quick profile; the trained-accuracy tests left out unless
--accuracy) with each number of workers in turn, in one run, and prints submissions per minute,
the speed-up over the first, and per submission: the worker time it took (wall time x workers / N),
the time of its grading child, and the time of its tests themselves. The overhead is the worker
time beyond the tests: starting the grading child (Python, pytest, torch) and its fork server,
copying, scoring, writing the reports, and the batch's one collection of the tests.

    .venv/bin/python benchmarks/bench_batch.py [--copies 6] [--workers 1 2] [--accuracy]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.batch import Options, run_batch  # noqa: E402
from grader.spec import load_spec  # noqa: E402


def grade_copies(copies: int, workers: int, options: Options) -> dict[str, float]:
    """Batch-grade `copies` copies of the reference with `workers` workers; timings in seconds."""
    spec = load_spec("assignment2", ROOT)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
        submissions = Path(scratch) / "submissions"
        for i in range(copies):
            shutil.copytree(spec.reference_dir, submissions / f"student-{i:02d}")
        started = time.perf_counter()
        result = run_batch(
            spec, submissions, Path(scratch) / "grades", options, workers, console=Console(file=io.StringIO())
        )
        wall = time.perf_counter() - started
    reports = [o.report for o in result.outcomes]
    wrong = [r.submission for r in reports if r.score != r.max_score]
    if wrong:
        sys.exit(f"the reference lost points in {wrong}: {reports[0].summary()}")
    return {
        "wall": wall,
        "worker": wall * workers / copies,
        "child": statistics.fmean(r.duration_s for r in reports),
        "tests": statistics.fmean(sum(t.duration_s for t in r.tests) for r in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=6, help="submissions in the batch")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--accuracy", action="store_true", help="include the trained-accuracy tests")
    args = parser.parse_args()
    options = Options(profile="quick", marks=None if args.accuracy else "not accuracy")
    runs = {workers: grade_copies(args.copies, workers, options) for workers in args.workers}
    base = runs[args.workers[0]]["wall"]
    print(f"{args.copies} copies of the reference, quick profile, {'with' if args.accuracy else 'without'} accuracy")
    for workers, t in runs.items():
        print(
            f"{workers} worker(s): {t['wall']:6.1f} s, {60 * args.copies / t['wall']:5.1f} submissions/min, "
            f"speed-up {base / t['wall']:.2f}x | per submission: worker {t['worker']:.1f} s, "
            f"grading child {t['child']:.1f} s, tests {t['tests']:.1f} s, "
            f"overhead {t['worker'] - t['tests']:.1f} s ({t['worker'] / t['tests']:.2f}x the tests)"
        )


if __name__ == "__main__":
    main()
