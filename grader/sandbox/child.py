"""The probe's process: the one place where student code runs. Everything here may meet hostile code.

Forked by the zygote's supervisor (grader.sandbox.zygote) as the first process of the probe's own
namespaces, it mounts a fresh /proc and an empty /tmp and /dev/shm under the quota, writes the
submission's files into its working folder, sets its limits, drops every capability, then imports
the probe module (its source came with the job: no test file, no expected value) and calls the
probe. It writes frames on the result pipe (fd 3): which module it is importing (so that a hang at
import is known as one), and the result or the error, as plain data (grader.codec). Whatever it
writes there is a claim that the grader checks.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import random
import re
import resource
import signal
import struct
import sys
import tempfile
import traceback
import types
from pathlib import Path
from typing import Any

RESULT_FD = 3
# Frames on the result pipe: a kind byte, a length, the payload.
IMPORTING, IMPORTED, RESULT, ERROR, PROGRESS = b"I", b"D", b"R", b"E", b"P"
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND, _MS_REC = 2, 4, 8, 4096, 16384
_MNT_DETACH = 2
_OCTAL = re.compile(r"\\([0-7]{3})")  # mountinfo's escapes (space, tab, newline, backslash)
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS = 1, 24, 38
_libc = ctypes.CDLL(None, use_errno=True)


def main(job: dict[str, Any], out_w: int, result_w: int, ready_w: int, isolated: bool) -> None:
    """Set up, signal `ready_w`, run the probe, report, exit: never returns."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the supervisor's death ends the probe
    os.setsid()  # a session and process group of its own: kill(0) must not reach the zygote's group
    limits = job["limits"]
    if isolated:
        _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
        Path("/proc/sys/user/max_user_namespaces").write_text("0")  # no namespace of its own inside this one
        _fresh_scratch(limits["scratch_mb"])
        workdir = Path("/tmp/work")
    else:
        workdir = Path(tempfile.mkdtemp(prefix="grader-probe-"))
    workdir.mkdir(exist_ok=True)
    for name, data in job["files"].items():
        (workdir / name).write_bytes(bytes(data.numpy()))
    os.write(ready_w, b"r")
    os.close(ready_w)
    _redirect(out_w, result_w)
    os.chdir(workdir)
    os.environ.update(HOME=str(workdir), TMPDIR=str(workdir.parent if isolated else workdir))
    _set_limits(limits)
    if isolated:
        _drop_capabilities()
    me = os.getpid()
    frame, payload = _run(job, str(workdir))
    if os.getpid() != me:  # a copy forked by the student's code: only the probe's process answers
        os._exit(0)
    sys.stdout.flush()
    sys.stderr.flush()
    _frame(frame, payload)
    os._exit(0)


def _fresh_scratch(size_mb: int) -> None:
    """Empty /dev/shm and /tmp under the quota, keeping what the sandbox's view mounts below /tmp
    (an interpreter or its packages installed there): held aside in /dev/shm, then put back."""
    scratch = f"size={size_mb}m,mode=1777"
    _mount("tmpfs", "/dev/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, scratch)
    held = []
    for i, path in enumerate(_mounts_below("/tmp")):
        hold = f"/dev/shm/held-{i}"
        os.mkdir(hold)
        _mount(path, hold, "", _MS_BIND | _MS_REC)  # recursive: the view's mounts are locked to us
        held.append((hold, path))
    _mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, scratch)
    for hold, path in held:
        os.makedirs(path)
        _mount(hold, path, "", _MS_BIND | _MS_REC)  # read-only as it was: a bind keeps the mount's flags
        if _libc.umount2(hold.encode(), _MNT_DETACH) != 0:
            raise OSError(ctypes.get_errno(), f"cannot unmount {hold}")
        os.rmdir(hold)


