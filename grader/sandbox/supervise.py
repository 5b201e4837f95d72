"""The grader's watch over one probe: its pipes, what it may print and return, and the wall clock.

The probe's own supervisor, inside the sandbox, counts its CPU time and stops it at its budget
(grader.sandbox.zygote); from here the grader reads the probe's output and result with a cap on
each, and asks the supervisor to stop the probe when a cap is crossed or when the wall clock
passes a backstop several times the CPU budget (a machine too busy to give the probe its CPU time:
the grader's problem, reported as such). A supervisor that does not answer means a broken
sandbox: the zygote is restarted and the test fails as the grader's error, never the student's.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grader.spec import Limits

if TYPE_CHECKING:
    from grader.sandbox.api import Zygote

BACKSTOP_FACTOR = 4.0  # the wall clock a probe gets: this many times its CPU budget, plus a margin
BACKSTOP_MARGIN_S = 30.0
_ANSWER_GRACE_S = 20.0  # how long a stopped probe's supervisor may take to say so
_CHUNK = 1 << 16


class SandboxBroken(RuntimeError):
    """The sandbox itself failed (not the student's code): the grader's problem."""


@dataclass
class Finished:
    output: str  # what the probe printed (capped)
    result: bytes  # the frames it wrote on its result pipe (capped)
    status: dict[str, Any]  # the supervisor's report: exit, signal, cpu_s, wall_s, limit


def backstop_s(cpu_s: float) -> float:
    return BACKSTOP_FACTOR * cpu_s + BACKSTOP_MARGIN_S


class Frames:
    """The result pipe's frames as they arrive: progress frames go to `on_progress` (shown, never
    scored); the others are kept, up to `cap` bytes."""

    def __init__(self, cap: int, on_progress: Callable[[dict[str, Any]], None] | None):
        self.cap, self.on_progress = cap, on_progress
        self.kept = bytearray()
        self.pending = bytearray()

    def feed(self, chunk: bytes) -> bool:
        """Take a chunk; False once more than `cap` bytes are to be kept."""
        self.pending += chunk
        while len(self.pending) >= 9:
            (length,) = struct.unpack("<Q", self.pending[1:9])
            if length > self.cap:
                return False
            if len(self.pending) < 9 + length:
                break
            frame, self.pending = bytes(self.pending[: 9 + length]), self.pending[9 + length :]
            if frame[:1] == b"P":
                self._progress(frame[9:])
            else:
                self.kept += frame
        return len(self.kept) + len(self.pending) <= self.cap

    def _progress(self, payload: bytes) -> None:
        if self.on_progress is None or len(payload) > 4096:
            return
        with contextlib.suppress(ValueError, TypeError):
            fields = json.loads(payload)
            if isinstance(fields, dict):
                self.on_progress(fields)


def supervise(
    zygote: Zygote,
    job: bytes,
    cpu_s: float,
    limits: Limits,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> Finished:
    """Send `job` to the zygote and watch the probe until its supervisor reports how it ended."""
    out_r, out_w = os.pipe()
    result_r, result_w = os.pipe()
    status_r, status_w = os.pipe()
    control_r, control_w = os.pipe()
    for attempt in range(2):  # a zygote that died (killed with its machine's processes?) is started again
        try:
            zygote.send(job, [out_w, result_w, status_w, control_r])
            break
        except (OSError, SandboxBroken) as failure:
            zygote.restart()
            if attempt:
                for fd in (out_r, out_w, result_r, result_w, status_r, status_w, control_r, control_w):
                    os.close(fd)
                raise SandboxBroken(f"the sandbox stopped taking probes ({failure})") from None
    for fd in (out_w, result_w, status_w, control_r):
        os.close(fd)
    buffers = {out_r: bytearray(), status_r: bytearray()}
    caps = {out_r: limits.output_kb * 1024, status_r: 1 << 16}
    frames = Frames(limits.result_mb * 2**20, on_progress)
    open_fds = {out_r, result_r, status_r}
    deadline = time.monotonic() + backstop_s(cpu_s)
    stopped_by_us = ""
    answer_by = None
    try:
        while status_r in open_fds or (open_fds and answer_by and time.monotonic() < answer_by):
            now = time.monotonic()
            if not stopped_by_us and now > deadline:
                stopped_by_us = _stop(control_w, "backstop")
            if stopped_by_us and answer_by is None:
                answer_by = now + _ANSWER_GRACE_S
            if answer_by is not None and now > answer_by and status_r in open_fds:
                zygote.restart()
                raise SandboxBroken("the sandbox's supervisor did not answer after stopping a probe")
            ready, _, _ = select.select(list(open_fds), [], [], 0.5)
            for fd in ready:
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    open_fds.discard(fd)
                    if fd == status_r and answer_by is None:
                        answer_by = time.monotonic() + 2.0  # the pipes' last bytes
                    continue
                if fd == result_r:
                    if not frames.feed(chunk) and not stopped_by_us:
                        stopped_by_us = _stop(control_w, "result")
                    continue
                room = caps[fd] - len(buffers[fd])
                buffers[fd] += chunk[: max(room, 0)]
                if len(chunk) > room and not stopped_by_us:  # the rest is read and dropped
                    stopped_by_us = _stop(control_w, "output")
    finally:
        for fd in (out_r, result_r, status_r, control_w):
            with contextlib.suppress(OSError):
                os.close(fd)
    status = _status(bytes(buffers[status_r]))
    if stopped_by_us and not status.get("limit"):
        status["limit"] = stopped_by_us
    output = bytes(buffers[out_r]).decode("utf-8", errors="replace")
    return Finished(output, bytes(frames.kept), status)


def _stop(control_w: int, why: str) -> str:
    with contextlib.suppress(OSError):
        os.write(control_w, why.encode())
    return why


def _status(data: bytes) -> dict[str, Any]:
    """The supervisor's one-line report (it is trusted code, but the pipe could be cut short)."""
    line = data.split(b"\n", 1)[0]
    try:
        status = json.loads(line)
    except ValueError:
        raise SandboxBroken(f"the sandbox's supervisor gave no report ({line[:200]!r})") from None
    if not isinstance(status, dict):
        raise SandboxBroken("the sandbox's supervisor gave no report")
    return status
