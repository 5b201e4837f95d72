"""Run an instructor's probe against student code in a separate process, under limits.

The tests never import student code. Each `Sandbox.run(probe, *args)` asks a fork server (a
process that imported torch once, and never student code) for a fresh child. The child copies
the submission into its own scratch folder, drops to `nobody` when the grader runs as root,
sets its limits, imports the student's modules, calls `probe(sub, *args)` and sends the result
back as data (tensors, numbers, strings, lists, dicts). The tests load it with
`torch.load(weights_only=True)`: no student object, and no student code, reaches them.

A probe is a module-level function of a test file; it runs in the child, so anything it
returns is the submission's word, and the test checks it.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import pwd
import random
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

from grader.submission import Materialized, copy_modules

_CONTEXT = multiprocessing.get_context("forkserver")
_BASE_PRELOAD = ["torch", "pytest", "grader.testing", "grader.d2l", "grader.data"]
_MAX_RESULT_BYTES = 512 * 1024 * 1024
_POLL_S = 0.1
ISOLATION_ENV = "GRADER_ISOLATION"  # "same-user" turns the drop to `nobody` off


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 60.0
    memory_mb: int = 4096
    output_kb: int = 256
    file_mb: int = 64
    processes: int = 64
    threads: int = 0  # torch threads in the child; 0: one per core


class SubmissionError(Exception):
    """The student's code failed in the sandbox. `str(error)` is the one-line reason.

    `limit` names the limit that stopped it ("timeout", "memory", "output", "files",
    "processes"), `exited` is set when the code ended its own process, `frames` are the
    (file, line) places in the student's files, innermost last.
    """

    def __init__(
        self,
        reason: str,
        output: str = "",
        limit: str | None = None,
        frames: tuple[tuple[str, int], ...] = (),
        exited: bool = False,
    ):
        super().__init__(reason)
        self.reason = reason
        self.output = output
        self.limit = limit
        self.frames = frames
        self.exited = exited


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
            raise ModuleNotFoundError(f"the submission has no {name}.py")
        import importlib

        return importlib.import_module(Path(file).stem)


def start_server(preload: tuple[str, ...] = ()) -> None:
    """Start the fork server now, so that its imports overlap with the tests' collection."""
    _CONTEXT.set_forkserver_preload([*_BASE_PRELOAD, *preload])
    forkserver.ensure_running()


def isolation_user() -> tuple[int, int] | None:
    """(uid, gid) of `nobody` when the grader runs as root, else None (same-user isolation).

    As root, each sandbox becomes `nobody` and keeps one capability, reading any file
    (CAP_DAC_READ_SEARCH), so that an interpreter under /root still works: it can then
    write nowhere but its scratch folder, and can neither signal nor trace the grader.
    """
    if os.geteuid() != 0 or os.environ.get(ISOLATION_ENV) == "same-user":
        return None
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return None
    return nobody.pw_uid, nobody.pw_gid


@dataclass
class Sandbox:
    """Runs probes against one materialized submission."""

    submission: Materialized
    device: str = "cpu"
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="grader-sandbox-")))
    user: tuple[int, int] | None = None

    def run(self, probe: Callable[..., Any], *args: Any, seed: int = 0, timeout_s: float | None = None) -> Any:
        """Call `probe(sub, *args)` in a fresh child and return what it returned, as data."""
        import torch

        workdir = Path(tempfile.mkdtemp(dir=self.scratch))
        copy_modules(self.submission, workdir)
        if self.user:
            for path in (workdir, *workdir.iterdir()):
                os.chown(path, *self.user)
        packed = io.BytesIO()
        torch.save(args, packed)
        job = _Job(
            probe_source=Path(probe.__code__.co_filename).read_text(),
            probe_file=probe.__code__.co_filename,
            probe_name=probe.__name__,
            args=packed.getvalue(),
            modules=dict(self.submission.modules),
            workdir=str(workdir),
            device=self.device,
            seed=seed,
            limits=self.limits,
            user=self.user,
            torch_home=torch.hub.get_dir().rsplit("/hub", 1)[0],
        )
        try:
            return _supervise(job, timeout_s or self.limits.timeout_s)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class _Job:
    probe_source: str
    probe_file: str
    probe_name: str
    args: bytes
    modules: dict[str, str]
    workdir: str
    device: str
    seed: int
    limits: SandboxLimits
    user: tuple[int, int] | None
    torch_home: str


