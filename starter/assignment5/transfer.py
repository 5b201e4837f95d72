"""Transfer learning: a pretrained network, a new head, what to freeze, and how to train it.

A network pretrained on a large dataset (ImageNet, for torchvision's weights) already extracts
general features; for a new, smaller dataset we replace its last layer (the head) by one with as
many outputs as the new task has classes, and choose what else learns:

    variant       what learns                       ResNet-18's parts
    last_layer    the new head only                 fc
    last_layers   the last stage and the head       layer4, fc
    all_layers    everything (full fine-tuning)     conv1, bn1, layer1 ... layer4, fc

The rules every function here follows:
- frozen means `requires_grad = False`: no gradient is computed for it, and the optimizer holds
  exactly the trainable parameters, so the optimizer is built last, after the head is replaced
  and the freezing is done;
- a BatchNorm layer whose weight and bias are frozen is frozen entirely: it stays in evaluation
  mode while the rest of the network trains, so its running mean and variance keep their
  pretrained values (in training mode they would drift towards the new data's batches).
"""

import torch
from torch import nn

# The top-level parts of a torchvision ResNet that each variant trains (the rest is frozen).
VARIANTS = {
    "last_layer": (None,),
    "last_layers": (None, None),
    "all_layers": ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"),
}
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def replace_resnet_head(model: nn.Module, num_classes: int) -> nn.Linear:
    """Give a torchvision ResNet a new head for `num_classes` classes; return the new head.

    ResNet-18 ends with fc = Linear(512, 1000) (ImageNet's classes); the new fc maps the same 512
    features to num_classes logits, so that model(x): (N, 3, H, W) -> (N, num_classes).
    """
    head = nn.Linear(None, None)
    None  # put it in the place of the old head
    return head


def replace_convnext_head(model: nn.Module, num_classes: int) -> nn.Linear:
    """The same for a torchvision ConvNeXt; return the new head.

    Its classifier is Sequential(LayerNorm2d, Flatten, Linear): only classifier[2] changes
    (Linear(1024, 1000) in convnext_base becomes Linear(1024, num_classes)); the LayerNorm2d keeps
    its pretrained weights.
    """
    head = nn.Linear(None, None)
    None  # put it in the place of the old head
    return head


def set_trainable(model: nn.Module, names: tuple[str, ...]) -> None:
    """Freeze every parameter of `model`, then unfreeze those of the submodules named in `names`.

    names: attribute paths of submodules, as model.get_submodule takes them ("fc", "layer4",
    "classifier", "classifier.2"...).
    """
    None  # freeze every parameter
    for name in names:
        None  # unfreeze this part


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW over exactly the trainable parameters of `model`: those with requires_grad."""
    return torch.optim.AdamW(None, lr=lr)


def prepare_resnet(model: nn.Module, num_classes: int, variant: str, lr: float) -> torch.optim.Optimizer:
    """Ready a pretrained ResNet for a new task with `num_classes` classes; return its optimizer.

    variant: a key of VARIANTS. The order matters: an optimizer built before the head is replaced
    holds the old head's parameters and never updates the new one's.
    """
    None  # 1. the new head
    None  # 2. freeze what the variant does not train
    return None  # 3. last: it must see the new head and the final freezing


def train_mode(model: nn.Module) -> None:
    """Put `model` in training mode, except its frozen BatchNorm layers, which stay in evaluation mode.

    In training mode a BatchNorm layer normalizes with each batch's statistics and updates its
    running mean and variance, even when its weight and bias are frozen.
    """
    None  # training mode for the whole model
    for module in model.modules():
        if isinstance(module, BATCH_NORMS) and None:
            None  # frozen: keep its pretrained running statistics


def train(
    model: nn.Module, optimizer: torch.optim.Optimizer, train_iter, num_steps: int, device: str | torch.device
) -> list[float]:
    """Minimize the cross-entropy with `num_steps` optimizer steps, cycling over `train_iter`.

    train_iter yields (X, y): X (N, C, H, W), y (N,) class indices; it is walked again from its
    start as often as the number of steps requires. Returns the loss of every step.
    """
    model.to(device)
    loss_fn = nn.CrossEntropyLoss()
    None  # training mode, frozen BatchNorm layers excepted
    losses = []
    while len(losses) < num_steps:
        for X, y in train_iter:
            X, y = None, None
            None  # zero the gradients
            loss = None
            None  # backward
            None  # update
            losses.append(loss.item())
            if len(losses) == num_steps:
                break
    return losses


def fine_tune(
    model: nn.Module,
    head: tuple[str, ...],
    train_iter,
    head_steps: int,
    all_steps: int,
    lr: float,
    device: str | torch.device,
) -> list[float]:
    """Freeze, train, unfreeze, train on: the notebook's schedule for a model whose head is new.

    head: the names of the head's submodules (("fc",) for a ResNet, ("classifier",) for a ConvNeXt).
    Phase 1: only the head learns, for head_steps steps at learning rate lr: a random head on top
    of good features would otherwise send large gradients into them. Phase 2: every parameter
    learns, for all_steps steps, with a new optimizer (the first one holds only the head) at
    lr / 10, so that the pretrained features change slowly. Returns the losses of both phases.
    """
    None  # phase 1: only the head is trainable
    losses = train(model, None, train_iter, head_steps, device)
    None  # phase 2: unfreeze everything
    return losses + train(model, None, train_iter, all_steps, device)
