"""The sandbox's warm process: it imports torch once, then forks one fresh process tree per probe.

It runs inside the platform's sandbox (bubblewrap: a view of the machine that holds the
interpreter, its packages and the grader's runtime, no network, no other process), started by
`grader.sandbox.api`, and never runs student code itself. For each job that arrives on its socket
(a probe, its inputs, the submission's files, and four pipes) it forks a *supervisor*, which

1. gives the probe namespaces of its own (user, mount, pid, IPC, network, UTS): a fresh /proc, an
   empty /tmp and /dev/shm under a size quota, nothing left by an earlier probe, and nothing that
   outlives it (its first process is the pid namespace's init: when it ends, all its processes do);
2. forks the probe's process (`grader.sandbox.child`), which drops every capability and runs the
   student's code;
3. counts the CPU time of the whole probe tree against its budget, stops a probe that has done
   nothing for a while (asleep, deadlocked), watches GPU memory, stops the probe when the grader
   asks (its wall-clock backstop, an output flood), and reports how it ended on the status pipe.

The probe cannot reach the supervisor: it is outside the probe's pid namespace, and the probe
holds none of its pipes. Where the kernel refuses namespaces (the `none` platform), the same code
runs with resource limits only, and says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_POLL_S = 0.05
_TICKS = os.sysconf("SC_CLK_TCK")
_libc = ctypes.CDLL(None, use_errno=True)


def main() -> None:
    """Serve jobs until the grader closes the socket."""
    isolated = _namespaces_work()  # before the imports: a fork of a small process is quicker
    failed = {}  # the grader decides which of them it cannot do without (torch: every probe)
    # grader.environment.PRELOAD_ENV: this file runs in the sandbox and imports nothing of the kit
    for name in filter(None, os.environ.get("GRADER_SANDBOX_PRELOAD", "").split(",")):
        try:
            importlib.import_module(name)
        except (ImportError, OSError) as error:  # OSError: a shared library that is not in the view
            failed[name] = f"{type(error).__name__}: {error}"[:500]
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    control = socket.socket(fileno=int(sys.argv[1]))  # the socket to the grader
    hello = {"ready": True, "isolated": isolated, "cannot_import": failed}
    _send_frame(control, json.dumps(hello).encode(), [])
    from grader import codec  # it imports torch: a zygote without torch has said why, and the grader ends it

    while True:
        try:
            fds = _receive_job(control)
        except (ConnectionError, OSError, EOFError):
            os._exit(0)
        if fds and os.fork() == 0:
            control.close()
            with socket.socket(fileno=fds[0]) as job_socket:  # the job itself comes on its own socket
                job = _read_frame(job_socket)
            _supervise(codec.decode(job, codec.Bounds(max_bytes=1 << 40, max_elements=1 << 40)), fds[1:], isolated)
        for fd in fds:
            os.close(fd)


# --- the protocol -------------------------------------------------------------------------------
# The control socket carries one byte per job, with the job's own socket and its four pipes: a
# message that arrives whole, so that several graders (a batch's warm gradings) can share a zygote,
# and one that stops mid-job (killed) breaks its own socket only. The job follows on that socket,
# length-prefixed, read by the job's supervisor rather than by the zygote.

_JOB_FDS = 5


def _send_frame(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    socket.send_fds(sock, [struct.pack("<Q", len(payload))], fds)
    sock.sendall(payload)


def _receive_job(sock: socket.socket) -> list[int]:
    """The next job's descriptors (its socket, then its pipes); [] for a message that is not a job."""
    data, fds, _flags, _addr = socket.recv_fds(sock, 1, _JOB_FDS)
    if not data:
        raise EOFError
    if len(fds) != _JOB_FDS:
        for fd in fds:
            os.close(fd)
        return []
    return list(fds)


