"""Run an instructor's probe against student code in a separate process, under limits.

The tests never import student code. Each `Sandbox.run(probe, *args)` asks a fork server (a
process that imported torch once, and never student code) for a fresh child. The child copies
the submission into its own scratch folder, drops to `nobody` when the grader runs as root,
sets its limits, imports the student's modules, calls `probe(sub, *args)` and sends the result
back as data (tensors, numbers, strings, lists, dicts). The tests load it with
`torch.load(weights_only=True)`: no student object, and no student code, reaches them.

As root, the child can also get a user of its own ($GRADER_SANDBOX_UID: a batch worker's), whose
every process is ended after each probe, and a mount namespace of its own where the shared
temporary folders are empty and private, and the kit's reference, hidden tests and any folder
named in `Sandbox.hide` (other students' submissions, the gradebook) are empty.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

from grader.submission import Materialized, copy_modules

_CONTEXT = multiprocessing.get_context("forkserver")
# torch._dynamo: imported by the first optimizer (seconds), so once here instead of once per probe
_BASE_PRELOAD = ["torch", "torch._dynamo", "grader.probing", "grader.d2l", "grader.codec"]
_MAX_RESULT_BYTES = 512 * 1024 * 1024
_POLL_S = 0.1
ISOLATION_ENV = "GRADER_ISOLATION"  # "same-user" turns the drop to `nobody` off
SANDBOX_UID_ENV = "GRADER_SANDBOX_UID"  # a uid no one else uses, instead of `nobody` (batch workers)
THREADS_ENV = "GRADER_THREADS"  # torch threads of each sandbox
GPU_FRACTION_ENV = "GRADER_GPU_FRACTION"  # each sandbox's share of the GPU's memory
HIDE_ENV = "GRADER_HIDE"  # more folders the sandboxes must not see (os.pathsep-separated)
LIMITS_ENV = "GRADER_LIMITS"  # JSON overrides of the spec's [limits] (batch --timeout, the kit's tests)
PARENT_ENV = "GRADER_PARENT_PID"  # the grading child dies with the process that started it
# Where a sandbox could leave files for a later one (or another student's) to read: each probe
# gets empty, private ones instead.
_SHARED_TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 60.0
    memory_mb: int = 4096
    output_kb: int = 256
    file_mb: int = 64
    processes: int = 64
    threads: int = 0  # torch threads in the child; 0: one per core
    gpu_fraction: float = 0.0  # the share of the GPU's memory a probe may take (workers sharing one GPU)


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


def wait_for_server() -> None:
    """Return once the fork server has imported its modules: else the first probe waits for them."""
    proc = _CONTEXT.Process(target=int, name="grader-warm-up")
    proc.start()
    proc.join()


def isolation_user() -> tuple[int, int] | None:
    """(uid, gid) of `nobody` when the grader runs as root, else None (same-user isolation).

    As root, each sandbox becomes `nobody` and keeps one capability, reading any file
    (CAP_DAC_READ_SEARCH), so that an interpreter under /root still works: it can then
    write nowhere but its scratch folder, and can neither signal nor trace the grader.
    """
    if os.geteuid() != 0 or os.environ.get(ISOLATION_ENV) == "same-user":
        return None
    if os.environ.get(SANDBOX_UID_ENV):
        uid = int(os.environ[SANDBOX_UID_ENV])
        return uid, uid
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return None
    return nobody.pw_uid, nobody.pw_gid


def dedicated_user() -> bool:
    """Whether the sandboxes run as a uid of this run's own: then all its processes may be killed."""
    return isolation_user() is not None and bool(os.environ.get(SANDBOX_UID_ENV))


def can_hide_files() -> bool:
    """Whether this process may give each sandbox a mount namespace of its own (CAP_SYS_ADMIN)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    return False


def kill_user(uid: int) -> None:
    """Kill every process of `uid`: only ever a uid of the grader's own, never a shared one."""
    for _ in range(50):
        alive = [pid for pid, owner, _threads, zombie in _processes() if owner == uid and not zombie]
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


@dataclass
class Sandbox:
    """Runs probes against one materialized submission.

    `hide`: folders the probes must not see (as root, with `private` mounts); `reap`: kill every
    process of `user` after each probe (a dedicated uid).
    """

    submission: Materialized
    device: str = "cpu"
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="grader-sandbox-")))
    user: tuple[int, int] | None = None
    private: bool = False
    hide: tuple[str, ...] = ()
    reap: bool = False

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
            private=self.private,
            hide=self.hide,
            tempdir=tempfile.gettempdir(),
        )
        try:
            return _supervise(job, timeout_s or self.limits.timeout_s)
        finally:
            if self.reap and self.user:  # what escaped the process group (a setsid'd fork) ends here
                kill_user(self.user[0])
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
    private: bool
    hide: tuple[str, ...]
    tempdir: str


