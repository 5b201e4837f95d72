"""The grader's side of the training-loop tests (assignments 2, 3 and 4): which loop the weights follow.

The probe (grader.probing.record_training) brings back the weights a student's loop started from,
those after every optimizer step and the final ones. Each step is judged on its own, from the
weights before it: w_k - w_(k-1) against the grader's own gradients at w_(k-1) on batch k, for
the loop asked for and for the common mistakes (gradients never zeroed, evaluation mode while
training, another loss, another rate, momentum missing or added). One mistake then costs the
test that names it only: the device and step tests hold for any loop the grader recognizes as
one SGD step per batch, the zero_grad test unless the gradients pile up, the update test only for
the exact loop, and the mode test is judged on the batch-norm running statistics. What the probe's
spies report only makes a reason precise: every point stands on a recomputation done here.
Never shipped to a sandbox (grader/sandbox/platform.py _RUNTIME).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from grader.i18n import N_, _
from grader.testing import max_difference, one_thread

Batch = tuple[torch.Tensor, torch.Tensor]
STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _cross_entropy_of_softmax(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.softmax(1), y)


def _squared_error_one_hot(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(logits, F.one_hot(y, logits.shape[1]).to(logits.dtype))


def _cross_entropy_own_predictions(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, logits.argmax(1))


# the loss asked for first, then the wrong ones students write, each with what a reason calls it
LOSSES: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], str]] = {
    "cross_entropy": (F.cross_entropy, ""),
    "softmax": (_cross_entropy_of_softmax, N_("the cross-entropy of the softmax: the cross-entropy applies it itself")),
    "mse": (_squared_error_one_hot, N_("the mean squared error against one-hot labels")),
    "own": (
        _cross_entropy_own_predictions,
        N_("the cross-entropy against the model's own predictions"),
    ),
}


def weights_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without batch norm's running statistics (training mode moves them with no optimizer)."""
    return {k: v for k, v in state.items() if not k.endswith(STATISTICS)}


def statistics_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.endswith(STATISTICS)}


@dataclass(frozen=True)
class Loop:
    """The training loop a test asked for: `epochs` passes of SGD (lr, momentum) over `batches` on the
    cross-entropy of the net that `build` makes. `function`, `model` and `call` name them in reasons
    ("train_ch6", "net", "net(X) against y")."""

    build: Callable[[], nn.Module]
    batches: list[Batch]
    epochs: int
    lr: float
    function: str
    model: str
    call: str
    momentum: float = 0.0

    @property
    def steps(self) -> int:
        return self.epochs * len(self.batches)

    def batch(self, step: int) -> Batch:
        return self.batches[step % len(self.batches)]


@dataclass(frozen=True)
class Step:
    """How one optimizer step moved the weights: on which loss, in which mode, from fresh or piled-up
    gradients, with which momentum and at which rate; `loss_value` and `correct`: that loss on the
    step's batch, and how many of its images the forward pass got right."""

    loss: str
    training: bool
    accumulated: bool
    momentum: float
    rate: float
    loss_value: float
    correct: int

    def is_asked(self, loop: Loop) -> bool:
        return (
            self.loss == "cross_entropy"
            and self.training
            and not self.accumulated
            and self.momentum == loop.momentum
            and math.isclose(self.rate, loop.lr, rel_tol=1e-3)
        )


