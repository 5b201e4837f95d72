"""The sandbox's zygote, started before the grading child imports torch.

The zygote imports torch (and what probes need) for seconds; so does the grading child, for its
own computations. `grade` starts the zygote first thing (`zygote_for`) and hands it to the child
it starts next ($GRADER_ZYGOTE, with the zygote's descriptors); a child started otherwise
(`pytest -p grader.plugin.early`) starts one itself, in the hook pytest calls before it imports the
kit's plugin and the tests. Either way the imports run side by side, on two cores, rather than one
after the other. This module imports neither torch nor pytest. The session's plugin
(grader.plugin.hooks) takes the zygote if it is the one it needs (`take`), else starts its own.

A grading on a GPU is left alone: whether it needs one is torch's to say (`auto`), and CUDA's own
start-up dwarfs the import.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from grader import options as options_mod
from grader.environment import ZYGOTE_ENV
from grader.sandbox.api import Zygote
from grader.spec import Spec, preloads, specs_in

if TYPE_CHECKING:
    import pytest

_started: dict[tuple[int, tuple[str, ...]], Zygote] = {}


def threads_of(options: options_mod.GradingOptions) -> int:
    """Each probe's torch threads: as asked, else the cores this grading owns."""
    return options.threads or len(os.sched_getaffinity(0))


def zygote_for(specs: list[Spec], options: options_mod.GradingOptions) -> Zygote | None:
    """A zygote started now for gradings of `specs` with `options`, where it is surely the one they
    need (on the CPU); else None."""
    profiles = ("quick", "full") if options.profile == "auto" else (options.profile,)
    devices = {getattr(spec.profiles.get(name), "device", None) for spec in specs for name in profiles}
    if not specs or options.device or devices != {"cpu"}:
        return None
    return Zygote(threads_of(options), preloads(specs))


def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    handed = os.environ.pop(ZYGOTE_ENV, None)
    if handed is not None:
        zygote = Zygote.taken_over(handed)
    else:
        options = options_mod.from_environment()
        if options is None or "--collect-only" in args:
            return
        zygote = zygote_for(specs_in([arg for arg in args if not arg.startswith("-")]), options)
    if zygote is not None:
        _started[(zygote.threads, zygote.preload)] = zygote


def take(threads: int, preload: tuple[str, ...], gpu: bool) -> Zygote | None:
    """The zygote started early, if it is one for these threads and preloads on the CPU; any other is closed."""
    wanted = None if gpu else _started.pop((threads, preload), None)
    for unused in _started.values():
        unused.close()
    _started.clear()
    return wanted