def _read_frame(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 8:
        chunk = sock.recv(8 - len(head))
        if not chunk:
            raise EOFError
        head += chunk
    (length,) = struct.unpack("<Q", head)
    data = bytearray()
    while len(data) < length:
        chunk = sock.recv(min(length - len(data), 1 << 20))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


# --- the supervisor of one probe ---------------------------------------------------------------


def _supervise(job: dict[str, Any], fds: list[int], isolated: bool) -> None:
    """In the zygote's fresh child: isolate, start the probe, watch it, report, exit."""
    out_w, result_w, status_w, control_r = fds
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # this one waits for its probe
    _close_other_fds({out_w, result_w, status_w, control_r})
    try:
        if isolated:
            _enter_namespaces()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            for fd in (status_w, control_r, ready_r):
                os.close(fd)
            from grader.sandbox import child

            child.main(job, out_w, result_w, ready_w, isolated)  # never returns
        for fd in (out_w, result_w, ready_w):
            os.close(fd)
        os.read(ready_r, 1)  # the probe has its own /proc and /tmp now (or has died): watch it
        os.close(ready_r)
        report = _watch(pid, job["limits"], control_r, isolated)
    except Exception as broken:  # the supervisor's own failure: the grader's problem, said plainly
        report = {"exit": None, "signal": None, "cpu_s": 0.0, "limit": "", "broken": repr(broken)}
    data = (json.dumps(report) + "\n").encode()
    while data:
        data = data[os.write(status_w, data) :]
    os._exit(0)


def _close_other_fds(keep: set[int]) -> None:
    for fd in map(int, os.listdir("/proc/self/fd")):
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _namespaces_work() -> bool:
    """Whether a child can get namespaces of its own here (false without user namespaces)."""
    pid = os.fork()
    if pid == 0:
        try:
            _enter_namespaces()
        except OSError:
            os._exit(1)
        os._exit(0)
    _, code = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(code) == 0


def _enter_namespaces() -> None:
    """New user, mount, pid, IPC, network and UTS namespaces; the next child is the pid namespace's init."""
    uid, gid = os.geteuid(), os.getegid()
    flags = _CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWNET | _CLONE_NEWUTS
    if _libc.unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def _watch(pid: int, limits: dict[str, Any], control_r: int, isolated: bool) -> dict[str, Any]:
    """Wait for the probe, stopping it at its CPU budget, at its GPU memory limit, or when asked.

    Besides the CPU time, it reports how long the probe's processes waited for a CPU (run-queue
    delay): a probe stopped by the wall clock was starved by a busy machine when that is large,
    and idle (sleeping, deadlocked) when it is small.
    """
    limit = ""
    usage = {"cpu_s": 0.0, "delay_s": 0.0}
    started = time.monotonic()
    idle_window = max(10.0, min(60.0, limits["cpu_s"]))  # this long without work: asleep, not slow
    active_at, active_total = started, 0.0
    exited = _exit_fd(pid)
    while True:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        for key, value in _usage(pid, isolated, limits.get("gpu", False)).items():
            usage[key] = max(usage.get(key, 0.0), value)
        now = time.monotonic()
        if usage["cpu_s"] + usage["delay_s"] > active_total + 0.02 * (now - active_at):
            active_at, active_total = now, usage["cpu_s"] + usage["delay_s"]
        if usage["cpu_s"] > limits["cpu_s"]:
            limit = "cpu"
        elif now - active_at > idle_window:
            limit = "idle"
        elif limits.get("gpu") and usage["rss_mb"] > limits["memory_mb"]:
            limit = "memory"
        elif control_r in _readable(control_r, *exited):
            limit = os.read(control_r, 64).decode(errors="replace").strip() or "stopped"
        if limit:
            _kill_tree(pid, isolated)
            _, code = os.waitpid(pid, 0)
            break
    for fd in exited:
        os.close(fd)
    if not isolated:
        _kill_tree(pid, isolated)  # what it left behind in its session
    return {
        "exit": os.waitstatus_to_exitcode(code) if os.WIFEXITED(code) else None,
        "signal": -os.waitstatus_to_exitcode(code) if os.WIFSIGNALED(code) else None,
        "cpu_s": round(usage["cpu_s"], 3),
        "delay_s": round(usage["delay_s"], 3),
        "wall_s": round(time.monotonic() - started, 3),
        "limit": limit,
    }


def _exit_fd(pid: int) -> list[int]:
    """A descriptor that becomes readable when `pid` exits, so that a probe's end is seen at once
    rather than at the next poll (probes are many and short); none on a kernel before 5.3."""
    try:
        return [os.pidfd_open(pid)]
    except (AttributeError, OSError):
        return []


def _readable(*fds: int) -> list[int]:
    import select

    return select.select(fds, [], [], _POLL_S)[0]


def _usage(pid: int, isolated: bool, rss: bool) -> dict[str, float]:
    """The probe's processes (its pid namespace's, or its session's): CPU seconds alive and reaped
    (utime + stime + cutime + cstime), seconds waiting for a CPU, and resident memory."""
    cpu = delay = pages = 0
    pids = [p.name for p in Path("/proc").glob("[0-9]*")] if isolated else [str(p) for p in _session(pid)]
    for process in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{process}/stat").read_text().rpartition(")")[2].split()
            cpu += sum(int(f) for f in fields[11:15])
            pages += int(fields[21])
            delay += int(Path(f"/proc/{process}/schedstat").read_text().split()[1])
    usage = {"cpu_s": cpu / _TICKS, "delay_s": delay / 1e9}
    if rss:
        usage["rss_mb"] = pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    return usage


def _session(pid: int) -> list[int]:
    """Without a pid namespace: the processes of the probe's session (it starts one of its own)."""
    found = []
    for path in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(path.read_text().rpartition(")")[2].split()[3]) == pid:
                found.append(int(path.parent.name))
    return found


def _kill_tree(pid: int, isolated: bool) -> None:
    """The pid namespace's init takes every process of the namespace with it; else the session."""
    targets = [pid] if isolated else [pid, *_session(pid)]
    for target in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGKILL)
    if not isolated:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
