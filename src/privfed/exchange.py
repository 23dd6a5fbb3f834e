"""Models built on a frozen public base whose hospitals exchange only part of the state.

The ``notes`` and ``extraction`` tasks send LoRA adapters (and heads) plus a digest of the public
base they were trained on. A state from the other mode, or from another public build, would load
silently into the wrong weights: :func:`check_exchanged_state` refuses both, naming the cause.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from privfed.public import state_digest

__all__ = ["BASE_DIGEST", "check_exchanged_state", "freeze_lora_a"]

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


def freeze_lora_a(model: nn.Module, base_digest: str) -> str:
    """FFA-LoRA (Sun et al., ICLR 2024): every adapter's A stays at its seeded init.

    A layer's update B·A is then linear in what trains, so FedAvg of the hospitals' B is
    exactly the mean of their updates (averaging A and B separately is not), only B travels,
    and DP-SGD's noise is not multiplied through a second trained factor. A never travels:
    every hospital draws it from the same seed. Returns ``base_digest`` with the frozen A
    folded in, so a hospital whose A differs is refused like one on another public base.
    """
    frozen = {}
    for name, param in model.named_parameters():
        if ".lora_A." in name:
            param.requires_grad_(False)
            frozen[name] = param.detach()
    if not frozen:
        raise ValueError("lora_freeze_a: the model has no LoRA A matrices to freeze")
    return hashlib.sha256((base_digest + state_digest(frozen)).encode()).hexdigest()
