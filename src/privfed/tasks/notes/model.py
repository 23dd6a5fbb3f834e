"""The note model: GPT-2 from the shared base, fully trainable or with LoRA adapters.

``mode: lora`` wraps the frozen base with ``peft`` LoRA adapters on the attention projections
(``c_attn``, ``attn.c_proj``), initialized from a public seed so every hospital builds the same
ones. With ``lora_freeze_a`` (FFA-LoRA, Sun et al. 2024) the down-projections ``A`` stay at that
shared initialization and only ``B`` trains and travels: averaging the ``B`` of the hospitals is
then exactly averaging their updates ``B·A`` (averaging ``A`` and ``B`` separately is not), and
half as many values travel. The wrapper's ``state_dict`` then holds only the adapters and
the base's digest, which is what the federation sends, screens, averages, checkpoints and
resumes: no federation code knows about LoRA. Loading refuses a state made on another base.
Tied weights (GPT-2's output layer is its token embedding) are sent once.

Opacus work-around: GPT-2 builds ``position_ids`` with batch size 1, which breaks per-sample
gradients of the position embedding; :meth:`NotesLM.forward` passes them per example.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from privfed.exchange import BASE_DIGEST, check_exchanged_state, freeze_lora_a
from privfed.tasks.notes.public import PublicAssets, build_gpt2

if TYPE_CHECKING:
    from privfed.tasks.notes.settings import NotesModelSection

__all__ = ["BASE_DIGEST", "LORA_TARGETS", "NotesLM", "build_notes_model"]

#: The buffer holding the SHA-256 of the tokenizer and base, one float per byte: travels with
#: every update (both modes), so a hospital on another build is refused.
#: Floats because FedAvg averages every array (Flower casts integers to float64, which would
#: round 64-bit integers); the average of equal bytes rounds back to them exactly.
#: GPT-2's attention projections: query/key/value (c_attn) and output (attn.c_proj).
LORA_TARGETS = r".*\.attn\.(c_attn|c_proj)$"
#: Seed of the adapters' initialization (public: every hospital builds the same ones).
LORA_SEED = 20_240_602


def _digest_tensor(digest: str) -> torch.Tensor:
    return torch.tensor(list(bytes.fromhex(digest)), dtype=torch.float32)


class NotesLM(nn.Module):
    """A GPT-2 language model whose state is what hospitals exchange.

    Args:
        lm: ``GPT2LMHeadModel`` or a ``peft`` model around one.
        mode: ``full`` (every weight trains and travels) or ``lora`` (adapters only).
        base_digest: SHA-256 hex of the tokenizer and base weights (checked on load).
    """

    def __init__(self, lm: nn.Module, *, mode: str, base_digest: str) -> None:
        super().__init__()
        if mode not in ("full", "lora"):
            raise ValueError(f"mode must be 'full' or 'lora', got {mode!r}")
        self.lm = lm
        self.mode = mode
        self.register_buffer(BASE_DIGEST, _digest_tensor(base_digest))
        self.register_state_dict_post_hook(_exchanged_only)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``[B, T, vocab]``."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        positions = positions.unsqueeze(0).expand(input_ids.shape[0], -1)
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)
        return out.logits

    def exchanged_names(self) -> list[str]:
        """Names in :meth:`state_dict`: what a hospital sends each round."""
        return list(self.state_dict())

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load an exchanged state; refuses missing or extra names, or another base's adapters."""
        check_exchanged_state(
            state_dict,
            expected=set(self.state_dict()),
            strict=strict,
            base_digest=self.base_digest,
            label=f"notes model ({self.mode})",
            mode_key="model.notes.mode",
            base_hint=" ($PRIVFED_CACHE_DIR) or model.notes.checkpoint",
        )
        return super().load_state_dict(dict(state_dict), strict=False, assign=assign)


def _exchanged_only(
    module: NotesLM, state: dict[str, torch.Tensor], prefix: str, local_metadata: Any
) -> None:
    """State-dict post-hook: drop frozen weights (LoRA) and second names of tied tensors."""
    keep_frozen = module.mode == "full"
    trainable = {prefix + n for n, p in module.named_parameters() if p.requires_grad}
    seen: set[tuple[int, tuple[int, ...]]] = set()
    for name in list(state):
        if not name.startswith(prefix):
            continue
        local = name[len(prefix) :]
        tensor = state[name]
        if local == BASE_DIGEST:
            continue
        if not keep_frozen and name not in trainable:
            del state[name]
            continue
        ptr = (tensor.data_ptr(), tuple(tensor.shape)) if tensor.numel() else (id(tensor), ())
        if ptr in seen:
            del state[name]  # a tied weight (lm_head = token embedding): sent once
        else:
            seen.add(ptr)


def build_notes_model(
    settings: NotesModelSection, assets: PublicAssets, *, mode: str | None = None
) -> NotesLM:
    """The shared base (with fresh, seeded LoRA adapters in ``lora`` mode)."""
    mode = mode or settings.mode
    lm = build_gpt2(assets.gpt2_config)
    lm.load_state_dict(assets.state_dict, strict=False)
    lm.tie_weights()
    digest = assets.build_digest
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(LORA_SEED)  # the same initial adapters at every hospital
            lm = get_peft_model(
                lm,
                LoraConfig(
                    r=settings.lora_rank,
                    lora_alpha=settings.lora_alpha,
                    target_modules=LORA_TARGETS,
                    lora_dropout=0.0,
                    fan_in_fan_out=True,  # GPT-2's Conv1D stores weights transposed
                    bias="none",
                ),
            )
        if settings.lora_freeze_a:
            digest = freeze_lora_a(lm, digest)
    return NotesLM(lm, mode=mode, base_digest=digest)
