"""Running student code: the sandbox's API (api), the grader's watch over a probe (supervise), the
platform that isolates it (platform), and inside it the zygote and the probe's process (zygote,
child). A sandbox sees this package's runtime files only, so nothing is imported here."""

from typing import Any


def __getattr__(name: str) -> Any:  # the grader's names, imported on use: never inside a sandbox
    if name in ("Sandbox", "SandboxBroken", "SubmissionError", "Zygote"):
        from grader.sandbox import api

        return getattr(api, name)
    raise AttributeError(name)
