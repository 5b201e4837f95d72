"""A batch worker's warm process: what every grading needs, imported once; a fork per submission.

Starting a grading child costs seconds (Python, pytest, torch, the dataset, the sandbox's zygote).
A worker keeps one process that has done all of that, and forks it for each submission: the fork
runs the session (`pytest.main`) with the submission's options and exits, so nothing of one
grading reaches the next; only its records (JSON lines on a pipe) come back. The process never
runs student code: that runs in the sandbox, whose zygote it started once and lends each fork.

    WarmWorker(threads, preload)  the client side, one per batch worker
    main()                        the process, `python -m grader.batch.warm`
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from grader.environment import PARENT_ENV
from grader.errors import GraderError

_PR_SET_PDEATHSIG = 1


class WarmWorker:
    """The client of one warm process: `start(command, env, cwd, records_fd)` runs a grading in a fork."""

    def __init__(
        self,
        threads: int,
        preload: tuple[str, ...] = (),
        datasets: tuple[str, ...] = (),
        gpu: bool = False,
        imports: tuple[str, ...] = (),
    ):
        ours, theirs = socket.socketpair()
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
        self._file = ours.makefile("rb")
        self._hello: dict[str, Any] | None = None

    def ready(self) -> None:
        """Wait until the warm process has its sandbox; a GraderError saying why it cannot have one."""
        if self._hello is None:
            self._hello = self._reply()
        if "broken" in self._hello:
            raise GraderError(self._hello["broken"])

    def start(self, args: list[str], env: dict[str, str], cwd: str, records_fd: int) -> int:
        """Fork a grading (`pytest args`, in `cwd`, with `env` added) writing its records to `records_fd`;
        its pid, for stopping it."""
        self.ready()
        request = json.dumps({"args": args, "env": env, "cwd": cwd}).encode()
        socket.send_fds(self._socket, [struct.pack("<Q", len(request)) + request], [records_fd])
        return int(self._reply()["pid"])

    def wait(self) -> int:
        """The exit code of the grading started last."""
        return int(self._reply()["exit"])

    def _reply(self) -> dict[str, Any]:
        line = self._file.readline()
        if not line:
            raise RuntimeError("the warm worker process ended")
        return json.loads(line)

    def close(self) -> None:
        self._file.close()
        self._socket.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        shutil.rmtree(self._tmp, ignore_errors=True)


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
    replies = control.makefile("wb", buffering=0)
    try:
        zygote.ready()
    except SandboxBroken as broken:
        replies.write(json.dumps({"broken": str(broken)}).encode() + b"\n")
        return
    replies.write(json.dumps({"ready": True}).encode() + b"\n")
    while True:
        try:
            head, fds, _flags, _addr = socket.recv_fds(control, 8, 1)
            if len(head) < 8:
                return
            (length,) = struct.unpack("<Q", head)
            request = json.loads(_read(control, length))
        except (OSError, EOFError, ValueError):
            return
        pid = os.fork()
        if pid == 0:
            control.close()
            _grade(request, fds[0], zygote, hooks, pytest, setup["threads"])
        os.close(fds[0])
        replies.write(json.dumps({"pid": pid}).encode() + b"\n")
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code < 0 or code > 4:  # killed mid-session (a timeout, a cancel): its zygote may be mid-job
            zygote.restart()
        replies.write(json.dumps({"exit": code}).encode() + b"\n")


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


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


if __name__ == "__main__":
    main()
