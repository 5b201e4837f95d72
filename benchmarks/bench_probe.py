"""What one probe call costs: a fresh isolated process per probe, the floor under every test.

Runs a probe that does nothing (noop_probe.py) on a warm zygote, as a test's
`submission.run` does, and prints the median milliseconds per call over `--repeat` rounds of
`--calls` calls, beside one `fork()` + `waitpid()` of this process (the cost no isolation adds).

    .venv/bin/python benchmarks/bench_probe.py [--calls 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from noop_probe import returns_one  # this script's folder: the sandbox gets that module, not this one

from grader.sandbox.api import Sandbox, Zygote


def per_call_ms(call, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1000


def fork_and_wait() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    zygote = Zygote(threads=1)
    try:
        sandbox = Sandbox({"handin.py": b"A = 1\n"}, {"handin": "handin.py"}, zygote)
        sandbox.run(returns_one)  # the zygote's start is not a call's cost
        probe, fork = [], []
        for _ in range(args.repeat):  # interleaved: both see the same load
            probe.append(per_call_ms(lambda: sandbox.run(returns_one), args.calls))
            fork.append(per_call_ms(fork_and_wait, args.calls))
        print(f"isolation: {zygote.isolation}")
        print(f"probe call: {statistics.median(probe):.1f} ms (median of {args.repeat} x {args.calls})")
        print(f"fork + wait of this process: {statistics.median(fork):.1f} ms")
    finally:
        zygote.close()


if __name__ == "__main__":
    main()
