"""Scoring a note model: perplexity on whole notes, BLEU and ROUGE-L on greedy continuations.

A held-out note's first ``prefix_tokens`` tokens are the prompt; the model continues it
greedily for ``continuation_tokens`` tokens, and sacrebleu's corpus BLEU and rouge-score's
ROUGE-L F1 compare the decoded continuation with the note's true one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from privfed.tasks.notes.dataset import token_losses

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from torch import nn

    from privfed.tasks.notes.dataset import NotesDataset

__all__ = ["Continuation", "continuations", "lm_scores", "text_scores", "greedy_continue"]


@dataclass(frozen=True)
class Continuation:
    note_id: str
    hospital: str
    prompt: str
    reference: str
    generated: str


@torch.no_grad()
def lm_scores(model: nn.Module, dataset: NotesDataset, *, batch_size: int) -> dict[str, float]:
    """Token-weighted mean loss over every note's tokens, and its exponential (perplexity)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0.0
    for start in range(0, len(dataset), batch_size):
        input_ids, mask = (t[start : start + batch_size].to(device) for t in dataset.tensors)
        losses, valid = token_losses(model(input_ids, mask), input_ids, mask)
        total += float(losses.sum())
        count += float(valid.sum())
    loss = total / count if count else math.nan
    return {"loss": loss, "perplexity": math.exp(loss) if count else math.nan, "tokens": count}


@torch.no_grad()
def greedy_continue(
    model: nn.Module, prompts: torch.Tensor, *, new_tokens: int, eos_id: int
) -> list[list[int]]:
    """Greedy tokens after each prompt row (equal-length prompts, so no padding), cut at EOS."""
    ids = prompts
    done = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    out: list[list[int]] = [[] for _ in range(len(ids))]
    for _ in range(new_tokens):
        logits = model(ids, torch.ones_like(ids))[:, -1]
        nxt = logits.argmax(dim=-1)
        for row, token in enumerate(nxt.tolist()):
            if not done[row]:
                if token == eos_id:
                    done[row] = True
                else:
                    out[row].append(token)
        if bool(done.all()):
            break
        ids = torch.cat([ids, nxt.unsqueeze(1)], dim=1)
    return out


def continuations(
    model: nn.Module,
    dataset: NotesDataset,
    tokenizer: Tokenizer,
    *,
    prefix_tokens: int,
    continuation_tokens: int,
    max_notes: int,
    eos_id: int,
    batch_size: int = 16,
) -> list[Continuation]:
    """Greedy continuations of the first ``max_notes`` notes long enough to have both parts."""
    need = prefix_tokens + continuation_tokens
    chosen = [i for i, ids in enumerate(dataset.token_ids) if len(ids) - 1 >= need][:max_notes]
    device = next(model.parameters()).device
    results: list[Continuation] = []
    for start in range(0, len(chosen), batch_size):
        rows = chosen[start : start + batch_size]
        prompts = torch.tensor(
            [dataset.token_ids[i][:prefix_tokens] for i in rows], dtype=torch.long, device=device
        )
        generated = greedy_continue(model, prompts, new_tokens=continuation_tokens, eos_id=eos_id)
        for i, gen in zip(rows, generated, strict=True):
            ids = dataset.token_ids[i]
            results.append(
                Continuation(
                    note_id=dataset.note_ids[i],
                    hospital=dataset.hospitals[i],
                    prompt=tokenizer.decode(ids[:prefix_tokens]),
                    reference=tokenizer.decode(ids[prefix_tokens:need]),
                    generated=tokenizer.decode(gen),
                )
            )
    return results


def text_scores(items: Sequence[Continuation]) -> dict[str, float]:
    """Corpus BLEU (sacrebleu, 0-100) and mean ROUGE-L F1 (0-1) of generated vs reference."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if not items:
        return {"bleu": math.nan, "rouge_l": math.nan, "generated_notes": 0}
    hyps = [c.generated.strip() for c in items]
    refs = [c.reference.strip() for c in items]
    bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rouge = [scorer.score(r, h)["rougeL"].fmeasure for r, h in zip(refs, hyps, strict=True)]
    return {"bleu": float(bleu), "rouge_l": float(np.mean(rouge)), "generated_notes": len(items)}
