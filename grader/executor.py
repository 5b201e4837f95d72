"""Where batch grading runs: a small executor interface and its local default.

A worker is a `Slot`: what one grading at a time may use (a temporary folder, a share of the
cores and of the GPU, and as root a sandbox user of its own, so that workers can neither signal
nor crowd out each other's processes). `Executor.submit(job)` runs `job(slot)` on a free worker
and returns a Future. `LocalExecutor` drives its workers from threads, each waiting on the child
processes it starts; a distributed backend would implement the same two methods, running each
job where its slot lives.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import queue
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from grader.sandbox import GPU_FRACTION_ENV, ISOLATION_ENV, SANDBOX_UID_ENV, THREADS_ENV, kill_user

T = TypeVar("T")

# Sandbox users: far above the ranges of people (1000-60000), of systemd's dynamic users and of
# the usual subordinate ranges; each claimed by a lock file while a batch uses it.
UID_BASE = 1_500_000_000
UID_SPAN = 4096
UID_LOCKS = Path(tempfile.gettempdir()) / "grader-sandbox-uids"


@dataclass(frozen=True)
class Slot:
    """One worker: what a single grading may use while it runs."""

    index: int
    tmp: Path  # the grading's temporary files, sandboxes included
    threads: int  # torch threads of each sandbox
    uid: int | None = None  # the sandboxes' own user (root only); None: `nobody` or the same user
    gpu_fraction: float = 0.0  # each sandbox's share of the GPU's memory

    @property
    def env(self) -> dict[str, str]:
        """The environment of the grading child that this worker starts."""
        env = {
            "TMPDIR": str(self.tmp),
            THREADS_ENV: str(self.threads),
            "OMP_NUM_THREADS": str(self.threads),
            "MKL_NUM_THREADS": str(self.threads),
        }
        if self.uid is not None:
            env[SANDBOX_UID_ENV] = str(self.uid)
        if self.gpu_fraction:
            env[GPU_FRACTION_ENV] = f"{self.gpu_fraction:.4f}"
        return env

    def clean(self) -> None:
        """End whatever the last grading left running as this worker's user."""
        if self.uid is not None:
            kill_user(self.uid)


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


class LocalExecutor(Executor):
    """Workers on this machine: threads, each driving one grading child process at a time."""

    def __init__(self, workers: int, threads: int | None = None, gpu: bool = False):
        self.workers = workers
        threads = threads or max(1, cpu_count() // workers)
        _remove_stale_work()
        self._work = Path(tempfile.mkdtemp(prefix=f"grader-batch-{os.getpid()}-"))
        self._locks, uids = _claim_uids(workers) if _dedicated_users_possible() else ([], [None] * workers)
        self._slots = [
            Slot(i, self._work / f"worker-{i}", threads, uid, round(0.9 / workers, 4) if gpu else 0.0)
            for i, uid in enumerate(uids)
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
            slot.clean()
            self._free.put(slot)

    def shutdown(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        if self._closed:
            return
        self._closed = True
        for slot in self._slots:
            slot.clean()
        for fd in self._locks:
            os.close(fd)
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


def _dedicated_users_possible() -> bool:
    """As root (and not told to stay the same user), where our uid range maps to real uids."""
    if os.geteuid() != 0 or os.environ.get(ISOLATION_ENV) == "same-user":
        return False
    for line in Path("/proc/self/uid_map").read_text().splitlines():
        inside, _outside, count = map(int, line.split())
        if inside <= UID_BASE and inside + count >= UID_BASE + UID_SPAN:
            return True
    return False


def _claim_uids(count: int) -> tuple[list[int], list[int | None]]:
    """`count` unused uids, each held by a lock on its file (released when this process ends)."""
    UID_LOCKS.mkdir(mode=0o700, exist_ok=True)
    locks: list[int] = []
    uids: list[int | None] = []
    for uid in range(UID_BASE, UID_BASE + UID_SPAN):
        if len(uids) == count:
            break
        with contextlib.suppress(KeyError):
            pwd.getpwuid(uid)
            continue  # someone's account
        fd = os.open(UID_LOCKS / str(uid), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another batch's
            os.close(fd)
            continue
        kill_user(uid)  # what a batch killed before it could clean up left behind
        locks.append(fd)
        uids.append(uid)
    if len(uids) < count:
        raise RuntimeError(f"no free sandbox uid left in {UID_BASE}..{UID_BASE + UID_SPAN}")
    return locks, uids
