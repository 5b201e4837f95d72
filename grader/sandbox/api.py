"""Running a probe next to student code: `Sandbox.run(probe, *args)` -> plain data, or a described failure.

A `Zygote` is one warm sandbox process (grader.sandbox.zygote) started on the platform's sandbox
(grader.sandbox.platform); it forks a fresh, isolated process tree for each probe. A `Sandbox`
holds one submission's files and runs probes on a zygote: it sends the probe module's source
(never a test file), the probe's name, the grader's inputs and the files, and gets back what the
probe returned, checked and bounded (grader.codec), or a `SubmissionError` that says in one line
what the student's code did (an exception at a line, a limit it crossed, an exit).
"""

from __future__ import annotations

import builtins
import contextlib
import importlib.util
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from grader.i18n import N_, _, place
from grader.sandbox import platform
from grader.sandbox.child import ERROR, IMPORTED, IMPORTING, RESULT
from grader.sandbox.supervise import Finished, SandboxBroken, supervise
from grader.spec import Limits
from grader.text import clean

_START_TIMEOUT_S = 300.0  # importing torch on a loaded machine
REASON_CHARS = 1000  # a reason is one line: its own words and at most 300 of the student's
OUTPUT_CHARS = 16 * 1024  # what a report keeps of an output: its last 30 lines, at most this
NAME_CHARS = 200


class SubmissionError(Exception):
    """The student's code failed in the sandbox. `str(error)` is the one-line reason.

    `limit` names the limit that stopped it ("cpu", "memory", "output", "files", "processes",
    "result", or "backstop": the machine, not the code, was too slow), `exited` is set when the
    code ended its own process, `frames` are the (file, line) places in the student's files,
    innermost last, and `importing` names the student's file whose import failed, if it was one.
    `brief` is the reason with nothing the student's code wrote in it (for hidden tests).
    Its text is the student's code's: cleaned here, once (grader.text), for every writer.
    """

    def __init__(
        self,
        reason: str,
        output: str = "",
        limit: str | None = None,
        frames: tuple[tuple[str, int], ...] = (),
        exited: bool = False,
        importing: str = "",
        brief: str = "",
        syntax: tuple[int, int] | None = None,
    ):
        reason = clean(reason, REASON_CHARS)
        super().__init__(reason)
        self.reason = reason
        self.output = clean(output, OUTPUT_CHARS, lines=True, tail=True)
        self.limit = limit
        self.frames = frames
        self.exited = exited
        self.importing = clean(importing, NAME_CHARS)
        self.brief = clean(brief, REASON_CHARS) if brief else reason  # without any text the student's code chose
        self.syntax = syntax  # (line, column) of a syntax error


