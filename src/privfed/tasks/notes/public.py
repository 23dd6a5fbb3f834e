"""The public side of task ``notes``: tokenizer and frozen base, the same at every hospital.

Both come from the public corpus (:func:`privfed.tasks.notes.generate.public_corpus`: the
generator's vocabulary and public medical terms, never a hospital's notes), so every process
that needs them (a stage, the ServerApp, each SuperNode, a Kubeflow pod) can rebuild them
without data moving. The build is cached on disk under a key that hashes the settings and this
code, and built once per cache folder under a file lock, so every process of a run that shares
the folder uses the same build. Builds in separate folders can differ: pretraining is seeded and
single-threaded, but Hugging Face's BPE trainer breaks ties between equally frequent pairs in a
per-process order. The SHA-256 of tokenizer and base travels with every update, so a hospital
on another build is refused. A user's own GPT-2 folder (``model.notes.checkpoint``) replaces
both.
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

from privfed.public import (
    DONE_FILE,
    cache_key,
    cache_root,
    cached_build,
    one_thread_seeded,
    state_digest,
)

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import GPT2LMHeadModel

    from privfed.tasks.notes.settings import NotesModelSection

__all__ = [
    "EOS",
    "PAD",
    "PublicAssets",
    "cache_root",
    "load_public_assets",
    "state_digest",
    "train_tokenizer",
]

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
PAD = "<|pad|>"
TOKENIZER_FILE = "tokenizer.json"
BASE_FILE = "base.pt"
META_FILE = DONE_FILE
#: Seed of the public corpus and pretraining: public, the same for every consortium.
PUBLIC_SEED = 20_240_601


@dataclass(frozen=True)
class PublicAssets:
    """What every hospital shares: the tokenizer, the base's config and weights, their digest.

    ``digest`` is the base weights' SHA-256 (checked against the cached file);
    ``build_digest`` also covers the tokenizer: what a model made from this build carries.
    """

    tokenizer: Tokenizer
    gpt2_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    digest: str
    source: str

    @functools.cached_property
    def build_digest(self) -> str:
        """SHA-256 of base and tokenizer (in full mode, other token ids would train nonsense)."""
        tokenizer = hashlib.sha256(self.tokenizer.to_str().encode()).hexdigest()
        return hashlib.sha256((self.digest + tokenizer).encode()).hexdigest()

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.token_to_id(EOS))

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.token_to_id(PAD)
        return int(pad) if pad is not None else self.eos_id


def train_tokenizer(texts: list[str], *, vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer (GPT-2's scheme) trained on ``texts``; EOS id 0, PAD id 1."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def gpt2_config(settings: NotesModelSection, *, vocab_size: int) -> dict[str, Any]:
    """GPT-2 hyper-parameters from ``model.notes`` (no dropout: DP-SGD brings its own noise)."""
    return {
        "vocab_size": vocab_size,
        "n_positions": settings.max_length,
        "n_embd": settings.n_embd,
        "n_layer": settings.n_layer,
        "n_head": settings.n_head,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 1,
    }


def build_gpt2(config: dict[str, Any]) -> GPT2LMHeadModel:
    """A GPT-2 with eager attention (Opacus computes per-sample gradients through it)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel._from_config(GPT2Config(**config), attn_implementation="eager")


def _public_settings(settings: NotesModelSection) -> dict[str, Any]:
    keys = (
        "vocab_size",
        "public_notes",
        "n_layer",
        "n_embd",
        "n_head",
        "max_length",
        "pretrain_epochs",
        "pretrain_lr",
    )
    return {k: getattr(settings, k) for k in keys}


def _cache_key(settings: NotesModelSection) -> str:
    from privfed.tasks.notes import generate

    return cache_key(_public_settings(settings), (generate, inspect.getmodule(_cache_key)))


def pretrain(
    model: GPT2LMHeadModel,
    ids: list[list[int]],
    *,
    epochs: int,
    lr: float,
    pad_id: int,
    batch_size: int = 32,
) -> float:
    """Next-token training of ``model`` on tokenized public notes; returns the last epoch's loss."""
    from privfed.tasks.notes.dataset import pad_batch, per_example_lm_loss

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(PUBLIC_SEED)
    model.train()
    last = float("nan")
    for epoch in range(epochs):
        perm = torch.randperm(len(ids), generator=order).tolist()
        total, steps = 0.0, 0
        for start in range(0, len(perm), batch_size):
            input_ids, mask = pad_batch([ids[i] for i in perm[start : start + batch_size]], pad_id)
            logits = model(input_ids=input_ids, attention_mask=mask).logits
            loss = per_example_lm_loss(logits, input_ids, mask).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        last = total / max(steps, 1)
        log.info("public base: pretraining epoch %d/%d loss=%.4f", epoch + 1, epochs, last)
    model.eval()
    return last


