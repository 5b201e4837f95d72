"""ReLU and the fully connected layer (layers.py), on the walk-through's examples and on inputs
drawn for this grading; the expected values come from F.relu and F.linear, here."""

import pytest
import torch
import torch.nn.functional as F

from grader.i18n import _
from grader.testing import generator, probes_for

probes = probes_for(__file__)

# The walk-through's ReLU example, and the digit "7" feature map (the correct one: it has a -1).
RELU_EXAMPLE = [[2, -1, 0], [1, -2, 0], [0, 0, 1]]
DIGIT_SEVEN_MAP = [[2, 0, -1], [1, 0, 0], [1, 1, 0]]
# The fully connected example: the pooled map [[2, 1], [1, 2]] flattened, two classes ("7", not "7").
FC_X = [2.0, 1.0, 1.0, 2.0]
FC_WEIGHT = [[0.5, 0.2, 0.3, 0.4], [-0.1, 0.3, 0.2, -0.5]]
FC_BIAS = [0.1, 0.2]


def describe(out):
    return _("a tensor of shape {shape}").format(shape=list(out.shape)) if isinstance(out, torch.Tensor) else repr(out)


@pytest.mark.points(1)
@pytest.mark.task("relu")
def test_relu_examples(submission):
    """relu: the walk-through's example, and the digit "7" map (its -1 becomes 0)"""
    drawn = torch.randint(-3, 4, (3, 3), generator=generator("relu example")).float()
    examples = [torch.tensor(example, dtype=torch.float32) for example in (RELU_EXAMPLE, DIGIT_SEVEN_MAP)] + [drawn]
    got_all = submission.run(probes.each, "layers", "relu", [(x,) for x in examples])
    for x, got in zip(examples, got_all, strict=True):
        expected = F.relu(x)
        assert isinstance(got, torch.Tensor) and got.shape == x.shape, _(
            "relu returned {describe}, expected [3, 3]"
        ).format(describe=describe(got))
        assert torch.equal(got, expected), _("relu({x}) is {got}, expected {expected}").format(
            x=x.tolist(), got=got.tolist(), expected=expected.tolist()
        )


@pytest.mark.points(1)
@pytest.mark.task("relu")
def test_relu_random(submission):
    """relu: max(0, x) on a random batch, x left unchanged"""
    x = torch.randn(2, 3, 4, 5, generator=generator("relu batch"))
    result = submission.run(probes.relu_of, x)
    got = result["out"]
    assert isinstance(got, torch.Tensor) and got.shape == x.shape, _(
        "relu returned {describe}, expected {shape}"
    ).format(describe=describe(got), shape=list(x.shape))
    assert got.dtype == x.dtype, _("relu returned {dtype}, expected {expected_dtype}").format(
        dtype=got.dtype, expected_dtype=x.dtype
    )
    assert torch.equal(got, F.relu(x)), _("relu(x) differs from max(0, x)")
    assert result["unchanged"] is True, _("relu changed its input in place: return a new tensor")


@pytest.mark.points(1)
@pytest.mark.task("linear")
def test_linear_example(submission):
    """linear: the walk-through's fully connected example gives [2.4, -0.5]"""
    x, weight, bias = torch.tensor(FC_X), torch.tensor(FC_WEIGHT), torch.tensor(FC_BIAS)
    expected = F.linear(x, weight, bias)
    assert torch.allclose(expected, torch.tensor([2.4, -0.5]))  # the walk-through's arithmetic holds
    drawn = torch.randint(0, 4, (4,), generator=generator("linear example")).float()  # another pooled map
    got, got_drawn = submission.run(probes.each, "layers", "linear", [(x, weight, bias), (drawn, weight, bias)])
    assert isinstance(got, torch.Tensor) and got.shape == (2,), _("linear returned {describe}, expected [2]").format(
        describe=describe(got)
    )
    assert torch.allclose(got.double(), expected.double()), _("linear gives {value}, expected [2.4, -0.5]").format(
        value=[round(v, 4) for v in got.tolist()]
    )
    expected = F.linear(drawn, weight, bias)
    assert isinstance(got_drawn, torch.Tensor) and got_drawn.shape == (2,), _(
        "linear returned {describe} for x = {drawn}, expected [2]"
    ).format(describe=describe(got_drawn), drawn=drawn.tolist())
    assert torch.allclose(got_drawn.double(), expected.double()), _(
        "linear gives {value} for x = {drawn} and the same W and b, expected {expected_value}"
    ).format(
        value=[round(v, 4) for v in got_drawn.tolist()],
        drawn=drawn.tolist(),
        expected_value=[round(v, 4) for v in expected.tolist()],
    )


@pytest.mark.points(1)
@pytest.mark.task("linear")
@pytest.mark.parametrize("bias", [True, False], ids=["with bias", "without bias"])
def test_linear_batch(submission, bias):
    """linear: equals F.linear on a batch"""
    rng = generator(f"linear batch {bias}")
    x, weight = torch.randn(5, 7, generator=rng), torch.randn(3, 7, generator=rng)
    b = torch.randn(3, generator=rng) if bias else None
    (got,) = submission.run(probes.each, "layers", "linear", [(x, weight, b)])
    assert isinstance(got, torch.Tensor) and got.shape == (5, 3), _(
        "linear returned {describe} for x [5, 7] and weight [3, 7], expected [5, 3]: y = x W^T + b"
    ).format(describe=describe(got))
    error = (got.double() - F.linear(x, weight, b).double()).abs().nan_to_num(nan=float("inf")).max().item()
    assert error < 1e-5, _("linear differs from F.linear by up to {error:.3g}").format(error=error)
