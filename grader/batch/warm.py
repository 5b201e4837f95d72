"""A warm process: what every grading needs, imported once; a fork per submission.

Starting a grading child costs seconds (Python, pytest, torch, the dataset, the sandbox's zygote).
A batch's workers (and `grade --watch`) keep one process that has done all of that, and fork it
for each submission: the fork runs the session (`pytest.main`) with the submission's options and
exits, so nothing of one grading reaches the next; only its records (JSON lines on a pipe) come
back. The workers of one machine share it: their gradings run side by side, each a fork, all
lent the one zygote it started (its protocol takes jobs from several senders). The process never
runs student code: that runs in the sandbox.

    WarmWorker(threads, preload, ...)  the client side, shared by a machine's workers
    main()                             the process, `python -m grader.batch.warm`
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from grader.environment import PARENT_ENV
from grader.errors import GraderError

_PR_SET_PDEATHSIG = 1


class WarmWorker:
    """The client of one warm process: `start(args, env, cwd, records_fd)` runs a grading in a fork of
    it. Several threads may start gradings at once (a batch's workers share one warm process): each
    has its own fork and its own reply socket."""

    def __init__(
        self,
        threads: int,
        preload: tuple[str, ...] = (),
        datasets: tuple[str, ...] = (),
        gpu: bool = False,
        imports: tuple[str, ...] = (),
    ):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # one message, one request
        setup = {"threads": threads, "preload": list(preload), "datasets": list(datasets), "gpu": gpu}
        setup = json.dumps({**setup, "imports": list(imports)})
        kit = str(Path(__file__).resolve().parents[2])  # this grader, wherever it runs from (a Ray node's worker too)
        self._tmp = tempfile.mkdtemp(prefix="grader-warm-")  # what its imports leave (torch's caches): gone with it
        env = {**os.environ, PARENT_ENV: str(os.getpid()), "OMP_NUM_THREADS": str(threads), "PYTHONPATH": kit}
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # torch's idle threads sleep (grader.runner)
        env["TMPDIR"] = self._tmp
        self._process = subprocess.Popen(
            [sys.executable, "-m", "grader.batch.warm", str(theirs.fileno()), setup],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        self._socket = ours
        self._hello: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def ready(self) -> None:
        """Wait until the warm process has its sandbox; a GraderError saying why it cannot have one."""
        with self._lock:
            if self._hello is None:
                self._hello = _message(self._socket)
        if "broken" in self._hello:
            raise GraderError(self._hello["broken"])

    def start(self, args: list[str], env: dict[str, str], cwd: str, records_fd: int) -> WarmGrading:
        """Fork a grading (`pytest args`, in `cwd`, with `env` added) writing its records to `records_fd`."""
        self.ready()
        request = json.dumps({"args": args, "env": env, "cwd": cwd}).encode()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            socket.send_fds(self._socket, [request], [records_fd, theirs.fileno()])
        finally:
            theirs.close()
        grading = WarmGrading(ours)
        grading.pid = int(_message(ours)["pid"])
        return grading

    def close(self) -> None:
        self._socket.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        shutil.rmtree(self._tmp, ignore_errors=True)


class WarmGrading:
    """One grading forked by a warm process: its pid (for stopping it) and its exit code, once."""

    def __init__(self, replies: socket.socket):
        self._replies = replies
        self.pid = 0

    def wait(self) -> int:
        """The grading's exit code."""
        with self._replies:
            return int(_message(self._replies)["exit"])


def _message(sock: socket.socket) -> dict[str, Any]:
    data = sock.recv(1 << 16)
    if not data:
        raise RuntimeError("the warm worker process ended")
    return json.loads(data)


def main() -> None:
    fd, setup = int(sys.argv[1]), json.loads(sys.argv[2])
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # ends with its batch
    from grader.sandbox.api import SandboxBroken, Zygote

    # first: the zygote imports torch while this process does (two cores, not one after the other)
    zygote = Zygote(setup["threads"], tuple(setup["preload"]), setup["gpu"])
    import pytest
    import torch

    import grader.plugin.hooks as hooks
    from grader import data

    for name in setup["imports"]:  # what the tests import (torch._dynamo, with the first optimizer): once, not per fork
        with contextlib.suppress(ImportError):  # a missing extra is said by the test that needs it
            importlib.import_module(name)
    torch.set_num_threads(1)  # no thread pool before a fork: a fork of one can hang in the child
    for name in setup["datasets"]:
        with contextlib.suppress(Exception):  # a missing dataset is said by the grading itself
            data.load(name)
    control = socket.socket(fileno=fd)
    try:
        zygote.ready()
    except SandboxBroken as broken:
        control.send(json.dumps({"broken": str(broken)}).encode())
        return
    control.send(json.dumps({"ready": True}).encode())
    _serve(control, zygote, hooks, pytest, setup["threads"])


def _serve(control: socket.socket, zygote: Any, hooks: Any, pytest: Any, threads: int) -> None:
    """Fork a grading for each request, at once (several may run side by side: they share the zygote,
    whose protocol takes jobs from several senders), and say each one's exit code when it ends."""
    woken_r, woken_w = os.pipe()
    os.set_blocking(woken_w, False)
    signal.set_wakeup_fd(woken_w)  # a grading that ends wakes the loop up
    signal.signal(signal.SIGCHLD, lambda *_: None)
    running: dict[int, socket.socket] = {}  # pid -> where its exit code goes
    while True:
        ready, _, _ = select.select([control, woken_r], [], [])
        if woken_r in ready:
            os.read(woken_r, 4096)
        if control in ready:
            try:
                data, fds, _flags, _addr = socket.recv_fds(control, 1 << 20, 2)
                request = json.loads(data) if data else None
            except (OSError, ValueError):
                request = None
            if request is None or len(fds) != 2:  # the batch has ended (or sent what is no request)
                return
            records_fd, replies = fds[0], socket.socket(fileno=fds[1])
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (control.fileno(), woken_r, woken_w, *(r.fileno() for r in running.values())):
                    os.close(fd)
                _grade(request, records_fd, zygote, hooks, pytest, threads)
            os.close(records_fd)
            with contextlib.suppress(OSError):
                replies.send(json.dumps({"pid": pid}).encode())
            running[pid] = replies
        while running and (ended := os.waitpid(-1, os.WNOHANG))[0]:  # every wake-up: none missed
            replies = running.pop(ended[0], None)  # (the zygote is a child too)
            if replies is not None:
                with replies, contextlib.suppress(OSError):
                    replies.send(json.dumps({"exit": os.waitstatus_to_exitcode(ended[1])}).encode())


def _grade(request: dict[str, Any], records_fd: int, zygote: Any, hooks: Any, pytest: Any, threads: int) -> None:
    """In the fork: one grading session, then exit (never back into the loop)."""
    code = 3
    try:
        os.setsid()
        os.chdir(request["cwd"])
        log = os.open("log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # read when the grader breaks
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.environ.update(request["env"])
        os.environ[PARENT_ENV] = str(os.getppid())  # it dies with the warm process
        tempfile.tempdir = None  # TMPDIR may have changed
        import torch

        torch.set_num_threads(threads)
        hooks.WARM_ZYGOTE = zygote
        code = pytest.main([*request["args"], "--results-fd", str(records_fd)])
    finally:
        sys.stdout.flush()
        os._exit(int(code))


if __name__ == "__main__":
    main()
