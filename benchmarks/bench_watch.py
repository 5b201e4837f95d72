"""How soon `grade --watch` shows the new table after a save.

Starts `grade <assignment> --watch` on a copy of the reference, waits for its first table, then
saves a file of the copy `--saves` times (a comment line added, as an editor writes it) and times
each save until the new table has been printed in full. Prints the median, the range and each.
Run it on a quiet machine: the figure is wall-clock time.

    .venv/bin/python benchmarks/bench_watch.py [--assignment assignment2] [--file lenet.py] [--saves 7]
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wait_for(process: subprocess.Popen, marker: str, timeout_s: float) -> str:
    """Read the watch's output until a line holds `marker`; what was read."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    seen, deadline = "", time.monotonic() + timeout_s
    while marker not in seen:
        if time.monotonic() > deadline or not selector.select(timeout=deadline - time.monotonic()):
            sys.exit(f"no '{marker}' from the watch within {timeout_s:.0f} s:\n{seen[-2000:]}")
        chunk = os.read(process.stdout.fileno(), 1 << 16).decode(errors="replace")
        if not chunk:
            sys.exit(f"the watch ended:\n{seen[-2000:]}")
        seen += chunk
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", default="assignment2")
    parser.add_argument("--file", default="lenet.py", help="the file of the submission that is saved")
    parser.add_argument("--saves", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as scratch:
        copy = Path(scratch, "submission")
        shutil.copytree(ROOT / "reference" / args.assignment, copy)
        command = [sys.executable, "-m", "grader", args.assignment, "--watch", "--submission", str(copy)]
        env = {**os.environ, "COLUMNS": "200"}  # one line per footer, whatever the terminal
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        try:
            started = time.monotonic()
            wait_for(process, "started:", 300)
            print(f"first table (the warm process starting): {time.monotonic() - started:.2f} s")
            latencies = []
            saved = copy / args.file
            for save in range(args.saves):
                time.sleep(0.5)  # apart from the last grading, as saves are
                text = saved.read_text() + f"# save {save}\n"
                before = time.monotonic()
                saved.write_text(text)
                wait_for(process, "saved:", 120)
                latencies.append(time.monotonic() - before)
        finally:
            process.terminate()
            process.wait()
    shown = ", ".join(f"{s:.2f}" for s in latencies)
    print(f"save -> new table: median {statistics.median(latencies):.2f} s (min {min(latencies):.2f}, ", end="")
    print(f"max {max(latencies):.2f}) over {len(latencies)} saves of {args.file}: {shown}")


if __name__ == "__main__":
    main()
