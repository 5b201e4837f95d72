"""Grading a batch on a Ray cluster: `grade batch ... --executor ray [--address ADDR]`.

One Ray task per hand-in, asking for what a local worker gets: `threads` CPUs, the memory of its
sandbox's limit plus its grading child's, and, where the profile trains on a GPU and the cluster
has GPUs, the spec's share of one (`gpu_share`: several hand-ins share a GPU, as Ray's fractional
GPUs allow). The task runs the one grading path (grader.grading.grade) on its node, on the
snapshot's files sent with it (the node may not see the batch's folder), and sends the report
back as JSON. Every node needs the same kit: the task refuses where the grader key differs. A
Ray worker process keeps a warm process (grader.batch.warm) for the gradings it runs one after
another, as a local worker does.

The batch drives each task from a thread of its own, as it drives the local pool's children: the
snapshots, the resume, the second try of a hand-in a busy machine stopped and the gradebook are
the same; the executor is the only difference. The sandbox's own limits stop a runaway hand-in
(a graded result); Ray runs a task again only when its node or worker process is lost
(`max_retries`), never for an exception (`retry_exceptions=False`: the task sends the grader's
errors back as data); an interrupted batch cancels its tasks (`ray.cancel`, forced).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import ray

import grader
from grader.batch.executors import GPU_MEMORY, Slot, SlotPool, uses_gpu, warm_for, worker_memory_mb
from grader.batch.store import grader_key
from grader.batch.warm import WarmWorker
from grader.errors import GraderError, UserError
from grader.grading import BrokenRun
from grader.options import GradingOptions
from grader.report import Report
from grader.spec import Spec, find_root, load_spec

T = TypeVar("T")
RETRIES = 3  # runs of a task whose node or worker process was lost, after the first
_POLL_S = 0.5  # how often a waiting grading looks whether the batch was interrupted
_warm: dict[str, Any] = {}  # in a Ray worker process: the warm process its gradings fork from


@dataclass(frozen=True)
class RaySlot(Slot):
    """One hand-in at a time on the cluster: a Ray task asking for `resources`, wherever Ray places
    it. The task makes a Slot of its own on its node (a temporary folder there, the warm process
    of the Ray worker process that runs it): this one's `tmp` is only this machine's, unused."""

    resources: dict[str, Any] = field(default_factory=dict)

    def call(self, function: Callable[..., T], *args: Any, cancel: threading.Event | None = None) -> T:
        """`function(*args)` in a Ray task that asks for this slot's resources; its value once it ends.
        Setting `cancel` cancels the task."""
        # max_calls=0: a Ray worker process, and its warm process, grade one hand-in after another (GPU ones too)
        ref = ray.remote(max_calls=0)(function).options(**self.resources).remote(*args)
        while not ray.wait([ref], timeout=_POLL_S)[0]:
            if cancel is not None and cancel.is_set():
                ray.cancel(ref, force=True)
                raise GraderError("cancelled")
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as lost:  # its node or worker lost more than RETRIES times, or cancelled
            raise GraderError(f"Ray could not run it: {_first_line(lost)}") from None

    def grade(
        self,
        spec: Spec,
        submission: Path,
        options: GradingOptions,
        cancel: threading.Event | None = None,
        label: str | None = None,
    ) -> Report:
        """Grade `submission` (a folder: a batch's snapshot) on a node of the cluster."""
        files = {path.name: path.read_bytes() for path in sorted(submission.iterdir())}
        key = grader_key(spec, options)
        args = (spec.name, str(spec.root), key, files, options.to_json(), label or str(submission))
        return _report_of(self.call(_grade_on_node, *args, self.threads, self.gpu_fraction, cancel=cancel))


class RayExecutor(SlotPool):
    """Gradings as Ray tasks: `workers` in flight at once (default: as many as the cluster's nodes
    hold), each asking for `threads` CPUs, `memory_mb` of memory and `gpu_share` of a GPU (where the
    cluster has GPUs). It connects to the cluster at `address` unless Ray is connected already."""

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        threads: int = 1,
        memory_mb: int = 0,
        gpu_share: float = 0.0,
    ):
        if not 0 <= gpu_share <= 1:
            raise UserError(f"gpu_share is {gpu_share:g}: a hand-in's share of one GPU is between 0 and 1")
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            _connect(address)
        gpus = gpu_share if ray.cluster_resources().get("GPU") else 0.0
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        capacity = sum(_holds(node, threads, gpus, memory_mb) for node in nodes)
        if not capacity:
            self._release()
            ask = _describe({"CPU": threads, "GPU": gpus, "memory": memory_mb * 2**20})
            held = "; ".join(_describe(node) for node in nodes) or "no node"
            raise UserError(f"no node of the Ray cluster has what one hand-in asks for ({ask}): {held}")
        resources = {
            "num_cpus": threads,
            "num_gpus": gpus,
            "memory": memory_mb * 2**20,
            "max_retries": RETRIES,
            "retry_exceptions": False,
        }
        here = Path(tempfile.gettempdir())
        share = round(GPU_MEMORY * gpus, 4)
        super().__init__([RaySlot(i, here, threads, share, resources=resources) for i in range(workers or capacity)])

    @classmethod
    def for_batch(cls, spec: Spec, options: GradingOptions, address: str | None, workers: int | None) -> RayExecutor:
        """The executor of a batch of `spec`: a hand-in asks for what a local worker takes, and the
        spec's share of a GPU where its profile trains on one."""
        limits = options.apply(spec.limits)
        profile = spec.profile("full" if options.profile == "auto" else options.profile)
        share = limits.gpu_share if profile.device.startswith("cuda") else 0.0
        return cls(address, workers, memory_mb=worker_memory_mb(limits.memory_mb), gpu_share=share)

    @staticmethod
    def check_address(address: str | None) -> None:
        """A HOST:PORT that nothing answers is said at once (Ray itself would try for minutes)."""
        host, _, port = (address or "").removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():  # none, auto, local: Ray looks for the cluster itself
            return
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
        except OSError as failure:
            raise UserError(
                f"--address {address}: no Ray cluster answers there ({failure.strerror or failure})"
            ) from None

    def _release(self) -> None:
        if self._owns_ray:
            ray.shutdown()