def _mounts_below(top: str) -> list[str]:
    """The outermost mount points strictly below `top` (/proc/self/mountinfo's fifth field)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _OCTAL.sub(lambda m: chr(int(m[1], 8)), line.split()[4])  # mountinfo writes a space as \040
        if point.startswith(top + "/"):
            points.append(point)
    return sorted(p for p in set(points) if not any(p.startswith(q + "/") for q in points))


def _mount(source: str, target: str, fstype: str, flags: int, options: str | None = None) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, options and options.encode()) != 0:
        raise OSError(ctypes.get_errno(), f"cannot mount {target}")


def _redirect(out_w: int, result_w: int) -> None:
    """stdin empty, stdout and stderr to the output pipe, the result pipe on fd 3, nothing else open."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    if result_w != RESULT_FD:
        os.dup2(result_w, RESULT_FD)
    for fd in map(int, os.listdir("/proc/self/fd")):
        if fd > RESULT_FD:
            with contextlib.suppress(OSError):
                os.close(fd)


def _set_limits(limits: dict[str, Any]) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    file_bytes = limits["file_mb"] * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    cpu = int(limits["cpu_s"]) + 5  # the supervisor stops the tree first; this stops a lone runaway process
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if not limits.get("gpu"):  # CUDA maps far more address space than it uses: it is polled instead
        address_space = _vm_bytes() + limits["memory_mb"] * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _drop_capabilities() -> None:
    """No capability left, none to gain back (no_new_privs), none in the bounding set."""
    for cap in range(64):
        _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()
    if _libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def _frame(kind: bytes, payload: bytes) -> None:
    view = memoryview(kind + struct.pack("<Q", len(payload)) + payload)
    while view:
        view = view[os.write(RESULT_FD, view) :]


class StudentModules:
    """What a probe sees as `sub`: `sub.lenet` imports the student's lenet.py on first use."""

    def __init__(self, modules: dict[str, str], device: str):
        self._modules = modules
        self.device = device

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        file = self._modules.get(name)
        if file is None:
            raise ModuleNotFoundError(f"{name}.py is missing from the submission")
        module = Path(file).stem
        if module in sys.modules:
            return sys.modules[module]
        _frame(IMPORTING, file.encode())
        imported = importlib.import_module(module)
        _frame(IMPORTED, file.encode())
        return imported


def _run(job: dict[str, Any], workdir: str) -> tuple[bytes, bytes]:
    """Import the probe module, call the probe: (RESULT, its value) or (ERROR, what went wrong)."""
    import numpy as np
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from grader import codec, probing

    probing.enable_progress(RESULT_FD)
    register_optimizer_step_post_hook(probing.count_step)  # any training shows its steps on the screen
    torch.set_num_threads(job["limits"]["threads"])
    if job["device"].startswith("cuda") and job["limits"].get("gpu_fraction"):
        torch.cuda.set_per_process_memory_fraction(job["limits"]["gpu_fraction"])
    random.seed(job["seed"])
    np.random.seed(job["seed"] % 2**32)
    torch.manual_seed(job["seed"])
    sys.path.insert(0, workdir)
    sys.dont_write_bytecode = True
    try:
        module = types.ModuleType(job["probe_module"])
        module.__file__ = job["probe_file"]
        sys.modules[job["probe_module"]] = module
        exec(compile(job["probe_source"], job["probe_file"], "exec"), module.__dict__)
        value = getattr(module, job["probe_name"])(StudentModules(job["modules"], job["device"]), *job["args"])
    except BaseException as exc:
        return ERROR, codec.encode(_describe(exc, workdir, set(job["files"])))
    try:
        return RESULT, codec.encode(value)
    except codec.NotData as exc:
        return ERROR, codec.encode({"type": "NotData", "message": str(exc), "frames": []})


def _describe(exc: BaseException, workdir: str, files: set[str]) -> dict[str, Any]:
    """The error as data: its type, message, and the places in the student's files, innermost last."""

    def ours(filename: str | None) -> bool:
        return bool(filename) and Path(filename).parent == Path(workdir) and Path(filename).name in files

    frames = [
        [Path(f.filename).name, f.lineno or 0] for f in traceback.extract_tb(exc.__traceback__) if ours(f.filename)
    ]
    described: dict[str, Any] = {"type": type(exc).__name__}
    if isinstance(exc, SyntaxError) and ours(exc.filename):
        frames.append([Path(exc.filename).name, exc.lineno or 0])
        described["syntax"] = [exc.lineno or 0, exc.offset or 0]
        exc = SyntaxError(exc.msg)  # the message without the place, which the frames give
    message = str(exc.code) if isinstance(exc, SystemExit) else str(exc)
    return {**described, "message": message[:2000], "frames": frames}
