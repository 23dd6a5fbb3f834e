"""Models built on a frozen public base whose hospitals exchange only part of the state.

The ``notes`` and ``extraction`` tasks send LoRA adapters (and heads) plus a digest of the public
base they were trained on. A state from the other mode, or from another public build, would load
silently into the wrong weights: :func:`check_exchanged_state` refuses both, naming the cause.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["BASE_DIGEST", "check_exchanged_state"]

#: the state-dict entry holding the digest of the public base (tokenizer and weights)
BASE_DIGEST = "base_digest"


def check_exchanged_state(
    state_dict: Mapping[str, Any],
    *,
    expected: set[str],
    strict: bool,
    base_digest: torch.Tensor,
    label: str,
    mode_key: str,
    base_hint: str,
) -> None:
    """Raise if ``state_dict`` lacks or adds names, or was trained on another public base.

    ``label`` names the model (``"notes model (lora)"``), ``mode_key`` the params key that
    chooses what is exchanged, ``base_hint`` what a user should make equal at every hospital.
    """
    missing = sorted(expected - set(state_dict))
    extra = sorted(set(state_dict) - expected)
    if strict and (missing or extra):
        raise RuntimeError(
            f"{label} state mismatch: missing {missing[:5]}, unexpected {extra[:5]} "
            f"(was it saved in the other {mode_key}?)"
        )
    incoming = state_dict.get(BASE_DIGEST)
    if incoming is not None and not torch.equal(
        torch.round(torch.as_tensor(incoming).double()), base_digest.double()
    ):
        raise ValueError(
            f"{label.split(' (')[0]}: this state was trained on a different base model or "
            "tokenizer (base digest differs); every hospital must use the same public build"
            f"{base_hint}"
        )
