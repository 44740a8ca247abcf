"""ConstantPrior, the gate's control (a): one learned vector, no image information."""
from __future__ import annotations

import pytest
import torch

import spectral_prior as sp
from spectral_prior.errors import InvalidInputError
from spectral_prior.sdp.prior import ConstantPrior, build_prior, prior_spec


def test_every_input_gets_the_same_vector_on_both_paths():
    prior = ConstantPrior(8, seed=3)
    condition, gt = torch.randn(3, 28, 16, 16), torch.rand(3, 28, 16, 16)
    vectors = prior(condition)
    assert vectors.shape == (3, 8)
    assert torch.equal(vectors[0], vectors[2]) and torch.equal(prior.teacher(condition, gt), vectors)
    assert prior.student_parameters() == [] and prior.teacher_parameters() == [prior.vector]


def test_scale_sets_the_draw_and_is_kept_in_the_config():
    unit, small = ConstantPrior(64, seed=1), ConstantPrior(64, seed=1, scale=0.01)
    torch.testing.assert_close(small.vector, unit.vector * 0.01)
    rebuilt = build_prior(prior_spec(small))
    torch.testing.assert_close(rebuilt.vector, small.vector)


def test_a_config_saved_before_scale_existed_loads_at_unit_scale():
    rebuilt = ConstantPrior.from_config({"prior_dim": 16, "seed": 2})
    torch.testing.assert_close(rebuilt.vector, ConstantPrior(16, seed=2).vector)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_a_scale_that_is_not_positive_is_refused(scale):
    with pytest.raises(InvalidInputError, match="scale must be positive"):
        ConstantPrior(8, scale=scale)


class _TwoConvs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


def test_the_vector_learns_through_the_spims():
    net = _TwoConvs()
    x = torch.randn(2, 3, 8, 8)
    prior = ConstantPrior(8, scale=0.1)
    sp.inject_prior(net, ["first"], prior=prior, example_inputs=x)
    before = prior.vector.detach().clone()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(2):  # the first step moves the zero-initialised SPIM, the second reaches the vector
        optimizer.zero_grad()
        net(x).square().mean().backward()
        optimizer.step()
    assert not torch.equal(prior.vector.detach(), before)
