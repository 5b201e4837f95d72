"""Start the sandbox's zygote as the grading child starts, before it imports torch.

The zygote imports torch (and what probes need) for seconds; so does the grading child, for its
own computations. `grade` loads this plugin first (`-p grader.plugin.early`): pytest calls its
hook before it imports the kit's plugin and the tests, so the two imports run side by side, on two
cores, rather than one after the other. It imports nothing that imports torch. The session's
plugin (grader.plugin.hooks) takes the zygote if it is the one it needs, else starts its own.

A grading on a GPU is left alone: whether it needs one is torch's to say (`auto`), and CUDA's own
start-up dwarfs the import.
"""

from __future__ import annotations

import os

import pytest

from grader import options as options_mod
from grader.sandbox.api import Zygote
from grader.spec import specs_in

_started: dict[tuple[int, tuple[str, ...]], Zygote] = {}


def threads_of(options: options_mod.GradingOptions) -> int:
    """Each probe's torch threads: as asked, else the cores this grading owns."""
    return options.threads or len(os.sched_getaffinity(0))


def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    options = options_mod.from_environment()
    if options is None or "--collect-only" in args:
        return
    specs = specs_in([arg for arg in args if not arg.startswith("-")])
    profiles = ("quick", "full") if options.profile == "auto" else (options.profile,)
    devices = {getattr(spec.profiles.get(name), "device", None) for spec in specs for name in profiles}
    if not specs or options.device or devices != {"cpu"}:
        return
    preload = tuple(sorted({m for spec in specs for m in spec.sandbox_preload}))
    _started[(threads_of(options), preload)] = Zygote(threads_of(options), preload, gpu=False)


def take(threads: int, preload: tuple[str, ...], gpu: bool) -> Zygote | None:
    """The zygote started early, if it is one for these threads and preloads on the CPU; any other is closed."""
    wanted = None if gpu else _started.pop((threads, preload), None)
    for unused in _started.values():
        unused.close()
    _started.clear()
    return wanted