def _connect(address: str | None) -> None:
    RayExecutor.check_address(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as failure:
        where = f"--address {address}" if address else "$RAY_ADDRESS or a new Ray instance here"
        raise UserError(f"{where}: cannot connect to a Ray cluster ({_first_line(failure)})") from None


def _holds(resources: dict[str, float], cpus: int, gpus: float, memory_mb: int) -> int:
    """How many tasks of this ask a node of these resources runs at once (a GPU's shares add up to one)."""
    counts = [resources.get("CPU", 0) // cpus]
    if gpus:
        counts.append(int(resources.get("GPU", 0)) * math.floor(1 / gpus + 1e-9))
    if memory_mb:
        counts.append(resources.get("memory", 0) // (memory_mb * 2**20))
    return int(min(counts))


def _describe(resources: dict[str, float]) -> str:
    return (
        f"{resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU, "
        f"{resources.get('memory', 0) / 2**30:.1f} GiB of memory"
    )


def _first_line(error: BaseException) -> str:
    return next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)


def _grade_on_node(
    name: str, root: str, key: str, files: dict[str, bytes], options_json: str, label: str, threads: int, gpu: float
) -> str:
    """In a Ray task, on its node: grade the files sent by the one grading path, with a folder of
    its own; the report, or the grader's error, as JSON (an exception would make Ray's retries and
    pickling part of the grade)."""
    host = socket.gethostname()
    try:
        spec = load_spec(name, find_root(Path(root) if Path(root).is_dir() else Path(grader.__file__).parent))
        options = GradingOptions.from_json(options_json)
        if grader_key(spec, options) != key:
            raise GraderError(f"the kit at {spec.root} is not the batch's: every node needs the same kit")
        with tempfile.TemporaryDirectory(prefix="grader-ray-") as work:
            folder, tmp = Path(work, "submission"), Path(work, "tmp")
            folder.mkdir()
            tmp.mkdir()
            for file, data in files.items():
                (folder / Path(file).name).write_bytes(data)
            report = Slot(0, tmp, threads, gpu, _warm_worker(spec, options, threads)).grade(
                spec, folder, options, label=label
            )
        return json.dumps({"report": report.to_json()})
    except (GraderError, UserError) as failure:
        _close_warm()
        log = failure.log if isinstance(failure, BrokenRun) else ""
        return json.dumps({"error": type(failure).__name__, "message": f"on {host}: {failure}", "log": log})
    except Exception as failure:
        _close_warm()
        message = f"on {host}: {type(failure).__name__}: {failure}"
        return json.dumps({"error": "GraderError", "message": message, "log": traceback.format_exc()})


def _warm_worker(spec: Spec, options: GradingOptions, threads: int) -> WarmWorker:
    """This Ray worker process's warm process (grader.batch.warm), as a local worker keeps one: started
    by its first grading, lent to the next; started again for other preloads or other GPUs."""
    gpu = uses_gpu(spec, options)
    key = (threads, warm_for([spec], options, gpu), os.environ.get("CUDA_VISIBLE_DEVICES"))
    if _warm.get("key") != key:
        _close_warm()
        _warm.update(key=key, worker=WarmWorker(threads, *astuple(key[1])))
    return _warm["worker"]


def _close_warm() -> None:
    """After a grader error its warm process may be the cause: the next grading starts a new one."""
    worker = _warm.pop("worker", None)
    _warm.pop("key", None)
    if worker is not None:
        worker.close()


def _report_of(result: str) -> Report:
    """The report a task sent back; the grader's error it sent, raised here as it would have been locally."""
    doc = json.loads(result)
    if "report" in doc:
        return Report.from_json(doc["report"])
    if doc["error"] == "UserError":
        raise UserError(doc["message"])
    if doc["log"]:
        raise BrokenRun(doc["message"], doc["log"])
    raise GraderError(doc["message"])
