"""`grade doctor`: whether this machine can grade, per profile, and what to do where it cannot.

Each check is one line: ✓ what holds, ✗ what is missing and what to do about it, · what only
another profile would need. A check counts where the profile asked for needs it: `quick` needs the
sandbox and the packaged datasets; `full` the sandbox, a CUDA device usable inside it, and every
dataset and weights file of the full profiles, verified; `auto` whatever `auto` would pick, which
falls back on `quick`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from grader import data, doctor_probes, staging
from grader.errors import UserError
from grader.spec import Spec, preloads

DISK_NEEDED_MB = 1024  # the full datasets (~300 MB) and a batch's scratch
CONVOLUTION_TOLERANCE = 1e-3  # TF32 on an Ampere or later GPU: ~1e-3 relative


@dataclass(frozen=True)
class Line:
    ok: bool  # False: the profile asked for cannot run
    text: str


def _line(ok: bool | None, what: str, detail: str) -> Line:
    """ok None: not needed by the profile asked for, said for what it tells."""
    mark = {True: "✓", False: "✗", None: "·"}[ok]
    return Line(ok is not False, f"{mark} {what}: {detail}")


def diagnose(specs: list[Spec], profile: str, data_dir: str | Path | None) -> Iterator[Line]:
    root = data.data_dir(data_dir)
    wants_full = profile == "full"
    yield from _sandbox(specs)
    yield from _packaged(specs, needed=profile != "full")
    gpu = yield from _gpu(needed=wants_full)
    ready = {}
    for need in staging.needs(specs):
        status = staging.need_status(need, root)
        ready[need.name] = status.ready
        fix = f"grade data import {need.name} PATH" if need.kind == "dataset" else f"copy it into {status.where.parent}"
        detail = status.detail if status.ready else f"{status.detail} → {fix}"
        yield _line(status.ready or (None if not wants_full else False), _title(need), detail + f" [{_users(need)}]")
    yield from _room(specs, root)
    if profile == "auto":
        for spec in specs:
            yield _line(None, f"{spec.name} auto", _auto_choice(spec, gpu, ready))


def _title(need: staging.Need) -> str:
    return data.title(need.name) if need.kind == "dataset" else f"{need.name} weights"


def _users(need: staging.Need) -> str:
    return ", ".join(need.used_by)


def _sandbox(specs: list[Spec]) -> Iterator[Line]:
    from grader.sandbox import Sandbox, SandboxBroken, Zygote, platform

    if platform.mechanism() == platform.BWRAP:
        yield _line(True, "bubblewrap", f"isolates the sandbox here (probes run as {_sandbox_user()})")
    else:
        yield _line(
            False,
            "bubblewrap",
            "missing or refused here: student code would run unisolated, and `grade batch` refuses → "
            "apt-get install bubblewrap (and allow unprivileged user namespaces)",
        )
    preload = preloads(specs)
    started = time.monotonic()
    try:
        zygote = Zygote(preload=preload)
        try:
            versions = Sandbox({}, {}, zygote).run(doctor_probes.imports, ["torch", "numpy", *preload])
        finally:
            zygote.close()
    except (SandboxBroken, UserError) as failure:
        yield _line(False, "sandbox", f"did not start: {failure}")
        return
    if isinstance(versions, dict) and "error" in versions:
        yield _line(False, "sandbox", f"could not import what the probes need: {versions['error']}")
        return
    shown = ", ".join(f"{name} {version}".strip() for name, version in versions.items())
    yield _line(True, "sandbox", f"starts and imports {shown} ({time.monotonic() - started:.1f} s)")


def _sandbox_user() -> str:
    return "nobody" if os.geteuid() == 0 else "this user"


def _packaged(specs: list[Spec], needed: bool) -> Iterator[Line]:
    named = {profile.dataset for spec in specs for profile in spec.profiles.values()}
    for name in sorted(name for name in named if name and name not in staging.SIZES):
        try:
            dataset = data.load(name)
        except UserError as failure:
            yield _line(False if needed else None, data.title(name), f"{failure} → pip install -e '.[all]'")
            continue
        yield _line(True, data.title(name), f"{len(dataset.train):,} train / {len(dataset.test):,} test images")


def _gpu(needed: bool):
    """One line on CUDA; returns whether a GPU is usable inside the sandbox."""
    import torch

    if not torch.cuda.is_available():
        built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        yield _line(False if needed else None, "GPU", f"no CUDA device visible to torch ({torch.__version__}, {built})")
        return False
    from grader.sandbox import Sandbox, Zygote

    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 3, 16, 16, generator=generator), torch.randn(4, 3, 3, 3, generator=generator)
    zygote = Zygote(gpu=True)
    try:
        got = Sandbox({}, {}, zygote, device="cuda").run(doctor_probes.convolution, x, w)
    finally:
        zygote.close()
    name = torch.cuda.get_device_name(0)
    if not isinstance(got, torch.Tensor):
        yield _line(False if needed else None, "GPU", f"{name} is visible, but not inside the sandbox: {got}")
        return False
    error = float((got - torch.nn.functional.conv2d(x, w)).abs().max())
    ok = error <= CONVOLUTION_TOLERANCE * float(got.abs().max())
    verdict = "matches the CPU's" if ok else f"differs from the CPU's by {error:.2g}"
    yield _line(ok or (False if needed else None), "GPU", f"a convolution on {name} inside the sandbox {verdict}")
    return ok


def _room(specs: list[Spec], root: Path) -> Iterator[Line]:
    existing = next(p for p in (root, *root.parents) if p.exists())
    free_mb = shutil.disk_usage(existing).free / 2**20
    yield _line(free_mb >= DISK_NEEDED_MB, "disk", f"{free_mb / 1024:,.1f} GiB free for {root}")
    memory_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    largest = max(spec.limits.memory_mb for spec in specs)
    enough = memory_mb >= largest + 1024
    yield _line(enough, "memory", f"{memory_mb / 1024:,.1f} GiB; a grading may use {largest / 1024:g} GiB")


def _auto_choice(spec: Spec, gpu: bool, ready: dict[str, bool]) -> str:
    """Which profile `auto` picks for `spec` here, and why."""
    full = spec.profile("full")
    missing = [] if gpu or not full.device.startswith("cuda") else ["a GPU"]
    for name in filter(None, (full.dataset, staging.weights_of(full))):
        if not ready.get(name, True):
            missing.append(data.title(name) if name in staging.SIZES else f"{name} weights")
    return f"quick (full needs {', '.join(missing)})" if missing else "full"
