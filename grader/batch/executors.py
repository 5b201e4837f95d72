"""Where batch grading runs: a small executor interface and its local default.

A worker is a `Slot`: what one grading at a time may use (a temporary folder of its own, a share
of the cores and of the GPU). The sandboxes keep the workers apart: each probe has namespaces of
its own, sees no other worker's folder and cannot signal any process outside it.
`Executor.submit(job)` runs `job(slot)` on a free worker and returns a Future. `LocalExecutor`
drives its workers from threads, each waiting on the child processes it starts; a distributed
backend would implement the same two methods, running each job where its slot lives.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TypeVar

from grader.batch.warm import WarmWorker
from grader.options import GradingOptions

T = TypeVar("T")


@dataclass(frozen=True)
class Slot:
    """One worker: what a single grading may use while it runs."""

    index: int
    tmp: Path  # the grading's temporary files
    threads: int  # torch threads of each probe, and of the grading child
    gpu_fraction: float = 0.0  # each probe's share of the GPU's memory
    worker: WarmWorker | None = None  # the warm process its gradings fork from (None: a fresh one each)

    @property
    def env(self) -> dict[str, str]:
        """The environment of the grading child that this worker starts."""
        return {"TMPDIR": str(self.tmp), "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}

    def options(self, options: GradingOptions) -> GradingOptions:
        """`options` for a grading on this worker: its threads, its share of the GPU."""
        return options.with_(threads=self.threads, gpu_fraction=self.gpu_fraction)


class Executor(ABC):
    """Runs grading jobs on `workers` workers at once."""

    workers: int

    @abstractmethod
    def submit(self, job: Callable[[Slot], T]) -> Future[T]:
        """Run `job(slot)` on the next free worker."""

    @abstractmethod
    def shutdown(self, cancel: bool = False) -> None:
        """Wait for the running jobs (dropping the queued ones if `cancel`), then free the workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(cancel=exc[0] is not None)


@dataclass(frozen=True)
class Warm:
    """What a warm worker loads once: the sandbox's preloads, the datasets, and whether it uses a GPU."""

    preload: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    gpu: bool = False


class LocalExecutor(Executor):
    """Workers on this machine: threads, each driving one grading child process at a time (with
    `warm`, a fork of a warm process of its own: grader.batch.warm)."""

    def __init__(self, workers: int, threads: int | None = None, gpu: bool = False, warm: Warm | None = None):
        self.workers = workers
        threads = threads or max(1, cpu_count() // workers)
        _remove_stale_work()
        self._work = Path(tempfile.mkdtemp(prefix=f"grader-batch-{os.getpid()}-"))
        share = round(0.9 / workers, 4) if gpu else 0.0
        self._slots = [
            Slot(i, self._work / f"worker-{i}", threads, share, warm and WarmWorker(threads, *astuple(warm)))
            for i in range(workers)
        ]
        self._free: queue.Queue[Slot] = queue.Queue()
        for slot in self._slots:
            slot.tmp.mkdir()
            self._free.put(slot)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="grader-worker")
        self._closed = False

    def submit(self, job: Callable[[Slot], T]) -> Future[T]:
        return self._pool.submit(self._run, job)

    def _run(self, job: Callable[[Slot], T]) -> T:
        slot = self._free.get()
        try:
            return job(slot)
        finally:
            self._free.put(slot)

    def shutdown(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        if self._closed:
            return
        self._closed = True
        for slot in self._slots:
            if slot.worker is not None:
                slot.worker.close()
        shutil.rmtree(self._work, ignore_errors=True)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def default_workers(memory_mb: int) -> int:
    """As many workers as there are cores, and as the memory holds (each sandbox's limit plus a
    gigabyte for its grading child and fork server)."""
    available_mb = _meminfo_mb("MemAvailable") or memory_mb + 1024
    return max(1, min(cpu_count(), available_mb // (memory_mb + 1024)))


def _meminfo_mb(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    return 0


def _remove_stale_work() -> None:
    """The temporary folders of batches killed before they could remove them."""
    for folder in Path(tempfile.gettempdir()).glob("grader-batch-*-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and not Path("/proc", pid).exists():
            shutil.rmtree(folder, ignore_errors=True)
