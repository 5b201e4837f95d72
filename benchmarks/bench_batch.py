"""What a submission costs in `grade batch`, against `import torch` and against the floor.

In one run, on the same machine and load:

- `python -c "import torch"`: the cost of any fresh Python process that grades with torch;
- the floor: the same checks (the tests and their probes) in one warm process, no sandbox, no
  child process: pytest run in this process again and again, each probe called right here;
- `grade batch` on N copies of the reference (quick profile, the trained-accuracy tests left out
  unless --accuracy) with each number of workers: wall time, submissions per minute, and per
  submission the amortized wall time (wall / N), the worker time (wall x workers / N) and its
  overhead beyond the floor. Both include the batch's fixed costs (starting the warm workers,
  collecting the tests once, the class page), which a larger N spreads thinner.

- with --otter: Otter-Grader's `otter run` on the same N copies, one after another (its local
  path: `otter grade` needs Docker), on the equivalent port of assignment2's checks in
  ../shared/peer-bench (its README sets up the Otter venv); the port is built in a scratch folder
  from there, never copied into the kit.

    .venv/bin/python benchmarks/bench_batch.py [--copies 8] [--workers 1 2] [--accuracy] [--rounds 5]
        [--otter ../otter-venv/bin/otter [--peer-bench ../shared/peer-bench]]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peer import OtterPort  # noqa: E402  (this script's folder)

from grader.batch.run import BatchOptions, run_batch  # noqa: E402
from grader.options import GradingOptions  # noqa: E402
from grader.spec import load_spec  # noqa: E402


def import_torch_s(times: int = 3) -> float:
    """The median wall time of a fresh `python -c "import torch"`."""
    runs = []
    for _ in range(times):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def floor_s(marks: str, rounds: int) -> tuple[float, float]:
    """(cold, warm median) seconds of the same checks run in this process: pytest in-process, each
    probe called here on the reference, as if there were no sandbox (a benchmark, never a grading)."""
    import importlib

    from grader.plugin import hooks, session

    class NoZygote:  # nothing runs in a sandbox here
        mechanism, isolation = "none", "the floor: no sandbox"

        def ready(self) -> None:
            pass

    class Here:  # `sub`: the submission's modules, imported in this process
        device = "cpu"

        def __init__(self, modules: dict[str, str]):
            self.modules = modules

        def __getattr__(self, name: str) -> object:
            return importlib.import_module(Path(self.modules[name]).stem)

    def run_here(self: session.Submission, probe, *args, seed: int = 0):
        sys.path.insert(0, str(self.materialized.folder))
        try:
            return probe(Here(self.materialized.modules), *args)
        finally:
            sys.path.remove(str(self.materialized.folder))

    original = session.Submission.run
    session.Submission.run, hooks.WARM_ZYGOTE = run_here, NoZygote()
    try:
        import pytest

        times = []
        args = ["assignments/assignment2", "--submission", "reference/assignment2", "-m", marks, "-q"]
        args += ["-p", "no:cacheprovider", "--profile", "quick"]
        for _ in range(rounds):
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                code = pytest.main([*args, "-c", "assignments/pytest.ini", "--rootdir", "assignments"])
            times.append(time.perf_counter() - started)
            if code != 0:
                sys.exit(f"the floor's run failed (pytest exit code {code})")
    finally:
        session.Submission.run, hooks.WARM_ZYGOTE = original, None
    return times[0], statistics.median(times[1:])


def grade_copies(copies: int, workers: int, options: GradingOptions) -> dict[str, float]:
    """Batch-grade `copies` copies of the reference with `workers` workers; timings in seconds."""
    spec = load_spec("assignment2", ROOT)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
        submissions = Path(scratch) / "submissions"
        for i in range(copies):
            shutil.copytree(spec.reference_dir, submissions / f"student-{i:02d}")
        started = time.perf_counter()
        batch = BatchOptions(workers=workers, console=Console(file=io.StringIO()))
        result = run_batch(spec, submissions, Path(scratch) / "grades", options, batch)
        wall = time.perf_counter() - started
    reports = [o.report for o in result.outcomes]
    wrong = [r.submission for r in reports if r.score != r.max_score]
    if wrong:
        sys.exit(f"the reference lost points in {wrong}: {reports[0].summary()}")
    return {"wall": wall, "worker": wall * workers / copies, "child": statistics.fmean(r.duration_s for r in reports)}


def otter_copies(copies: int, otter: Path, peer_bench: Path) -> dict[str, float]:
    """`otter run` on `copies` copies of the reference notebook, one after another; seconds."""
    with OtterPort(otter, peer_bench) as port:
        wall = sum(port.run() for _ in range(copies))
    return {"wall": wall, "worker": wall / copies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8, help="submissions in the batch")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--accuracy", action="store_true", help="include the trained-accuracy tests")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the floor (the first is cold)")
    parser.add_argument("--otter", type=Path, help="an `otter` command whose Python imports torch")
    parser.add_argument("--peer-bench", type=Path, default=ROOT.parent / "shared" / "peer-bench")
    args = parser.parse_args()
    os.chdir(ROOT)
    marks = "accuracy or not accuracy" if args.accuracy else "not accuracy"
    options = GradingOptions(profile="quick", marks=None if args.accuracy else "not accuracy", allow_unisolated=False)
    load = os.getloadavg()[0]
    torch_s = import_torch_s()
    cold, warm = floor_s(marks, args.rounds)
    runs = {workers: grade_copies(args.copies, workers, options) for workers in args.workers}
    otter = otter_copies(args.copies, args.otter.resolve(), args.peer_bench.resolve()) if args.otter else None
    print(f"assignment2, {args.copies} copies of the reference, quick profile, {'with' if args.accuracy else 'without'}"
          f" accuracy; load {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")  # fmt: skip
    print(f"python -c 'import torch': {torch_s:.2f} s")
    print(f"floor (the same checks in one warm process): cold {cold:.2f} s, warm {warm:.2f} s")
    base = runs[args.workers[0]]["wall"]
    for workers, t in runs.items():
        amortized = t["wall"] / args.copies
        print(
            f"{workers} worker(s): {t['wall']:6.1f} s, {60 * args.copies / t['wall']:5.1f} submissions/min, "
            f"speed-up {base / t['wall']:.2f}x | per submission: {amortized:.2f} s amortized "
            f"({amortized / torch_s:.2f}x an import of torch), {t['worker']:.2f} s of a worker, "
            f"{t['worker'] - warm:+.2f} s beyond the floor"
        )
    if otter:
        print(
            f"otter run, one after another: {otter['wall']:6.1f} s, {60 * args.copies / otter['wall']:5.1f} "
            f"submissions/min | per submission: {otter['worker']:.2f} s ({otter['worker'] / torch_s:.2f}x an import "
            f"of torch); the kit's 1 worker is {otter['worker'] / runs[args.workers[0]]['worker']:.2f}x faster"
        )


if __name__ == "__main__":
    main()
