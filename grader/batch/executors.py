"""Where batch grading runs: a small executor interface and its local default.

A worker is a `Slot`: what one grading at a time may use (a temporary folder of its own, a share
of the cores and of the GPU). The sandboxes keep the workers apart: each probe has namespaces of
its own, sees no other worker's folder and cannot signal any process outside it.
`Executor.submit(job)` runs `job(slot)` on a free worker and returns a Future; a job grades with
`slot.grade(...)`. A `SlotPool` drives its slots from threads of this process, one job per slot at
a time: `LocalExecutor`'s slots grade here, each in a child process of its own; a Ray executor's
(grader.batch.ray) ship each grading to a node of a cluster and wait for its report.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TypeVar

from grader.batch.warm import WarmWorker
from grader.grading import grade
from grader.options import GradingOptions
from grader.report import Report
from grader.spec import Spec, preloads

T = TypeVar("T")
GPU_MEMORY = 0.9  # of the GPU's memory, what the probes of the workers sharing it may take (the rest: CUDA's own)


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

    def grade(
        self,
        spec: Spec,
        submission: Path,
        options: GradingOptions,
        cancel: threading.Event | None = None,
        label: str | None = None,
    ) -> Report:
        """Grade `submission` by the one grading path, with this worker's folder, cores, GPU share and warm process."""
        return grade(spec, submission, self.options(options), self.env, cancel, label, self.worker)


class Executor(ABC):
    """Runs grading jobs on `workers` workers at once."""

    workers: int

    @abstractmethod
    def submit(self, job: Callable[[Slot], T]) -> Future[T]:
        """Run `job(slot)` on the next free worker."""

    @abstractmethod
    def ready(self) -> None:
        """Wait until the workers can grade: a GraderError, before any hand-in, where their sandbox
        cannot start."""

    @abstractmethod
    def shutdown(self, cancel: bool = False) -> None:
        """Wait for the running jobs (dropping the queued ones if `cancel`), then free the workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(cancel=exc[0] is not None)


@dataclass(frozen=True)
class Warm:
    """What a warm worker loads once: the sandbox's preloads, the datasets, whether it uses a GPU,
    and the modules the tests import (spec.toml's grader_preload)."""

    preload: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    gpu: bool = False
    imports: tuple[str, ...] = ()


def warm_for(specs: list[Spec], options: GradingOptions, gpu: bool = False) -> Warm:
    """What the workers of a batch of these assignments load once: sandbox preloads and the packaged
    datasets of the profiles they grade with here (`auto` resolved as the grading resolves it)."""
    from grader import data  # torch: for the batch, not for every importer of the executors
    from grader.plugin.session import resolve_profile

    preload = preloads(specs)
    profiles = [resolve_profile(spec, options.profile, options.data_dir, options.device) for spec in specs]
    datasets = tuple(sorted({d for p in profiles if (d := p.dataset) and data.SOURCES[d].packaged}))
    return Warm(preload, datasets, gpu, preloads(specs, "grader_preload"))


def uses_gpu(spec: Spec, options: GradingOptions) -> bool:
    """Whether the gradings of `spec` with `options` on this machine train on its GPU: the profile
    they run (`auto` and `--device` resolved as the grading resolves them) asks for CUDA, and CUDA is here."""
    from grader.plugin.session import resolve_profile

    if not resolve_profile(spec, options.profile, options.data_dir, options.device).device.startswith("cuda"):
        return False
    import torch

    return torch.cuda.is_available()


class SlotPool(Executor):
    """Jobs driven from threads of this process, one per slot: a job holds its slot while it runs."""

    def __init__(self, slots: list[Slot]):
        self.workers = len(slots)
        self._slots = slots
        self._free: queue.Queue[Slot] = queue.Queue()
        for slot in slots:
            self._free.put(slot)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="grader-worker")
        self._closed = False

    def submit(self, job: Callable[[Slot], T]) -> Future[T]:
        return self._pool.submit(self._run, job)

    def ready(self) -> None:
        for slot in self._slots:  # a cluster's slots have no warm process here: its nodes check theirs, per task
            if slot.worker is not None:
                slot.worker.ready()

    def _run(self, job: Callable[[Slot], T]) -> T:
        slot = self._free.get()
        try:
            return job(slot)
        finally:
            self._free.put(slot)

    def shutdown(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        if not self._closed:
            self._closed = True
            self._release()

    def _release(self) -> None:
        """Free what the slots hold, once every job has ended."""


class LocalExecutor(SlotPool):
    """Workers on this machine: threads, each driving one grading child process at a time (with
    `warm`, a fork of the one warm process they share: grader.batch.warm)."""

    def __init__(self, workers: int, threads: int | None = None, gpu: bool = False, warm: Warm | None = None):
        threads = threads or max(1, cpu_count() // workers)
        _remove_stale_work()
        self._work = Path(tempfile.mkdtemp(prefix=f"grader-batch-{os.getpid()}-"))
        share = round(GPU_MEMORY / workers, 4) if gpu else 0.0
        self._warm = warm and WarmWorker(threads, *astuple(warm))  # one for all: their gradings are its forks
        slots = [Slot(i, self._work / f"worker-{i}", threads, share, self._warm) for i in range(workers)]
        for slot in slots:
            slot.tmp.mkdir()
        super().__init__(slots)

    def _release(self) -> None:
        if self._warm is not None:
            self._warm.close()
        shutil.rmtree(self._work, ignore_errors=True)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def default_workers(memory_mb: int) -> int:
    """As many workers as there are cores, and as the memory holds."""
    available_mb = _meminfo_mb("MemAvailable") or worker_memory_mb(memory_mb)
    return max(1, min(cpu_count(), available_mb // worker_memory_mb(memory_mb)))


def worker_memory_mb(memory_mb: int) -> int:
    """What one grading takes at most: its sandbox's limit, plus a gigabyte for its grading child and fork server."""
    return memory_mb + 1024


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
