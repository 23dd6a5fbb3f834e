"""Group privacy: the per-patient guarantee of a per-example (ε, δ), against hand values."""

from __future__ import annotations

import math

import pytest

from privfed.privacy import group_privacy


def test_a_group_of_one_is_the_guarantee_itself() -> None:
    assert group_privacy(epsilon=0.7, delta=1e-5, group_size=1) == (0.7, 1e-5)


@pytest.mark.parametrize(
    ("epsilon", "delta", "k", "expected"),
    [
        # ε_k = k·ε, δ_k = k·e^{(k−1)ε}·δ, worked out by hand (e = 2.718281828…)
        (1.0, 1e-5, 2, (2.0, 5.436563657e-5)),  # 2·e·1e-5
        (1.0, 1e-5, 3, (3.0, 2.216716830e-4)),  # 3·e²·1e-5
        (0.5, 1e-6, 4, (2.0, 1.792675628e-5)),  # 4·e^1.5·1e-6 = 4·4.48168907·1e-6
        (2.0, 0.0, 5, (10.0, 0.0)),  # pure DP: k·ε, no δ
    ],
)
def test_group_bound_matches_hand_values(epsilon, delta, k, expected) -> None:
    eps, dlt = group_privacy(epsilon=epsilon, delta=delta, group_size=k)
    assert eps == pytest.approx(expected[0])
    assert dlt == pytest.approx(expected[1], rel=1e-9)


def test_a_vacuous_bound_is_capped_at_one_not_overflowed() -> None:
    # 3·e^{16}·1e-5 ≈ 266: the bound promises nothing; ε = 8 at k = 400 would overflow e^x
    assert group_privacy(epsilon=8.0, delta=1e-5, group_size=3) == (24.0, 1.0)
    assert group_privacy(epsilon=8.0, delta=1e-5, group_size=400) == (3200.0, 1.0)
    assert group_privacy(epsilon=math.inf, delta=1e-5, group_size=2) == (math.inf, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"group_size": 0}, "group_size"),
        ({"group_size": 2.0}, "group_size"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"epsilon": math.nan}, "epsilon"),
        ({"delta": 1.5}, "delta"),
    ],
)
def test_bad_values_are_named(kwargs: dict, needle: str) -> None:
    args = {"epsilon": 1.0, "delta": 1e-5, "group_size": 2} | kwargs
    with pytest.raises(ValueError, match=needle):
        group_privacy(**args)