def _supervise(job: _Job, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s  # from now: the test's own time limit counts its start too
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
    reason = f"{kind}{where}: {first}" if first else f"{kind}{where}"
    limit = None
    if kind == "MemoryError" or "can't allocate memory" in text:
        limit, reason = "memory", f"used more than its {limits.memory_mb} MB of memory: {reason}"
    elif "Resource temporarily unavailable" in text or "can't start new thread" in text:  # EAGAIN at RLIMIT_NPROC
        limit, reason = "processes", f"started more than its {limits.processes} processes or threads: {reason}"
    return SubmissionError(reason, output, limit, frames)


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
    os.dup2(result_fd, 3)
    result_fd = 3
    for fd in map(int, os.listdir("/proc/self/fd")):  # the fork server's socket to the grader, the resource tracker...
        if fd > 3:
            with contextlib.suppress(OSError):
                os.close(fd)
    if job.private:
        _private_mounts(job)
    os.chdir(job.workdir)
    os.environ.update(HOME=job.workdir, TMPDIR=job.workdir, TORCH_HOME=job.torch_home, MPLBACKEND="Agg")
    if job.user:
        _become(*job.user)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it
    _set_limits(job.limits, job.device)
    me = os.getpid()
    message = _run_probe(job)
    if os.getpid() != me:  # a copy forked by the student's code: only the child itself answers
        os._exit(0)
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


_PR_SET_PDEATHSIG, _PR_SET_KEEPCAPS, _PR_SET_SECCOMP, _PR_SET_NO_NEW_PRIVS = 1, 8, 22, 38
_CAP_DAC_READ_SEARCH, _CAP_SYS_ADMIN = 2, 21
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}
# open_by_handle_at(2) opens any inode of a mounted file system by number, under the folders
# mounted over: with CAP_DAC_READ_SEARCH it would undo the hiding. (audit arch, syscall number)
_SYS_OPEN_BY_HANDLE = {"x86_64": (0xC000003E, 304), "aarch64": (0xC00000B7, 265)}
_CLONE_NEWNS = 0x20000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 2, 4, 4096, 16384, 1 << 18


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
    _deny_open_by_handle(libc)


def _deny_open_by_handle(libc: Any) -> None:
    """A seccomp filter: open_by_handle_at (and, on x86_64, every x32 call) fails with EPERM."""
    import ctypes

    arch, number = _SYS_OPEN_BY_HANDLE[os.uname().machine]
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    allow, deny = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    program = [
        (ld_abs, 0, 0, 4),  # the call's architecture
        (jeq, 1, 0, arch),
        (ret, 0, 0, deny),
        (ld_abs, 0, 0, 0),  # the call's number
        (jge, 2, 0, 0x40000000),  # x32 calls
        (jeq, 1, 0, number),
        (ret, 0, 0, allow),
        (ret, 0, 0, deny),
    ]

    class Filter(ctypes.Structure):
        _fields_ = (("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32))

    class Program(ctypes.Structure):
        _fields_ = (("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter)))

    filters = (Filter * len(program))(*program)
    prog = Program(len(program), filters)
    if libc.prctl(_PR_SET_SECCOMP, 2, ctypes.byref(prog), 0, 0) != 0:  # SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "cannot install the seccomp filter")


def _private_mounts(job: _Job) -> None:
    """As root: a mount namespace where the shared temporary folders are new and empty (the
    probe's own folder and the interpreter's stay where they were) and `job.hide` is empty."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def mount(source: str | None, target: str, fstype: str | None, flags: int, options: str | None = None) -> None:
        args = [None if a is None else a.encode() for a in (source, target, fstype, options)]
        if libc.mount(args[0], args[1], args[2], flags, args[3]) != 0:
            raise OSError(ctypes.get_errno(), f"cannot mount {target}")

    if libc.unshare(_CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "cannot make a mount namespace")
    mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing done here reaches the grader's namespace
    shared = sorted({os.path.realpath(d) for d in (*_SHARED_TEMP_DIRS, job.tempdir) if os.path.isdir(d)}, key=len)
    # the interpreter's folders stay; not the grading child's working folder (its log), first on sys.path
    needed = {p for p in (sys.prefix, sys.base_prefix, *sys.path) if p and os.path.isdir(p)} - {os.getcwd()}
    needed.add(job.workdir)
    kept = {p: os.open(p, os.O_PATH) for p in needed if any(_inside(p, d) for d in shared)}
    for folder in shared:
        if os.path.isdir(folder):  # a nested one is gone once its parent is replaced
            mount("tmpfs", folder, "tmpfs", _MS_NOSUID | _MS_NODEV, f"mode=1777,size={job.limits.file_mb}m")
    for path, fd in sorted(kept.items()):
        os.makedirs(path, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
        os.close(fd)
    for path in job.hide:
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV, "size=4k,mode=755")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _set_limits(limits: SandboxLimits, device: str) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    file_bytes = limits.file_mb * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    tasks = sum(threads for _pid, owner, threads, _zombie in _processes() if owner == os.getuid()) + limits.processes
    resource.setrlimit(resource.RLIMIT_NPROC, (tasks, tasks))
    if device == "cpu":  # CUDA maps far more address space than it uses: it gets polled instead
        address_space = _vm_bytes() + limits.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


def _processes() -> Iterator[tuple[int, int, int, bool]]:
    """(pid, real uid, threads, is a zombie) of every process."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        uid, threads = int(fields.get("Uid", "-1").split()[0]), int(fields.get("Threads", "1"))
        yield int(status.parent.name), uid, threads, fields.get("State", "").strip().startswith("Z")


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
    if job.device.startswith("cuda") and job.limits.gpu_fraction:
        torch.cuda.set_per_process_memory_fraction(job.limits.gpu_fraction)
    random.seed(job.seed)
    np.random.seed(job.seed % 2**32)
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


def die_with_parent(parent_pid: int) -> None:
    """Be killed when the process that started this one ends (a batch killed mid-run)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # it ended before we asked
        os._exit(1)


def make_undumpable() -> None:
    """Keep other processes of this user (the sandboxes) out of this one's memory and files.

    A non-dumpable process's /proc entries belong to root, so a same-user process can neither
    ptrace it nor open its descriptors (the result pipe) through /proc/<pid>/fd.
    """
    import ctypes

    pr_set_dumpable = 4
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)
