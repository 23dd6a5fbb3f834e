"""ε composes over rounds (never resets) and equals Opacus' own accountant for the same steps."""

from __future__ import annotations

import math

import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from torch import nn
from torch.utils.data import TensorDataset

from privfed.privacy import epsilon_from_history, noise_multiplier_for_target
from privfed.training import DPSettings, train_local_pass


class _Linear:
    """Minimal task stand-in: only ``loss`` is used by the training loop."""

    def loss(self, model, batch):
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)


def _data(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g))


def test_epsilon_grows_with_rounds_and_matches_opacus() -> None:
    # Prepare
    model, data, history, eps = nn.Linear(5, 3), _data(), [], []
    # Execute: 4 "rounds" of one local epoch, carrying the accountant history like a hospital
    for round_ in range(4):
        result = train_local_pass(
            _Linear(),
            model,
            data,
            epochs=1,
            batch_size=16,
            lr=0.1,
            seed=round_,
            dp=DPSettings(noise_multiplier=1.1, max_grad_norm=1.0, history=history),
        )
        history = result.history
        eps.append(epsilon_from_history(history, delta=1e-5))
    # Assert: strictly increasing, and equal to one accountant stepped 4 epochs × 4 steps
    assert all(b > a for a, b in zip(eps, eps[1:], strict=False))
    reference = RDPAccountant()
    for _ in range(16):
        reference.step(noise_multiplier=1.1, sample_rate=16 / 64)
    assert eps[-1] == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-9)
    prv = PRVAccountant()
    prv.history = [(1.1, 0.25, 16)]
    assert epsilon_from_history(history, delta=1e-5, accountant="prv") == pytest.approx(
        prv.get_epsilon(delta=1e-5), rel=1e-6
    )


def test_noise_for_target_keeps_epsilon_within_target() -> None:
    sigma = noise_multiplier_for_target(target_epsilon=1.0, delta=1e-5, sample_rate=0.1, steps=80)
    eps = epsilon_from_history([(sigma, 0.1, 80)], delta=1e-5)
    assert 0.95 <= eps <= 1.0


def test_edge_cases() -> None:
    assert epsilon_from_history([], delta=1e-5) == 0.0
    assert math.isinf(epsilon_from_history([(0.0, 0.1, 3)], delta=1e-5))
    with pytest.raises(ValueError, match="sample_rate"):
        noise_multiplier_for_target(target_epsilon=1, delta=1e-5, sample_rate=2.0, steps=3)


def test_fedprox_correction_is_a_step_on_the_proximal_term() -> None:
    """w <- w - lr*mu*(w - w_global): hand-computed for one parameter."""
    from privfed.training import _proximal_correction

    # Prepare
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
    anchor = [torch.tensor([[0.0, 0.0]])]
    # Execute
    _proximal_correction(model, anchor, lr=0.1, mu=0.5)
    # Assert: [1, -2] - 0.05 * [1, -2] = [0.95, -1.9]
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[0.95, -1.9]]))


def test_dp_noise_and_sampling_are_not_derived_from_the_public_seed() -> None:
    """The server knows base.seed: DP randomness must not follow it, plain training must."""

    def weights(dp: DPSettings | None) -> torch.Tensor:
        torch.manual_seed(0)
        model = nn.Linear(5, 3)
        train_local_pass(_Linear(), model, _data(), epochs=1, batch_size=16, lr=0.1, seed=7, dp=dp)
        return model.weight.detach().clone()

    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0)
    assert torch.equal(weights(None), weights(None))
    assert not torch.equal(weights(dp), weights(dp))


def test_empty_poisson_batch_is_a_counted_noisy_step() -> None:
    """With sample rate 1/64 most Poisson batches are empty; every one must still be a DP step."""
    model = nn.Linear(5, 3)
    result = train_local_pass(
        _Linear(),
        model,
        _data(64),
        epochs=1,
        batch_size=1,
        lr=0.1,
        seed=0,
        dp=DPSettings(noise_multiplier=1.0, max_grad_norm=1.0),
    )
    assert result.history == [(1.0, 1 / 64, 64)]
    assert torch.isfinite(model.weight).all()
    assert math.isfinite(result.train_loss)
