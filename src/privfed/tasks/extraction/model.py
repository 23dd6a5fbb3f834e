"""The extraction model: the public BERT encoder, a BIO token head and a relation head.

``mode: lora`` freezes the encoder and adds ``peft`` LoRA adapters (seeded: every hospital
builds the same ones) to the modules ``lora_targets`` names; the adapters and both heads train
and travel, nothing else (Fed-MedLoRA). With ``lora_freeze_a`` (the default) each adapter's A
stays at its seeded init too (FFA-LoRA, :func:`privfed.exchange.freeze_lora_a`): only B and
the heads train and travel, and the digest covers the frozen A. ``mode: full`` trains and
sends every weight (the comparison). The state dict holds exactly what travels, plus the
digest of the public build, so a hospital on another tokenizer or encoder is refused (as the
notes task does).

The relation head scores a (concept, modifier) pair from the encoder's vectors at the first
token of each, ``[h_c; h_m; h_c * h_m]``, plus a learned bias per bucket of their signed token
distance. Opacus work-around: BERT expands buffered position and token-type ids to the batch,
which breaks per-sample gradients of those embeddings (full mode with DP-SGD); the model passes
them per example.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from privfed.exchange import BASE_DIGEST, check_exchanged_state, freeze_lora_a
from privfed.tasks.extraction.dataset import LABELS
from privfed.tasks.extraction.public import PublicEncoder, build_encoder
from privfed.tasks.extraction.schema import RELATION_TYPES

if TYPE_CHECKING:
    from privfed.tasks.extraction.settings import ExtractionModelSection

__all__ = ["BASE_DIGEST", "ExtractionModel", "build_model"]

#: Seed of the heads' and adapters' initialization (public: every hospital builds the same).
INIT_SEED = 20_251_221
#: Signed token distances are bucketed to [-DISTANCE_CLIP, DISTANCE_CLIP].
DISTANCE_CLIP = 16


def _digest_tensor(digest: str) -> torch.Tensor:
    return torch.tensor(list(bytes.fromhex(digest)), dtype=torch.float32)


class ExtractionModel(nn.Module):
    """Encoder + token head + relation head; ``state_dict`` is what a hospital sends."""

    def __init__(self, encoder: nn.Module, *, hidden: int, mode: str, base_digest: str) -> None:
        super().__init__()
        if mode not in ("full", "lora"):
            raise ValueError(f"mode must be 'full' or 'lora', got {mode!r}")
        self.encoder = encoder
        self.mode = mode
        self.token_head = nn.Linear(hidden, len(LABELS))
        self.pair_head = nn.Linear(3 * hidden, len(RELATION_TYPES) + 1)
        self.distance = nn.Embedding(2 * DISTANCE_CLIP + 1, len(RELATION_TYPES) + 1)
        nn.init.zeros_(self.distance.weight)
        self.register_buffer(BASE_DIGEST, _digest_tensor(base_digest))
        self.register_state_dict_post_hook(_exchanged_only)

    def encode(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Contextual token vectors ``[B, T, hidden]``."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        positions = positions.unsqueeze(0).expand(input_ids.shape[0], -1).contiguous()
        out = self.encoder(
            input_ids=input_ids,
            attention_mask=mask,
            token_type_ids=torch.zeros_like(input_ids),
            position_ids=positions,
        )
        return out.last_hidden_state

    def pair_logits(
        self, hidden: torch.Tensor, heads: torch.Tensor, tails: torch.Tensor
    ) -> torch.Tensor:
        """Relation logits ``[B, P, 1 + relations]`` (class 0: no relation); padded pairs
        (index < 0) read token 0 and are ignored by the loss."""
        index = lambda idx: idx.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # noqa: E731
        h = torch.gather(hidden, 1, index(heads))
        t = torch.gather(hidden, 1, index(tails))
        bucket = (tails - heads).clamp(-DISTANCE_CLIP, DISTANCE_CLIP) + DISTANCE_CLIP
        return self.pair_head(torch.cat([h, t, h * t], dim=-1)) + self.distance(bucket)

    def forward(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        heads: torch.Tensor,
        tails: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encode(input_ids, mask)
        return self.token_head(hidden), self.pair_logits(hidden, heads, tails)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load an exchanged state; refuses missing or extra names, or another base's state."""
        check_exchanged_state(
            state_dict,
            expected=set(self.state_dict()),
            strict=strict,
            base_digest=self.base_digest,
            label=f"extraction model ({self.mode})",
            mode_key="model.extraction.mode",
            base_hint="",
        )
        return super().load_state_dict(dict(state_dict), strict=False, assign=assign)


def _exchanged_only(
    module: ExtractionModel, state: dict[str, torch.Tensor], prefix: str, local_metadata: Any
) -> None:
    """State-dict post-hook: in LoRA mode keep only what trains (adapters, heads) and the digest."""
    if module.mode == "full":
        return
    trainable = {prefix + n for n, p in module.named_parameters() if p.requires_grad}
    for name in list(state):
        if name.startswith(prefix) and name[len(prefix) :] != BASE_DIGEST and name not in trainable:
            del state[name]


def build_model(
    settings: ExtractionModelSection, public: PublicEncoder, *, mode: str | None = None
) -> ExtractionModel:
    """The public encoder (with fresh seeded adapters in ``lora`` mode) and fresh seeded heads."""
    mode = mode or settings.mode
    encoder = build_encoder(public.config)
    encoder.load_state_dict(public.state_dict)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)  # the same adapters and heads at every hospital
        if mode == "lora":
            from peft import LoraConfig, get_peft_model

            encoder = get_peft_model(
                encoder,
                LoraConfig(
                    r=settings.lora_rank,
                    lora_alpha=settings.lora_alpha,
                    target_modules=list(settings.lora_targets),
                    lora_dropout=0.0,
                    bias="none",
                ),
            )
        digest = public.build_digest
        if mode == "lora" and settings.lora_freeze_a:
            digest = freeze_lora_a(encoder, digest)
        model = ExtractionModel(encoder, hidden=settings.hidden, mode=mode, base_digest=digest)
    return model
