"""Every GRADER_* environment variable the kit reads, and the small readers of them.

A leaf: it imports nothing of the kit, so that any module (the options, the spec, the sandbox's
platform layer) can read the environment without importing another. The sandbox's zygote spells
GRADER_SANDBOX_PRELOAD itself: it runs in the sandbox and imports nothing of the kit.
"""

from __future__ import annotations

import os

OPTIONS_ENV = "GRADER_OPTIONS"  # the grading options as one document, for the grading child (grader.options)
DATA_DIR_ENV = "GRADER_DATA_DIR"  # where the datasets are, when --data-dir is not given
DOWNLOAD_ENV = "GRADER_DOWNLOAD"  # "1": datasets may be downloaded
ROOT_ENV = "GRADER_ROOT"  # the kit's root, when not found above the working folder
SEED_ENV = "GRADER_SEED"  # plain pytest: this grading's seed, instead of a random one
PARENT_ENV = "GRADER_PARENT_PID"  # the grading child dies with the process that started it
SANDBOX_ENV = "GRADER_SANDBOX"  # "none": no isolation even where bubblewrap works (the kit's tests of that path)
PRELOAD_ENV = "GRADER_SANDBOX_PRELOAD"  # the modules the sandbox's zygote imports once
ZYGOTE_ENV = "GRADER_ZYGOTE"  # a zygote `grade` started and hands its grading child (grader.plugin.early)
GRADESCOPE_ENV = "GRADER_GRADESCOPE_ROOT"  # a Gradescope autograder's run_autograder: what stands for /autograder


def seed_from_environment() -> int | None:
    value = os.environ.get(SEED_ENV)
    return int(value) if value else None


def sandbox_disabled() -> bool:
    return os.environ.get(SANDBOX_ENV) == "none"


def download_allowed() -> bool:
    return os.environ.get(DOWNLOAD_ENV, "") in ("1", "true", "yes")


def data_dir_from_environment() -> str | None:
    return os.environ.get(DATA_DIR_ENV) or None
