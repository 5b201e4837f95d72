"""Hidden checks of SimpleCNN and split_indices: run by `grade batch`, never shipped to students.

They ask what the public tests ask, for sizes the statement never names: a model whose layer sizes
were copied from the 32x32 table, or a split that only holds for round counts, fails them.
"""

import pytest
import torch

from grader.i18n import _
from grader.probing import fill
from grader.testing import architectures_for, derived_seed, generator, probes_for

probes = probes_for(__file__)
architectures = architectures_for(__file__)


@pytest.mark.points(2)
@pytest.mark.task("SimpleCNN")
def test_simple_cnn_other_size(submission):
    """SimpleCNN: 40x40 images and 7 classes"""
    x = torch.rand(2, 3, 40, 40, generator=generator("hidden images")) * 2 - 1
    model, seed = architectures.SimpleCNN(7, 40), derived_seed("hidden weights")
    fill(model, seed)
    got = submission.run(probes.logits_of, 7, 40, seed, x)
    with torch.no_grad():
        want = model.eval()(x)
    assert isinstance(got, torch.Tensor) and got.shape == want.shape, _("the logits are not [2, 7]")
    assert (got - want).abs().max().item() < 1e-4, _("the logits are not SimpleCNN's")


@pytest.mark.points(2)
@pytest.mark.task("split_indices")
def test_split_odd_count(submission):
    """split_indices: 999 images, a fifth for validation"""
    train, valid = submission.run(probes.split, 999, 0.2, 7)
    assert len(valid) in (199, 200), _("validation got {got} indices").format(got=len(valid))
    every = sorted(torch.cat([train, valid]).tolist())
    assert every == list(range(999)), _("the two parts are not a split of 0..998")