class Zygote:
    """One warm sandbox process that forks a fresh, isolated process tree per probe."""

    def __init__(self, threads: int = 1, preload: tuple[str, ...] = (), gpu: bool = False, start: bool = True):
        self.threads, self.preload, self.gpu = threads, preload, gpu
        self._process: subprocess.Popen | None = None
        self._pid = 0  # its process group, for ending it (a zygote taken over has no Popen here)
        self._stderr: BinaryIO | None = None
        self._socket: socket.socket | None = None
        self._view: tuple[str, ...] | None = None
        self._ready = False
        self.isolated = False
        self.mechanism = platform.NONE
        if start:
            self.start()

    def start(self) -> None:
        """Start the process; it imports torch in the background until `ready()` is first needed."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        launch = platform.zygote_launch(theirs.fileno(), self.threads, self.preload, self.gpu)
        self._process = subprocess.Popen(
            launch.command,
            env=launch.env,
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        theirs.close()
        self._pid, self._stderr = self._process.pid, self._process.stderr
        self._socket, self.mechanism, self._view, self._ready = ours, launch.mechanism, launch.view, False

    def handover(self) -> tuple[list[int], str]:
        """What lets a child process take this zygote over (`taken_over`): the descriptors it must
        inherit, and their description. `grade` starts the zygote before its grading child exists."""
        assert self._socket is not None and self._stderr is not None
        fds = [self._socket.fileno(), self._stderr.fileno()]
        shown = {"fds": fds, "pid": self._pid, "mechanism": self.mechanism, "view": self._view}
        return fds, json.dumps({**shown, "threads": self.threads, "preload": list(self.preload), "gpu": self.gpu})

    @classmethod
    def taken_over(cls, description: str) -> Zygote:
        """The zygote a parent handed over (`handover`), in the process that inherited its descriptors."""
        told = json.loads(description)
        zygote = cls(told["threads"], tuple(told["preload"]), told["gpu"], start=False)
        control, stderr = told["fds"]
        zygote._socket, zygote._stderr = socket.socket(fileno=control), os.fdopen(stderr, "rb")
        zygote._pid = told["pid"]
        zygote.mechanism, zygote._view = told["mechanism"], tuple(told["view"]) if told["view"] is not None else None
        return zygote

    def ready(self) -> None:
        """Wait until the zygote has imported what probes need, and know whether it isolates."""
        if self._ready:
            return
        assert self._socket is not None
        self._socket.settimeout(_START_TIMEOUT_S)
        try:
            head = _read_exactly(self._socket, 8)
            hello = json.loads(_read_exactly(self._socket, struct.unpack("<Q", head)[0]))
        except (OSError, ValueError, EOFError) as failure:
            error = self._stderr.read(4000).decode(errors="replace") if self._stderr else ""
            self.close()
            raise SandboxBroken(f"the sandbox did not start ({failure}): {error.strip()}") from None
        self._socket.settimeout(None)
        broken = _cannot_import(hello.get("cannot_import", {}), self._view)
        if broken:
            self.close()
            raise SandboxBroken(broken)
        self.isolated, self._ready = bool(hello["isolated"]), True

    @property
    def isolation(self) -> str:
        """What the report says: the mechanism that ran, or plainly that nothing isolated the code."""
        self.ready()
        if self.mechanism == platform.BWRAP and self.isolated:
            return N_("bubblewrap + namespaces per probe")  # in the report as is: translated where rendered
        return N_("not isolated")

    def send(self, job: bytes, fds: list[int]) -> None:
        """Hand the zygote a job and its pipes (grader.sandbox.zygote: the protocol): one message on the
        shared socket, then the job on a socket of its own."""
        self.ready()
        assert self._socket is not None
        ours, theirs = socket.socketpair()
        with ours:
            try:
                socket.send_fds(self._socket, [b"J"], [theirs.fileno(), *fds])
            finally:
                theirs.close()
            ours.sendall(struct.pack("<Q", len(job)) + job)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pid, signal.SIGKILL)
            self._pid = 0
        if self._process is not None:
            self._process.wait()
            self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def restart(self) -> None:
        self.close()
        self.start()


def _cannot_import(failed: dict[str, str], view: tuple[str, ...] | None) -> str:
    """What a zygote could not import that this process can (torch, the grader's runtime): the
    sandbox is of no use without it. One line, naming the folder its view lacks where that is why.
    A module missing here too is an extra not installed: the probe that needs it says so."""
    for name, error in failed.items():
        with contextlib.suppress(ImportError, ValueError):
            if importlib.util.find_spec(name) is None:
                continue
            lacking = platform.view_lacks(name, view) if view is not None else None
            why = f"{lacking} is not in its view (a .pth site directory?)" if lacking else error
            return f"the sandbox cannot import {name}: {why}"
    return ""


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("closed")
        data += chunk
    return data


@dataclass
class Sandbox:
    """Runs probes against one submission: `files` (name -> bytes) and the module each file is."""

    files: dict[str, bytes]
    modules: dict[str, str]  # assignment module name -> file name
    zygote: Zygote
    limits: Limits = field(default_factory=Limits)
    device: str = "cpu"
    gpu_fraction: float = 0.0
    last_cpu_s: float = 0.0  # what the last probe used

    def run(
        self,
        probe: Callable[..., Any],
        *args: Any,
        cpu_s: float | None = None,
        seed: int = 0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> Any:
        """Call `probe(sub, *args)` in a fresh sandboxed process and return what it returned, as data.

        `cpu_s`: the CPU seconds the probe's process tree may use (default: the spec's per-test
        limit); the wall clock gets several times that, as a backstop for a machine too busy.
        `on_progress` is called with what a long probe says of its progress (for the screen only).
        """
        import torch  # here, not at the top: a grading child starts its zygote before it imports torch

        from grader import codec

        budget = cpu_s or self.limits.test_timeout_s
        module = sys.modules[probe.__module__]
        job = {
            "probe_module": probe.__module__,
            "probe_file": Path(module.__file__).name,
            "probe_source": Path(module.__file__).read_text(),
            "probe_name": probe.__name__,
            "args": list(args),
            "files": {name: torch.frombuffer(bytearray(data), dtype=torch.uint8) for name, data in self.files.items()},
            "modules": self.modules,
            "device": self.device,
            "seed": seed,
            "limits": {
                "cpu_s": budget,
                "memory_mb": self.limits.memory_mb,
                "file_mb": self.limits.file_mb,
                "scratch_mb": self.limits.scratch_mb,
                "processes": self.limits.processes,
                "threads": self.zygote.threads,
                "gpu": self.device.startswith("cuda"),
                "gpu_fraction": self.gpu_fraction,
            },
        }
        self.last_cpu_s = 0.0
        finished = supervise(self.zygote, codec.encode(job), budget, self.limits, on_progress)
        self.last_cpu_s = float(finished.status.get("cpu_s", 0.0))
        return _outcome(finished, budget, self.limits)


# --- what came back -------------------------------------------------------------------------


def _frames(data: bytes) -> list[tuple[bytes, bytes]]:
    """The frames on the result pipe, up to the first malformed one."""
    frames, at = [], 0
    while at + 9 <= len(data):
        kind, (length,) = data[at : at + 1], struct.unpack("<Q", data[at + 1 : at + 9])
        if at + 9 + length > len(data):
            break
        frames.append((kind, data[at + 9 : at + 9 + length]))
        at += 9 + length
    return frames


def _outcome(finished: Finished, budget: float, limits: Limits) -> Any:
    from grader import codec

    frames = _frames(finished.result)
    importing = ""
    for kind, payload in frames:
        if kind == IMPORTING:
            importing = payload.decode(errors="replace")
        elif kind == IMPORTED:
            importing = ""
    output, status = finished.output, finished.status
    limit = status.get("limit", "")
    if limit == "backstop" and not starved(status):
        limit = status["limit"] = "idle"
    if limit:
        raise SubmissionError(_limit_reason(limit, status, budget, limits), output, limit, importing=importing)
    answer = next((f for f in reversed(frames) if f[0] in (RESULT, ERROR)), None)
    if answer is None:
        raise _ended_early(status, output, importing)
    try:
        bounds = codec.Bounds(max_bytes=limits.result_mb * 2**20)
        value = codec.decode(answer[1], bounds, lambda text: clean(text, bounds.max_string, lines=True))
    except codec.BadMessage as bad:
        raise SubmissionError(_("the probe's result was refused: {why}").format(why=bad), output) from None
    if answer[0] == RESULT:
        return value
    raise _error_from(value if isinstance(value, dict) else {}, output, limits, importing)


def _limit_reason(limit: str, status: dict[str, Any], budget: float, limits: Limits) -> str:
    cpu, wall = float(status.get("cpu_s", 0)), float(status.get("wall_s", 0))
    reasons = {
        "idle": _(
            "waited {wall:.0f} s while using only {cpu:.0f} s of CPU: the code sleeps, waits for input or is deadlocked"
        ),
        "cpu": _("your code used {cpu:.0f} s of CPU, the limit is {budget:.0f} s (an endless loop, or too much work?)"),
        "backstop": _(
            "stopped after {wall:.0f} s of wall-clock time having used only {cpu:.0f} s of its {budget:.0f} s of CPU:"
            " the grading machine was too busy (the grader's problem, not your code's)"
        ),
        "output": _("printed more than {output_kb} KB of output"),
        "result": _("returned more data than the grader accepts"),
        "memory": _("used more than {memory_mb} MB of memory"),
    }
    reason = reasons.get(limit, _("was stopped ({limit})"))
    return reason.format(wall=wall, cpu=cpu, budget=budget, limit=limit, **asdict(limits))


def starved(status: dict[str, Any]) -> bool:
    """Whether a probe stopped by the wall clock spent most of it working or waiting for a CPU
    (a busy machine), rather than asleep (the code's own doing)."""
    busy = float(status.get("cpu_s", 0)) + float(status.get("delay_s", 0))
    return busy >= 0.5 * float(status.get("wall_s", 0) or 1)


NOT_DATA = N_("the probe's result is not plain data (tensors, numbers, strings, lists, dicts)")

_SIGNAL_REASONS = {
    signal.SIGKILL: N_("the submission was killed (out of memory?)"),
    signal.SIGSEGV: N_("the submission crashed (segmentation fault)"),
    signal.SIGABRT: N_("the submission aborted (out of memory, or a failed check in native code)"),
    signal.SIGXCPU: N_("the submission used more CPU time than its limit"),
}


def _ended_early(status: dict[str, Any], output: str, importing: str) -> SubmissionError:
    if status.get("broken"):
        raise SandboxBroken(f"the sandbox's supervisor failed: {status['broken']}")
    sig = status.get("signal")
    if sig:
        reason = _(_SIGNAL_REASONS.get(sig, N_("the submission was killed by signal {signal}"))).format(signal=sig)
        limit = "memory" if sig == signal.SIGKILL else "cpu" if sig == signal.SIGXCPU else None
        return SubmissionError(reason, output, limit, importing=importing)
    return SubmissionError(
        _(
            "the submission ended its process (exit code {code}) before the test could finish (os._exit? a crash?)"
        ).format(code=status.get("exit")),
        output,
        exited=True,
        importing=importing,
    )


def _error_from(error: dict, output: str, limits: Limits, importing: str) -> SubmissionError:
    kind, text = str(error.get("type", "Error"))[:100], str(error.get("message", ""))
    frames = tuple(
        (str(f)[:200], int(n))
        for f, n in (pair for pair in error.get("frames", ()) if isinstance(pair, (list, tuple)) and len(pair) == 2)
        if isinstance(n, int)
    )[-50:]
    where = f" ({place(*frames[-1])})" if frames else ""
    first = text.strip().splitlines()[0][:300] if text.strip() else ""
    builtin = isinstance(getattr(builtins, kind, None), type)  # a class name the student could not choose
    brief = f"{kind}{where}" if builtin else _("the submission's code failed{where}").format(where=where)
    syntax = error.get("syntax")
    syntax = (int(syntax[0]), int(syntax[1])) if isinstance(syntax, list) and len(syntax) == 2 else None
    if kind == "SystemExit":
        reason = _("the submission called sys.exit({code}){where}").format(code=text[:100], where=where)
        brief = _("the submission called sys.exit(){where}").format(where=where)
        return SubmissionError(reason, output, frames=frames, exited=True, importing=importing, brief=brief)
    if kind == "NotData":
        reason = _("the probe's result is not plain data: {what}").format(what=first)
        return SubmissionError(reason, output, brief=_(NOT_DATA))
    if "File too large" in text:  # Python ignores SIGXFSZ: the write fails with EFBIG instead
        reason = _("the submission wrote a file larger than the {file_mb} MB limit{where}")
        reason = reason.format(file_mb=limits.file_mb, where=where)
        return SubmissionError(reason, output, "files", frames, importing=importing)
    if "No space left on device" in text:
        reason = _("the submission filled its {scratch_mb} MB of scratch space{where}")
        reason = reason.format(scratch_mb=limits.scratch_mb, where=where)
        return SubmissionError(reason, output, "files", frames, importing=importing)
    reason = f"{kind}{where}: {first}" if first else f"{kind}{where}"
    limit = None
    if kind == "MemoryError" or "can't allocate memory" in text:
        brief = _("used more than its {memory_mb} MB of memory{where}").format(memory_mb=limits.memory_mb, where=where)
        limit, reason = "memory", f"{brief}: {reason}"
    elif "Resource temporarily unavailable" in text or "can't start new thread" in text:  # EAGAIN at RLIMIT_NPROC
        brief = _("started more than its {processes} processes or threads{where}")
        brief = brief.format(processes=limits.processes, where=where)
        limit, reason = "processes", f"{brief}: {reason}"
    return SubmissionError(reason, output, limit, frames, importing=importing, brief=brief, syntax=syntax)
