"""ε composes over rounds (never resets) and equals Opacus' own accountant for the same steps."""

from __future__ import annotations

import math

import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from torch import nn
from torch.utils.data import TensorDataset

from privfed.privacy import epsilon_from_history, noise_multiplier_for_target
from privfed.privacy.accounting import merged_history
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


@pytest.mark.parametrize(("accountant", "rel"), [("rdp", 1e-12), ("prv", 1e-3)])
def test_rounds_with_the_same_noise_compose_as_one_entry(accountant: str, rel: float) -> None:
    """A run appends one history entry per round; they are merged before accounting (the PRV
    accountant's cost grows with entries), and ε is the same as entry by entry."""
    # Prepare: 6 rounds at one noise, 3 at another, interleaved
    history = [(1.1, 0.02, 50), (0.9, 0.03, 20)] * 3 + [(1.1, 0.02, 50)] * 3
    reference = {"rdp": RDPAccountant, "prv": PRVAccountant}[accountant]()
    reference.history = list(history)  # entry by entry, as Opacus would have stepped them
    # Execute
    merged = epsilon_from_history(history, delta=1e-5, accountant=accountant)
    # Assert
    assert merged_history(history) == [(1.1, 0.02, 300), (0.9, 0.03, 60)]
    assert merged == pytest.approx(reference.get_epsilon(delta=1e-5), rel=rel)


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


def test_prv_calibration_holds_under_google_dp_accounting_and_beats_rdp() -> None:
    """An independent accountant (Google's PLD) confirms the noise PRV calibrates for ε = 1."""
    import dp_accounting

    # Prepare: the default readmission DP schedule (batch 192 of ~390: q = 1/3; 8 rounds x 1
    # local epoch x 3 steps)
    q, steps, delta = 1 / 3, 8 * 3, 1e-5
    # Execute
    sigma_prv = noise_multiplier_for_target(
        target_epsilon=1.0, delta=delta, sample_rate=q, steps=steps, accountant="prv"
    )
    sigma_rdp = noise_multiplier_for_target(
        target_epsilon=1.0, delta=delta, sample_rate=q, steps=steps, accountant="rdp"
    )
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma_prv))
    pld.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    # Assert: within the target by the independent check, and less noise than RDP needs
    assert pld.get_epsilon(delta) <= 1.0 + 1e-3
    assert pld.get_epsilon(delta) > 0.9  # not a loose bound either
    assert sigma_prv < sigma_rdp
    # RDP's ε of PRV's noise is above 1: taking the max over accountants would waste budget
    assert epsilon_from_history([(sigma_prv, q, steps)], delta=delta, accountant="rdp") > 1.0


def test_only_trainable_trains_the_named_modules_and_restores_flags() -> None:
    # Prepare
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # Execute: DP-SGD on the last layer only
    train_local_pass(
        _Linear(),
        model,
        _data(),
        epochs=1,
        batch_size=16,
        lr=0.1,
        dp=DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, trainable=("2",)),
    )
    after = model.state_dict()
    # Assert: the first layer is untouched, the named one moved, every flag is back
    assert torch.equal(after["0.weight"], before["0.weight"])
    assert not torch.equal(after["2.weight"], before["2.weight"])
    assert all(p.requires_grad for p in model.parameters())


def test_only_trainable_takes_patterns_such_as_every_normalization_layer() -> None:
    """``*.N`` selects modules by pattern (a UNet's norm layers sit at many depths)."""
    from privfed.training import only_trainable

    # Prepare: two blocks, each with a norm layer named N
    def block() -> nn.Module:
        b = nn.Module()
        b.conv, b.N = nn.Linear(3, 3), nn.LayerNorm(3)
        return b

    model = nn.Sequential(block(), nn.Sequential(block()))
    # Execute
    with only_trainable(model, ("*.N",)):
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
    # Assert: only the norm layers' weights and biases, and "*" is every parameter
    assert trained == {"0.N.weight", "0.N.bias", "1.0.N.weight", "1.0.N.bias"}
    with only_trainable(model, ("*",)):
        assert all(p.requires_grad for p in model.parameters())
    with (
        pytest.raises(ValueError, match=r"privacy.trainable names \['\*.adn'\]"),
        only_trainable(model, ("*.adn",)),
    ):
        pass


def test_only_trainable_names_an_unknown_module() -> None:
    model = nn.Sequential(nn.Linear(5, 3))
    with pytest.raises(ValueError, match=r"privacy.trainable names \['head'\]"):
        train_local_pass(
            _Linear(),
            model,
            _data(),
            epochs=1,
            batch_size=16,
            lr=0.1,
            dp=DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, trainable=("head",)),
        )


def test_dp_training_turns_dropout_off_and_restores_it() -> None:
    # Prepare: a probe records the dropout probability each forward pass runs with
    seen: dict[bool, list[float]] = {False: [], True: []}
    current = [False]

    class _Probe(nn.Module):
        def forward(self, x):
            seen[current[0]].append(float(model[1].p))
            return x

    model = nn.Sequential(nn.Linear(5, 3), nn.Dropout(0.5), _Probe())
    # Execute: privacy.dropout false, then true
    for dropout in (False, True):
        current[0] = dropout
        train_local_pass(
            _Linear(),
            model,
            _data(),
            epochs=1,
            batch_size=16,
            lr=0.1,
            dp=DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, dropout=dropout),
        )
    # Assert: p was 0 in every DP forward with dropout off, 0.5 with it on, and is 0.5 after
    assert seen[False] and all(p == 0.0 for p in seen[False])
    assert seen[True] and all(p == 0.5 for p in seen[True])
    assert model[1].p == 0.5