@dataclass
class Trajectory:
    """The weights a loop went through (from the probe: `initial`, then after each step, then `final`),
    as the grader recognizes them."""

    loop: Loop
    initial: dict[str, torch.Tensor]
    states: list[dict[str, torch.Tensor]]
    step_count: int
    final: dict[str, torch.Tensor]
    _gradients: dict[tuple[str, bool], list[tuple[torch.Tensor, float, int]]] = field(default_factory=dict)

    @property
    def moved(self) -> bool:
        return max_difference(weights_of(self.initial), weights_of(self.final)) > 0

    @property
    def followable(self) -> bool:
        """One recorded state per batch of every epoch, the last one the final weights."""
        return (
            self.step_count == len(self.states) == self.loop.steps > 0
            and max_difference(weights_of(self.states[-1]), weights_of(self.final)) == 0
        )

    def before(self, step: int) -> dict[str, torch.Tensor]:
        return self.states[step - 1] if step else self.initial

    def delta(self, step: int) -> torch.Tensor:
        after, before = weights_of(self.states[step]), weights_of(self.before(step))
        return torch.cat([(after[k].double() - before[k].double()).flatten() for k in sorted(after)])

    def gradients(self, loss: str, training: bool) -> list[tuple[torch.Tensor, float, int]]:
        """At each step, the grader's own gradient of `loss` on the step's batch at the weights before
        it (in training or evaluation mode), flattened; the loss's value; how many images it got right."""
        key = (loss, training)
        if key not in self._gradients:
            net = self.loop.build()
            parameters = dict(net.named_parameters())
            names = sorted(weights_of(net.state_dict()))
            out = []
            with one_thread():
                for step in range(len(self.states)):
                    net.load_state_dict(self.before(step))
                    net.train(training)
                    net.zero_grad(set_to_none=False)
                    x, y = self.loop.batch(step)
                    logits = net(x)
                    value = LOSSES[loss][0](logits, y)
                    value.backward()
                    gradient = torch.cat([parameters[k].grad.double().flatten() for k in names])
                    out.append((gradient, value.item(), (logits.argmax(1) == y).sum().item()))
            self._gradients[key] = out
        return self._gradients[key]

    @cached_property
    def steps(self) -> list[Step | None]:
        """Each step as recognized, None where no known loop explains it (empty unless `followable`)."""
        if not self.followable:
            return []
        momenta = dict.fromkeys((self.loop.momentum, 0.0 if self.loop.momentum else 0.9))
        kinds = [(loss, training) for training in (True, False) for loss in LOSSES]
        return [
            next(
                (
                    step
                    for loss, training in kinds
                    for accumulated in (False, True)
                    for momentum in momenta
                    if (step := self._explains(index, loss, training, accumulated, momentum)) is not None
                ),
                None,
            )
            for index in range(len(self.states))
        ]

    def _explains(self, index: int, loss: str, training: bool, accumulated: bool, momentum: float) -> Step | None:
        """The step `index` if SGD (this momentum, any rate) on these gradients makes it, else None."""
        gradients = self.gradients(loss, training)
        direction = pile = None
        for step in range(index + 1):  # torch's SGD: buffer = momentum * buffer + gradient
            gradient = gradients[step][0]
            pile = gradient if pile is None or not accumulated else pile + gradient
            direction = pile if direction is None or not momentum else momentum * direction + pile
        delta = self.delta(index)
        norm = direction.dot(direction).item()
        if norm == 0:
            return None
        rate = -delta.dot(direction).item() / norm
        off = (delta + rate * direction).abs().max().item()
        if rate <= 0 or off > 1e-3 * delta.abs().max().item() + 1e-6:
            return None
        return Step(loss, training, accumulated, momentum, rate, *gradients[index][1:])

    def after_epoch(self, epoch: int) -> dict[str, torch.Tensor]:
        """The weights and statistics at the end of `epoch` (from 0)'s training passes: its last step's,
        or, where the optimizer never steps, the initial weights with the statistics those passes give."""
        passes = (epoch + 1) * len(self.loop.batches)
        if self.step_count:
            return self.states[passes - 1]
        net = self.loop.build()
        net.load_state_dict(self.initial)
        with torch.no_grad(), one_thread():
            for step in range(passes):
                net(self.loop.batch(step)[0])
        return {k: v.clone() for k, v in net.state_dict().items()}

    def statistics_problem(self) -> str:
        """Nothing ("") when the running statistics moved as training mode on every training batch
        and evaluation mode everywhere else make them move, else how far they are off."""
        if self.step_count == 0:  # the weights never moved: replay every training pass at once
            return self._statistics_after(
                self.initial, [self.loop.batch(step) for step in range(self.loop.steps)], self.final
            )
        if not self.followable:
            return _(
                "the optimizer stepped {steps} times for {batches} batches: the grader cannot follow the loop"
            ).format(steps=self.step_count, batches=self.loop.steps)
        for step in range(len(self.states)):
            if problem := self._statistics_after(self.before(step), [self.loop.batch(step)], self.states[step]):
                return problem
        return self._statistics_after(self.states[-1], [], self.final)

    def _statistics_after(self, start: dict, batches: list[Batch], end: dict) -> str:
        net = self.loop.build()
        net.load_state_dict(start)
        net.train()
        with torch.no_grad(), one_thread():
            for x, _unused in batches:
                net(x)
        difference = max_difference(statistics_of(net.state_dict()), statistics_of(end))
        if difference < 1e-4:  # a loop on a GPU sums in another order
            return ""
        return _(
            "the batch-norm running statistics differ by up to {difference:.3g} from those of training "
            "mode on every training batch and evaluation mode everywhere else"
        ).format(difference=difference)