def _build(settings: NotesModelSection, folder: Path) -> None:
    """Train the tokenizer and pretrain the base on the public corpus; write them to ``folder``."""
    from privfed.tasks.notes.dataset import encode_notes
    from privfed.tasks.notes.generate import public_corpus

    texts = public_corpus(seed=PUBLIC_SEED, n_notes=settings.public_notes)
    tokenizer = train_tokenizer(texts, vocab_size=settings.vocab_size)
    eos = tokenizer.token_to_id(EOS)
    config = gpt2_config(settings, vocab_size=tokenizer.get_vocab_size())
    ids = encode_notes(tokenizer, texts, max_length=settings.max_length, eos_id=eos)
    with one_thread_seeded(PUBLIC_SEED):
        model = build_gpt2(config)
        loss = pretrain(
            model,
            ids,
            epochs=settings.pretrain_epochs,
            lr=settings.pretrain_lr,
            pad_id=tokenizer.token_to_id(PAD),
        )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tokenizer.save(str(folder / TOKENIZER_FILE))
    torch.save(state, folder / BASE_FILE)
    meta = {
        "settings": _public_settings(settings),
        "gpt2_config": config,
        "public_notes": len(texts),
        "pretrain_loss": loss,
        "digest": state_digest(state),
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))


def _built_public(settings: NotesModelSection) -> Path:
    """The cache folder of these settings, built first (once, under a file lock) if absent."""
    return cached_build("notes-public", _cache_key(settings), functools.partial(_build, settings))


def _load_checkpoint(path: Path) -> PublicAssets:
    """A user's local GPT-2 folder: ``config.json``, weights, ``tokenizer.json``."""
    from tokenizers import Tokenizer
    from transformers import GPT2LMHeadModel

    missing = [f for f in ("config.json", TOKENIZER_FILE) if not (path / f).is_file()]
    if not path.is_dir() or missing:
        raise FileNotFoundError(
            f"model.notes.checkpoint={str(path)!r}: expected a local folder with config.json, "
            f"the weights and {TOKENIZER_FILE}"
            + (f"; missing {missing}" if path.is_dir() else "; no such folder")
        )
    model = GPT2LMHeadModel.from_pretrained(str(path), local_files_only=True)
    tokenizer = Tokenizer.from_file(str(path / TOKENIZER_FILE))
    if tokenizer.token_to_id(EOS) is None:
        raise ValueError(f"{path / TOKENIZER_FILE} has no {EOS!r} token (GPT-2's end of text)")
    config = {
        k: getattr(model.config, k)
        for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
    }
    config.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return PublicAssets(
        tokenizer=tokenizer,
        gpt2_config=config,
        state_dict=state,
        digest=state_digest(state),
        source=str(path),
    )


_LOADED: dict[str, PublicAssets] = {}


def load_public_assets(settings: NotesModelSection) -> PublicAssets:
    """Tokenizer and base weights: the user's ``checkpoint``, else the public build (cached)."""
    if settings.checkpoint:
        key = f"checkpoint:{Path(settings.checkpoint).resolve()}"
        if key not in _LOADED:
            _LOADED[key] = _load_checkpoint(Path(settings.checkpoint))
        return _LOADED[key]
    folder = _built_public(settings)
    key = str(folder)
    if key not in _LOADED:
        from tokenizers import Tokenizer

        meta = json.loads((folder / META_FILE).read_text())
        state = torch.load(folder / BASE_FILE, map_location="cpu", weights_only=True)
        if state_digest(state) != meta["digest"]:
            raise ValueError(f"{folder / BASE_FILE} does not match its digest; delete {folder}")
        _LOADED[key] = PublicAssets(
            tokenizer=Tokenizer.from_file(str(folder / TOKENIZER_FILE)),
            gpt2_config=meta["gpt2_config"],
            state_dict=state,
            digest=meta["digest"],
            source=str(folder),
        )
    return _LOADED[key]
