"""grader.training_check: each common mistake of a training loop is recognized step by step, and
costs only the check that names it (in-process: a loop written here, recorded by the shared probe)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from grader import training_check as check
from grader.probing import record_training
from grader.testing import one_thread


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = torch.Generator().manual_seed(7)
    return [(torch.rand(4, 1, 4, 4, generator=rng), torch.randint(0, 3, (4,), generator=rng)) for _ in range(3)]


LR, EPOCHS = 0.1, 2


def loop(mistake: str = "", momentum: float = 0.0) -> check.Trajectory:
    """A training loop with one mistake (or none), recorded and followed as a test does."""
    torch.manual_seed(3)
    net, data = tiny_net(), batches()
    lr = LR / 10 if mistake == "rate" else LR
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.0 if mistake == "no momentum" else momentum)
    loss = nn.MSELoss() if mistake == "mse" else nn.CrossEntropyLoss()

    def train() -> None:
        for _epoch in range(EPOCHS):
            net.train(mistake != "eval mode")
            for x, y in data:
                if mistake != "no zero_grad":
                    optimizer.zero_grad()
                logits = net(x)
                target = nn.functional.one_hot(y, 3).float() if mistake == "mse" else y
                loss(logits, target).backward()
                if mistake != "no step":
                    optimizer.step()
            net.train(mistake == "train-mode evaluation")
            with torch.no_grad():
                net(data[0][0][:3])

    with one_thread():  # tiny tensors: faster than threads competing for a busy machine's cores
        record = record_training(net, data, torch.device("cpu"), train)
    asked = check.Loop(tiny_net, data, EPOCHS, LR, "train", "net", "net(X) against y", momentum=momentum)
    return check.follow(asked, record)


CHECKS = {
    "steps": check.every_batch_stepped,
    "seen": check.every_batch_seen,
    "fresh": check.fresh_gradients,
    "modes": check.training_and_evaluation_modes,
    "update": check.follows_the_loop,
}


def failing(trajectory: check.Trajectory) -> dict[str, str]:
    failed = {}
    for name, run in CHECKS.items():
        try:
            run(trajectory)
        except AssertionError as problem:
            failed[name] = str(problem)
    return failed


@pytest.mark.parametrize(
    ("mistake", "momentum", "fails"),
    [
        ("", 0.0, {}),
        ("", 0.9, {}),
        ("no zero_grad", 0.0, {"fresh": "keeps the previous batches' gradients", "update": "previous batches'"}),
        ("rate", 0.0, {"update": "the optimizer's learning rate is 0.01, expected the lr passed to train, 0.1"}),
        ("mse", 0.0, {"update": "the mean squared error against one-hot labels"}),
        ("no momentum", 0.9, {"update": "they follow SGD with momentum 0.0, expected 0.9"}),
        ("eval mode", 0.0, {"modes": "running statistics", "update": "step 1 follows the gradients of evaluation"}),
        ("train-mode evaluation", 0.0, {"modes": "running statistics differ"}),
        (
            "no step",
            0.0,
            {"steps": "never steps", "fresh": "never steps", "update": "the weights never changed"},
        ),
    ],
)
def test_one_mistake_fails_the_checks_that_name_it(mistake, momentum, fails):
    failed = failing(loop(mistake, momentum))
    assert set(failed) == set(fails), failed
    for name, phrase in fails.items():
        assert phrase in failed[name], failed[name]


def test_a_forged_state_fails_every_check():
    trajectory = loop()
    trajectory.states[1] = {"weight": torch.zeros(1)}
    assert set(failing(trajectory)) == set(CHECKS)
