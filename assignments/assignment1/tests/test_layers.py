"""ReLU and the fully connected layer (layers.py), on the walk-through's examples and on random inputs."""

import pytest
import torch
import torch.nn.functional as F

# The walk-through's ReLU example, and the digit "7" feature map (the correct one: it has a -1).
RELU_EXAMPLE = [[2, -1, 0], [1, -2, 0], [0, 0, 1]]
DIGIT_SEVEN_MAP = [[2, 0, -1], [1, 0, 0], [1, 1, 0]]
# The fully connected example: the pooled map [[2, 1], [1, 2]] flattened, two classes ("7", not "7").
FC_X = [2.0, 1.0, 1.0, 2.0]
FC_WEIGHT = [[0.5, 0.2, 0.3, 0.4], [-0.1, 0.3, 0.2, -0.5]]
FC_BIAS = [0.1, 0.2]


def relu_of_each(sub, xs):
    """Probe: relu(x) for each x."""
    return [sub.layers.relu(x) for x in xs]


def relu_of(sub, x):
    """Probe: relu(x), and whether x came back unchanged."""
    before = x.clone()
    out = sub.layers.relu(x)
    return {"out": out.detach() if isinstance(out, torch.Tensor) else out, "unchanged": torch.equal(x, before)}


def linear_of(sub, x, weight, bias):
    """Probe: linear(x, weight, bias)."""
    out = sub.layers.linear(x, weight, bias)
    return out.detach() if isinstance(out, torch.Tensor) else out


def describe(out):
    return f"a tensor of shape {list(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__


@pytest.mark.points(1)
@pytest.mark.task("relu")
def test_relu_examples(submission):
    """relu: the walk-through's example, and the digit "7" map (its -1 becomes 0)"""
    examples = [torch.tensor(example, dtype=torch.float32) for example in (RELU_EXAMPLE, DIGIT_SEVEN_MAP)]
    for x, got in zip(examples, submission.run(relu_of_each, examples), strict=True):
        expected = F.relu(x)
        assert isinstance(got, torch.Tensor) and got.shape == x.shape, f"relu returned {describe(got)}, expected [3, 3]"
        assert torch.equal(got, expected), f"relu({x.tolist()}) is {got.tolist()}, expected {expected.tolist()}"


@pytest.mark.points(1)
@pytest.mark.task("relu")
def test_relu_random(submission):
    """relu: max(0, x) on a random batch, x left unchanged"""
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    result = submission.run(relu_of, x)
    got = result["out"]
    assert isinstance(got, torch.Tensor) and got.shape == x.shape, (
        f"relu returned {describe(got)}, expected {list(x.shape)}"
    )
    assert got.dtype == x.dtype, f"relu returned {got.dtype}, expected {x.dtype}"
    assert torch.equal(got, F.relu(x)), "relu(x) differs from max(0, x)"
    assert result["unchanged"], "relu changed its input in place: return a new tensor"


@pytest.mark.points(1)
@pytest.mark.task("linear")
def test_linear_example(submission):
    """linear: the walk-through's fully connected example gives [2.4, -0.5]"""
    x, weight, bias = torch.tensor(FC_X), torch.tensor(FC_WEIGHT), torch.tensor(FC_BIAS)
    expected = F.linear(x, weight, bias)
    assert torch.allclose(expected, torch.tensor([2.4, -0.5]))  # the walk-through's arithmetic holds
    got = submission.run(linear_of, x, weight, bias)
    assert isinstance(got, torch.Tensor) and got.shape == (2,), f"linear returned {describe(got)}, expected [2]"
    assert torch.allclose(got, expected), f"linear gives {[round(v, 4) for v in got.tolist()]}, expected [2.4, -0.5]"


@pytest.mark.points(1)
@pytest.mark.task("linear")
@pytest.mark.parametrize("bias", [True, False], ids=["with bias", "without bias"])
def test_linear_batch(submission, bias):
    """linear: equals F.linear on a batch"""
    generator = torch.Generator().manual_seed(1)
    x, weight = torch.randn(5, 7, generator=generator), torch.randn(3, 7, generator=generator)
    b = torch.randn(3, generator=generator) if bias else None
    got = submission.run(linear_of, x, weight, b)
    assert isinstance(got, torch.Tensor) and got.shape == (5, 3), (
        f"linear returned {describe(got)} for x [5, 7] and weight [3, 7], expected [5, 3]: y = x W^T + b"
    )
    error = (got - F.linear(x, weight, b)).abs().max().item()
    assert error < 1e-5, f"linear differs from F.linear by up to {error:.3g}"