def follow(loop: Loop, record: dict, initial: dict[str, torch.Tensor] | None = None) -> Trajectory:
    """The trajectory of a probe's record (grader.probing.record_training), from `initial` (the
    grader's own weights) or, where the loop draws its own, the weights the record started from."""
    states = [step.get("state") if isinstance(step, dict) else step for step in record["steps"]]
    start = initial if initial is not None else record["initial"]
    return Trajectory(loop, start, states, record["step_count"], record["final"])


def _ran(trajectory: Trajectory) -> None:
    """Fails unless the loop ran the model and every state came back with the model's own layout."""
    assert trajectory.initial, _("the model never ran a forward pass during training")
    layout = {name: tensor.shape for name, tensor in trajectory.loop.build().state_dict().items()}
    for state in (trajectory.initial, *trajectory.states, trajectory.final):
        assert isinstance(state, dict) and {k: getattr(v, "shape", None) for k, v in state.items()} == layout, _(
            "the model's weights came back with other names or shapes than its own"
        )


# --- what each test asks of a trajectory -----------------------------------------------------


PILED_UP = N_("the update keeps the previous batches' gradients: zero_grad() comes too late or not at all")


def every_batch_stepped(trajectory: Trajectory) -> None:
    """Fails unless the loop made one step per batch, each a step of SGD on that batch that the
    grader recognizes (whatever its loss, mode, rate, momentum or piled-up gradients)."""
    _ran(trajectory)
    count, batches = trajectory.step_count, trajectory.loop.steps
    assert count, _("the optimizer never steps: call optimizer.step() after backward()")
    assert count == batches, _("the optimizer stepped {steps} times for {batches} batches").format(
        steps=count, batches=batches
    )
    assert trajectory.followable, _("the final weights are not those of the last optimizer step")
    for index, step in enumerate(trajectory.steps):
        assert step is not None, _(
            "optimizer step {step} is no SGD step on its batch that the grader recognizes: the weights "
            "moved by up to {moved:.3g}"
        ).format(step=index + 1, moved=trajectory.delta(index).abs().max().item())


def every_batch_seen(trajectory: Trajectory) -> None:
    """Fails unless every training batch went through the model: one recognized step per batch, or,
    where the optimizer never steps, the running statistics of a training pass on each."""
    _ran(trajectory)
    if trajectory.step_count == 0 and not trajectory.statistics_problem():
        return
    every_batch_stepped(trajectory)


