"""The session's records, one JSON line each on the pipe `grade` reads (grader.runner).

`session` (the profile, the submission, its blanks), `collected` (the tests and their points,
known before any probe runs), one `result` per test, `load_error` for a student's file that could
not be imported, and `done`. Without a pipe (plain pytest) nothing is written.
"""

from __future__ import annotations

import json
import os
from typing import Any


class Records:
    def __init__(self, fd: int | None):
        self.stream = os.fdopen(fd, "w", buffering=1) if fd is not None else None

    def send(self, kind: str, **payload: Any) -> None:
        if self.stream:
            self.stream.write(json.dumps({"kind": kind, **payload}) + "\n")

    def close(self) -> None:
        if self.stream:
            self.stream.close()
            self.stream = None
