"""The public side of task ``extraction``: a WordPiece tokenizer and a BERT encoder pretrained
with masked language modelling on the public corpus, the same at every hospital.

The corpus is :func:`~privfed.tasks.extraction.generate.public_corpus` (its own seed stream,
many authors with random habits, text only: never a hospital's notes or annotations). Every
process that needs the encoder (a stage, the ServerApp, each SuperNode) rebuilds or reuses it
from the cache (:func:`privfed.public.cached_build`, keyed by the settings and this code). The
SHA-256 of tokenizer and weights travels with every update, so a hospital on another build is
refused.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from privfed.public import DONE_FILE, cache_key, cached_build, one_thread_seeded, state_digest

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import BertModel

    from privfed.tasks.extraction.settings import ExtractionModelSection

__all__ = ["PublicEncoder", "bert_config", "build_encoder", "load_public_encoder"]

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
ENCODER_FILE = "encoder.pt"
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: Seed of the public corpus, tokenizer and pretraining: public, the same for every consortium.
PUBLIC_SEED = 20_251_220


@dataclass(frozen=True)
class PublicEncoder:
    """Tokenizer, BERT hyper-parameters and pretrained encoder weights."""

    tokenizer: Tokenizer
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    digest: str

    @functools.cached_property
    def build_digest(self) -> str:
        tokenizer = hashlib.sha256(self.tokenizer.to_str().encode()).hexdigest()
        return hashlib.sha256((self.digest + tokenizer).encode()).hexdigest()

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.token_to_id("[PAD]"))


def train_tokenizer(texts: list[str], *, vocab_size: int, max_length: int) -> Tokenizer:
    """Lower-casing WordPiece (BERT's scheme) on ``texts``; offsets map to the original text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def bert_config(settings: ExtractionModelSection, *, vocab_size: int) -> dict[str, Any]:
    """BERT hyper-parameters from ``model.extraction`` (one token type, no pooler)."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": settings.hidden,
        "num_hidden_layers": settings.layers,
        "num_attention_heads": settings.heads,
        "intermediate_size": settings.intermediate,
        "max_position_embeddings": settings.max_length,
        "type_vocab_size": 1,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "pad_token_id": 0,
    }


def build_encoder(config: dict[str, Any]) -> BertModel:
    """A BERT encoder with eager attention (Opacus computes per-sample gradients through it)."""
    from transformers import BertConfig, BertModel

    return BertModel._from_config(
        BertConfig(**config), attn_implementation="eager", add_pooling_layer=False
    )


def _public_settings(settings: ExtractionModelSection) -> dict[str, Any]:
    keys = (
        "vocab_size",
        "public_notes",
        "hidden",
        "layers",
        "heads",
        "intermediate",
        "max_length",
        "pretrain_epochs",
        "pretrain_lr",
    )
    return {k: getattr(settings, k) for k in keys}


def mask_tokens(
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: 15 % of real tokens are targets (80 % [MASK], 10 % random, 10 % kept)."""
    special = input_ids < len(SPECIALS)
    chosen = (torch.rand(input_ids.shape, generator=g) < 0.15) & mask.bool() & ~special
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(input_ids.shape, generator=g)
    out = input_ids.clone()
    out[chosen & (roll < 0.8)] = mask_id
    rand = chosen & (roll >= 0.8) & (roll < 0.9)
    out[rand] = torch.randint(len(SPECIALS), vocab_size, input_ids.shape, generator=g)[rand]
    return out, labels


def _pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)  # [PAD] is id 0
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def _build(settings: ExtractionModelSection, folder: Path) -> None:
    """Tokenizer, then masked-LM pretraining of the encoder; write both to ``folder``."""
    from transformers import BertConfig, BertForMaskedLM

    from privfed.tasks.extraction.generate import public_corpus

    texts = public_corpus(seed=PUBLIC_SEED, n_notes=settings.public_notes)
    tokenizer = train_tokenizer(
        texts, vocab_size=settings.vocab_size, max_length=settings.max_length
    )
    vocab = tokenizer.get_vocab_size()
    config = bert_config(settings, vocab_size=vocab)
    ids = [enc.ids for enc in tokenizer.encode_batch(texts)]
    mask_id = tokenizer.token_to_id("[MASK]")
    last = float("nan")
    with one_thread_seeded(PUBLIC_SEED):
        model = BertForMaskedLM._from_config(BertConfig(**config), attn_implementation="eager")
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.pretrain_lr)
        g = torch.Generator().manual_seed(PUBLIC_SEED)
        model.train()
        for epoch in range(settings.pretrain_epochs):
            perm = torch.randperm(len(ids), generator=g).tolist()
            total, steps = 0.0, 0
            for start in range(0, len(perm), 32):
                batch, mask = _pad([ids[i] for i in perm[start : start + 32]])
                inputs, labels = mask_tokens(batch, mask, mask_id=mask_id, vocab_size=vocab, g=g)
                loss = model(input_ids=inputs, attention_mask=mask, labels=labels).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, steps = total + loss.item(), steps + 1
            last = total / max(steps, 1)
            log.info("extraction public encoder: MLM epoch %d loss=%.4f", epoch + 1, last)
    state = {
        k.removeprefix("bert."): v.detach().clone()
        for k, v in model.state_dict().items()
        if k.startswith("bert.")
    }
    tokenizer.save(str(folder / TOKENIZER_FILE))
    torch.save(state, folder / ENCODER_FILE)
    meta = {
        "settings": _public_settings(settings),
        "config": config,
        "public_notes": len(texts),
        "mlm_loss": last,
        "digest": state_digest(state),
    }
    (folder / DONE_FILE).write_text(json.dumps(meta, indent=2))


_LOADED: dict[str, PublicEncoder] = {}


def load_public_encoder(settings: ExtractionModelSection) -> PublicEncoder:
    """The public tokenizer and encoder for ``settings`` (built once per cache folder)."""
    from privfed.tasks.extraction import generate

    key = cache_key(_public_settings(settings), (generate, inspect.getmodule(_build)))
    folder = cached_build("extraction-public", key, functools.partial(_build, settings))
    if str(folder) not in _LOADED:
        from tokenizers import Tokenizer

        meta = json.loads((folder / DONE_FILE).read_text())
        state = torch.load(folder / ENCODER_FILE, map_location="cpu", weights_only=True)
        if state_digest(state) != meta["digest"]:
            raise ValueError(f"{folder / ENCODER_FILE} does not match its digest; delete {folder}")
        _LOADED[str(folder)] = PublicEncoder(
            tokenizer=Tokenizer.from_file(str(folder / TOKENIZER_FILE)),
            config=meta["config"],
            state_dict=state,
            digest=meta["digest"],
        )
    return _LOADED[str(folder)]
