"""The grader's own copies of the models the statement fixes (tests only: no sandbox sees this module).

The structure checks fill a copy with the weights and BatchNorm statistics drawn for a grading, as
the probe fills the student's model, and recompute what each layer must give; the training checks
load the student's trained weights into a copy and score it themselves.
"""

from torch import nn


def fashion_cnn():
    """The notebook's Fashion-MNIST CNN: x (N, 1, 28, 28) -> logits (N, 10)."""
    return nn.Sequential(
        nn.Conv2d(1, 64, 7, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding="same"), nn.ReLU(),
        nn.Conv2d(128, 128, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 256, 3, padding="same"), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2304, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(64, 10),
    )  # fmt: skip


class BatchNormCNN(nn.Module):
    """The slides' BatchNorm CNN: x (N, 1, 28, 28) -> logits (N, num_classes)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.cnn_layers = nn.Sequential(
            nn.Conv2d(1, 3, 5), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.fc_layers = nn.Sequential(nn.Linear(32, 20), nn.BatchNorm1d(20), nn.ReLU(), nn.Linear(20, num_classes))

    def forward(self, x):
        return self.fc_layers(self.cnn_layers(x).flatten(1))
