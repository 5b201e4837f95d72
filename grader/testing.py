"""What grading tests use, on the grader's side: inputs the submission cannot know, and comparisons.

A test draws its inputs with `generator(label)` (seeded per grading, so a submission cannot know
them in advance), hands them to a probe (`probes_for(__file__)` gives the assignment's probes),
and compares what comes back with its own computation. Nothing here runs student code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

from grader.blanks import is_bundle
from grader.i18n import N_, _

_SEED = [0]


def use_seed(seed: int) -> None:
    """Set this grading's seed (the plugin does, once per session)."""
    _SEED[0] = seed


def grading_seed() -> int:
    """This grading's seed: the hand-in's own (grader.seeding), or the one given (calibration, --seed)."""
    return _SEED[0]


def derived_seed(label: str) -> int:
    """A 63-bit seed of this grading's for one purpose: the same label, the same seed."""
    digest = hashlib.sha256(f"{_SEED[0]}:{label}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(label: str) -> torch.Generator:
    """A torch generator for one set of inputs, seeded from this grading's seed and `label`."""
    return torch.Generator().manual_seed(derived_seed(label))


def probes_for(test_file: str) -> ModuleType:
    """The probes of the assignment that holds `test_file`: `<assignment>/probes.py`, or
    `<assignment>/hidden/probes.py` for a hidden test. They are what a test may hand a sandbox."""
    folder = Path(test_file).resolve().parent
    if folder.name == "hidden":
        return _module(folder / "probes.py", f"grader_probes.{folder.parent.name}.hidden")
    return _module(folder.parent / "probes.py", f"grader_probes.{folder.parent.name}")


def architectures_for(test_file: str) -> ModuleType:
    """The grader's own copies of the architectures the statement fixes: `<assignment>/architectures.py`.
    A test loads the student's returned weights into them; no sandbox ever sees the module."""
    assignment = Path(test_file).resolve().parent.parent
    return _module(assignment / "architectures.py", f"grader_architectures.{assignment.name}")


OFFICIAL_ONLY = N_("checked by the official grading only")


def official_for(test_file: str) -> ModuleType | None:
    """What the grader's checks need that is an answer (its own copy of a model the starter leaves
    blank, an answer table): `<assignment>/official/answers.py`, never released. None in a student's
    bundle: there a test checks what the statement states, and skips what needs the answer
    (`official_only`); a test marked `@pytest.mark.official(what)` says what it checks only in the kit."""
    assignment = Path(test_file).resolve().parent.parent
    path = assignment / "official" / "answers.py"
    if not path.is_file() and is_bundle(assignment.parent.parent):
        return None
    return _module(path, f"grader_official.{assignment.name}")  # in the kit: missing is the kit's error


def official_only(official: ModuleType | None) -> ModuleType:
    """`official`, or, in a student's bundle, a skip that says why: the test has nothing to check
    without the answer (a skipped test earns no points)."""
    if official is None:
        pytest.skip(_(OFFICIAL_ONLY))
    return official


def _module(path: Path, name: str) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None or not path.is_file():
            raise FileNotFoundError(f"{path} is missing")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@contextmanager
def one_thread() -> Iterator[None]:
    """Recompute on one thread, as the probes do: the same sums in the same order (and small networks
    run faster on one thread than on several competing for a busy machine's cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between two state dicts with the same keys and shapes."""
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    # a NaN anywhere is as far as can be (and max() would drop it)
    differences = ((a[k].double() - b[k].double()).abs().nan_to_num(nan=float("inf")) for k in a)
    return max((d.max().item() for d in differences if d.numel()), default=0.0)


def load_in_order(model: nn.Module, state: Any) -> str:
    """Load a returned state dict into the grader's own copy of an architecture: by name when the
    names are the grader's (the student may declare the layers in another order), else entry by
    entry in order (the names may differ). Returns "" when it fits, else what does not."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return _("the model's weights did not come back as a state dict")
    mine = model.state_dict()
    theirs = [state[name] for name in mine] if set(state) == set(mine) else list(state.values())
    if len(theirs) != len(mine):
        return _("the model has {n_theirs} weight and buffer tensors, expected {n_mine}").format(
            n_theirs=len(theirs), n_mine=len(mine)
        )
    for (name, expected), got in zip(mine.items(), theirs, strict=True):
        if got.shape != expected.shape:
            return _("weights {name} are {shape}, expected {expected}").format(
                name=name, shape=list(got.shape), expected=list(expected.shape)
            )
    model.load_state_dict({k: t.to(mine[k].dtype) for k, t in zip(mine, theirs, strict=True)})
    return ""


def accuracy_of(predictions: Any, labels: torch.Tensor) -> float:
    """The accuracy of predicted classes (as returned by a probe) against the true labels."""
    assert isinstance(predictions, torch.Tensor), _("the predictions are a {name}, not a tensor").format(
        name=type(predictions).__name__
    )
    assert predictions.shape == labels.shape, _("got predictions of shape {shape} for {n_labels} test images").format(
        shape=list(predictions.shape), n_labels=len(labels)
    )
    return (predictions.long() == labels).float().mean().item()


def evaluation_device(profile: Any) -> torch.device:
    """Where the grader scores trained weights: the profile's GPU where there is one, else the CPU."""
    wanted = profile.device
    return torch.device(wanted if wanted.startswith("cuda") and torch.cuda.is_available() else "cpu")


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The classes `model` (already loaded) predicts, in evaluation mode, for float images x (N, C, H, W)."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(batch).argmax(1) for batch in x.split(batch_size)])


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """The grader's own test accuracy of `model` (already loaded) on float images x (N, C, H, W)."""
    return accuracy_of(predict(model, x, batch_size), y)