def moved_to_device(record: dict, trajectory: Trajectory, model: bool = True) -> None:
    """Fails unless the loop moved the model (where it is the loop's job: `model`) and every batch's
    images and labels to the device (the probe's spies, for the reason), and every batch went
    through the model (the grader's recomputation, for the point)."""
    if model:
        assert record["net_moved"], _("the model is never moved to the device: call {model}.to(device)").format(
            model=trajectory.loop.model
        )
    batches = trajectory.loop.steps
    for key, what in (("x_moved", _("images")), ("y_moved", _("labels"))):
        assert record[key] >= batches, _("{what} moved to the device in {moved} of {batches} batches").format(
            what=what, moved=record[key], batches=batches
        )
    every_batch_seen(trajectory)


def zeroed_every_batch(record: dict, trajectory: Trajectory) -> None:
    """Fails unless zero_grad() ran once per batch (the spies, for the reason) and no step kept the
    previous batches' gradients (the recomputation, for the point)."""
    count, batches = record["zero_grads"], trajectory.loop.steps
    assert count, _("zero_grad() is never called: gradients pile up from batch to batch")
    assert count >= batches, _("zero_grad() ran {count} times for {batches} batches").format(
        count=count, batches=batches
    )
    fresh_gradients(trajectory)


def fresh_gradients(trajectory: Trajectory) -> None:
    """Fails unless every step is recognized and none keeps the previous batches' gradients."""
    every_batch_stepped(trajectory)
    assert not any(step.accumulated for step in trajectory.steps), _(PILED_UP)


def training_and_evaluation_modes(trajectory: Trajectory) -> None:
    """Fails unless the running statistics moved with every training batch and nothing else."""
    _ran(trajectory)
    problem = trajectory.statistics_problem()
    assert not problem, problem


def follows_the_loop(trajectory: Trajectory) -> None:
    """Fails unless every step is exactly the loop asked for; the reason names the first mistake."""
    _ran(trajectory)
    loop = trajectory.loop
    assert trajectory.moved, _("the weights never changed: is backward() or optimizer.step() missing?")
    every_batch_stepped(trajectory)
    for index, step in enumerate(trajectory.steps):
        if step.is_asked(loop):
            continue
        assert not step.accumulated, _(PILED_UP)
        assert step.training, _(
            "optimizer step {step} follows the gradients of evaluation mode: call {model}.train() before training"
        ).format(step=index + 1, model=loop.model)
        differ = _("the weights differ from SGD (lr={lr}) on the cross-entropy of {call}").format(
            lr=loop.lr, call=loop.call
        )
        if step.loss != "cross_entropy":
            raise AssertionError(f"{differ}: {_(LOSSES[step.loss][1])}")
        if step.momentum != loop.momentum:
            raise AssertionError(
                _("{differ}: they follow SGD with momentum {momentum}, expected {expected}").format(
                    differ=differ, momentum=step.momentum, expected=loop.momentum
                )
            )
        if math.isclose(step.rate, 2 * loop.lr, rel_tol=1e-3):
            raise AssertionError(
                _("{differ}: every step is twice SGD's, as when backward() runs twice per batch").format(differ=differ)
            )
        raise AssertionError(
            _("the optimizer's learning rate is {rate:.3g}, expected the lr passed to {function}, {lr}").format(
                rate=step.rate, function=loop.function, lr=loop.lr
            )
        )


def training_passes(trajectory: Trajectory) -> list[tuple[float, int]]:
    """(loss, images right) of each training batch's forward pass, as the loop computed them: those of
    the step the grader recognized, or, where the optimizer never steps, the cross-entropy at the
    initial weights in training mode."""
    if trajectory.step_count:
        every_batch_stepped(trajectory)
        return [(step.loss_value, step.correct) for step in trajectory.steps]
    every_batch_seen(trajectory)
    net = trajectory.loop.build()
    net.load_state_dict(trajectory.initial)
    with torch.no_grad(), one_thread():
        logits = [(net(x), y) for x, y in map(trajectory.loop.batch, range(trajectory.loop.steps))]
    return [(F.cross_entropy(z, y).item(), (z.argmax(1) == y).sum().item()) for z, y in logits]
