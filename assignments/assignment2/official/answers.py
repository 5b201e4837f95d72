"""The grader's own LeNet, as the statement fixes it and the starter leaves it blank (an answer: never
released, grader.testing.official_for): the student's weights are loaded into it and
it recomputes what they must give (tests only: no sandbox sees this module)."""

from torch import nn


def lenet():
    """LeNet-5 for 1x28x28 images: x (N, 1, 28, 28) -> logits (N, 10)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10),
    )  # fmt: skip