def _supervise(job: _Job, timeout_s: float) -> Any:
    out_r, out_w = _CONTEXT.Pipe(duplex=False)
    res_r, res_w = _CONTEXT.Pipe(duplex=False)
    proc = _CONTEXT.Process(target=_child_main, args=(job, out_w, res_w), name="grader-sandbox")
    proc.start()
    out_w.close()
    res_w.close()
    buffers = {out_r.fileno(): bytearray(), res_r.fileno(): bytearray()}
    output, result = buffers[out_r.fileno()], buffers[res_r.fileno()]
    open_fds = set(buffers)
    limit = None
    deadline = time.monotonic() + timeout_s
    output_cap = job.limits.output_kb * 1024
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                limit = "timeout"
                break
            ready, _, _ = select.select([*open_fds, proc.sentinel], [], [], min(remaining, _POLL_S))
            for fd in ready:
                if fd in open_fds:
                    chunk = os.read(fd, 1 << 16)
                    if chunk:
                        buffers[fd] += chunk
                    else:
                        open_fds.discard(fd)
            if len(output) > output_cap:
                limit = "output"
                break
            if len(result) > _MAX_RESULT_BYTES:
                limit = "result"
                break
            if job.device != "cpu" and _rss_mb(proc.pid) > job.limits.memory_mb:
                limit = "memory"
                break
            if not open_fds or (proc.sentinel in ready and not _drain(open_fds, buffers)):
                break
    finally:
        _kill_group(proc)
        out_r.close()
        res_r.close()
    text = output[:output_cap].decode("utf-8", errors="replace")
    if limit:
        raise SubmissionError(_LIMIT_REASONS[limit].format(limits=job.limits, timeout=timeout_s), text, limit)
    return _unpack(bytes(result), proc.exitcode, text, job.limits)


def _drain(open_fds: set[int], buffers: dict[int, bytearray]) -> bool:
    """Read what is left once the child has exited; False when nothing more is coming."""
    ready, _, _ = select.select(list(open_fds), [], [], 0.05)
    for fd in ready:
        chunk = os.read(fd, 1 << 16)
        if chunk:
            buffers[fd] += chunk
        else:
            open_fds.discard(fd)
    return bool(ready) and bool(open_fds)


def _kill_group(proc: multiprocessing.process.BaseProcess) -> None:
    for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            kill()
    proc.join()


def _rss_mb(pid: int) -> float:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


_LIMIT_REASONS = {
    "timeout": "ran past its {timeout:.0f} s time limit (an endless loop, or too much work?)",
    "output": "printed more than {limits.output_kb} KB of output",
    "memory": "used more than {limits.memory_mb} MB of memory",
    "result": "returned more data than the grader accepts",
}

_SIGNAL_REASONS = {
    signal.SIGKILL: "was killed (out of memory?)",
    signal.SIGSEGV: "crashed (segmentation fault)",
    signal.SIGABRT: "aborted (out of memory, or a failed check in native code)",
}


def _unpack(data: bytes, exitcode: int | None, output: str, limits: SandboxLimits) -> Any:
    import torch

    if not data:
        if exitcode is not None and exitcode < 0:
            sig = -exitcode
            reason = _SIGNAL_REASONS.get(sig, f"was killed by signal {sig}")
            raise SubmissionError("the submission " + reason, output, "memory" if sig == signal.SIGKILL else None)
        raise SubmissionError(
            f"the submission ended its process (exit code {exitcode}) before the test could finish"
            " (os._exit? a crash?)",
            output,
            exited=True,
        )
    try:
        message = torch.load(io.BytesIO(data), weights_only=True)
        ok = message["ok"]
    except Exception:
        raise SubmissionError(NOT_DATA, output) from None
    if ok:
        return message["value"]
    raise _error_from(message["error"], output, limits)


NOT_DATA = "the probe's result is not plain data (tensors, numbers, strings, lists, dicts)"


def _error_from(error: dict, output: str, limits: SandboxLimits) -> SubmissionError:
    kind, text = str(error.get("type", "Error")), str(error.get("message", ""))
    frames = tuple((str(f), int(n)) for f, n in error.get("frames", ()))
    where = f" ({frames[-1][0]} line {frames[-1][1]})" if frames else ""
    first = text.strip().splitlines()[0][:300] if text.strip() else ""
    if kind == "SystemExit":
        return SubmissionError(f"the submission called sys.exit({text}){where}", output, frames=frames, exited=True)
    if kind == "NotData":
        return SubmissionError(NOT_DATA, output)
    if "File too large" in text:  # Python ignores SIGXFSZ: the write fails with EFBIG instead
        return SubmissionError(
            f"the submission wrote a file larger than the {limits.file_mb} MB limit{where}", output, "files", frames
        )
    limit = "memory" if kind == "MemoryError" or "can't allocate memory" in text else None
    limit = "processes" if kind == "BlockingIOError" and "fork" in text.lower() else limit
    return SubmissionError(f"{kind}{where}: {first}" if first else f"{kind}{where}", output, limit, frames)


