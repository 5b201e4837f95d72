"""Where a batch grades (`grade batch --executor`): this machine's pool of warm workers, the
default (grader.batch.executors), or one Ray task per hand-in on a cluster (grader.batch.ray,
imported only when asked for: Ray is heavy, and optional)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from grader.batch.executors import Executor, LocalExecutor, default_workers, uses_gpu, warm_for
from grader.errors import UserError
from grader.options import GradingOptions
from grader.spec import Spec

if TYPE_CHECKING:
    from grader.batch.ray import RayExecutor


def executor_for(spec: Spec, options: GradingOptions, workers: int | None, where: str, address: str | None) -> Executor:
    """The executor of a batch of `spec`: `where` "local", `workers` (default: as the cores and the
    memory hold) warm workers here; "ray", the Ray cluster at `address`."""
    if where == "ray":
        return ray_executor().for_batch(spec, options, address, workers)
    gpu = uses_gpu(spec, options)
    workers = workers or default_workers(options.apply(spec.limits).memory_mb)
    return LocalExecutor(workers, gpu=gpu, warm=warm_for([spec], options, gpu))


def ray_executor() -> type[RayExecutor]:
    """The Ray executor's class; a UserError saying what to install where Ray is missing."""
    try:
        from grader.batch.ray import RayExecutor
    except ImportError as missing:
        raise UserError(f"--executor ray needs Ray ({missing}): pip install '.[ray]'") from None
    return RayExecutor