# --- the child ---------------------------------------------------------------------------


def _child_main(job: _Job, out_conn: Any, res_conn: Any) -> None:
    """Runs in the fork server's fresh child: everything here may meet hostile code."""
    os.setsid()
    result_fd = os.dup(res_conn.fileno())
    res_conn.close()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_conn.fileno(), 1)
    os.dup2(out_conn.fileno(), 2)
    out_conn.close()
    os.chdir(job.workdir)
    os.environ.update(HOME=job.workdir, TMPDIR=job.workdir, TORCH_HOME=job.torch_home, MPLBACKEND="Agg")
    if job.user:
        _become(*job.user)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it
    _set_limits(job.limits, job.device)
    message = _run_probe(job)
    sys.stdout.flush()
    sys.stderr.flush()
    import torch

    packed = io.BytesIO()
    try:
        torch.save(message, packed)
    except Exception:  # the probe returned something that is not data
        packed = io.BytesIO()
        torch.save({"ok": False, "error": {"type": "NotData", "message": ""}}, packed)
    view = memoryview(packed.getvalue())
    while view:
        view = view[os.write(result_fd, view) :]
    os.close(result_fd)
    os._exit(0)


_PR_SET_PDEATHSIG, _PR_SET_KEEPCAPS, _PR_SET_NO_NEW_PRIVS = 1, 8, 38
_CAP_DAC_READ_SEARCH = 2
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}


def _prctl(option: int, value: int) -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _become(uid: int, gid: int) -> None:
    """Root -> `nobody` with CAP_DAC_READ_SEARCH only, and no way back (no_new_privs)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    _prctl(_PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    keep = 1 << _CAP_DAC_READ_SEARCH
    caps = (ctypes.c_uint32 * 6)(keep, keep, 0, 0, 0, 0)  # effective, permitted, inheritable (x2)
    number = _SYS_CAPSET.get(os.uname().machine)
    if number is None or libc.syscall(number, header, caps) != 0:
        raise OSError(ctypes.get_errno(), "capset failed: cannot keep read access as nobody")
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)


def _set_limits(limits: SandboxLimits, device: str) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    file_bytes = limits.file_mb * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    tasks = _user_tasks(os.getuid()) + limits.processes
    resource.setrlimit(resource.RLIMIT_NPROC, (tasks, tasks))
    if device == "cpu":  # CUDA maps far more address space than it uses: it gets polled instead
        address_space = _vm_bytes() + limits.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


def _user_tasks(uid: int) -> int:
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1"))
    return count


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _run_probe(job: _Job) -> dict:
    import numpy as np
    import torch

    threads = job.limits.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    random.seed(job.seed)
    np.random.seed(job.seed)
    torch.manual_seed(job.seed)
    sys.path.insert(0, job.workdir)
    sys.dont_write_bytecode = True
    try:
        args = torch.load(io.BytesIO(job.args), weights_only=True)
        namespace: dict[str, Any] = {"__name__": "grader_probe", "__file__": job.probe_file}
        exec(compile(job.probe_source, job.probe_file, "exec"), namespace)
        probe = namespace[job.probe_name]
        value = probe(StudentModules(job.modules, job.device), *args)
        return {"ok": True, "value": value}
    except BaseException as exc:
        return {"ok": False, "error": _describe(exc, job.workdir)}


def _describe(exc: BaseException, workdir: str) -> dict:
    frames = [
        [Path(f.filename).name, f.lineno]
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename.startswith(workdir)
    ]
    if isinstance(exc, SyntaxError) and exc.filename and exc.filename.startswith(workdir):
        frames.append([Path(exc.filename).name, exc.lineno or 0])
    message = str(exc.code) if isinstance(exc, SystemExit) else str(exc)
    return {"type": type(exc).__name__, "message": message[:2000], "frames": frames}


def make_undumpable() -> None:
    """Keep other processes of this user (the sandboxes) out of this one's memory and files.

    A non-dumpable process's /proc entries belong to root, so a same-user process can neither
    ptrace it nor open its descriptors (the result pipe) through /proc/<pid>/fd.
    """
    import ctypes

    pr_set_dumpable = 4
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)
