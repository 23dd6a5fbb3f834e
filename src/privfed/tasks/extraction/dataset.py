"""Annotated notes as tensors: BIO tags per token and candidate (concept, modifier) pairs.

One note is one example (one DP-SGD unit): ``[CLS]`` + its WordPiece tokens (cut to
``max_length``) + ``[SEP]``, a BIO tag per token (special and padding tokens are ignored), and
up to ``max_pairs`` candidate pairs: every concept with every modifier of a kind it can take
(a problem's severity, a drug's dosage, ...) in the same sentence, each labelled with its
relation type or "none". A pair is scored at the first token of each entity. The same
candidate rule runs on predicted entities at evaluation.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import TensorDataset

from privfed.tasks.extraction.schema import (
    CONCEPTS,
    RELATION_OF,
    RELATION_TYPES,
    Entity,
    Relation,
    bio_labels,
)

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "ExtractionDataset",
    "candidate_pairs",
    "decode_bio",
    "encode_notes",
    "gold",
    "sentence_starts",
    "word_spans",
]

LABELS = bio_labels()
LABEL_ID = {label: i for i, label in enumerate(LABELS)}
IGNORE = -100
_SENTENCE_END = re.compile(r"(?<=[.;!?])\s+|\n")


def sentence_starts(text: str) -> list[int]:
    """Character offsets where sentences start (after ``. `` ``; `` ``? `` ``! `` or a newline)."""
    return [0] + [m.end() for m in _SENTENCE_END.finditer(text)]


def gold(record: dict[str, Any]) -> tuple[list[Entity], list[Relation]]:
    """A record's annotations as :class:`Entity` / :class:`Relation` values."""
    by_id = {
        e["id"]: Entity(int(e["start"]), int(e["end"]), str(e["type"])) for e in record["entities"]
    }
    relations = [
        Relation(r["type"], by_id[r["head"]], by_id[r["tail"]]) for r in record["relations"]
    ]
    return sorted(by_id.values()), sorted(relations)


def candidate_pairs(entities: Sequence[Entity], text: str) -> list[tuple[Entity, Entity]]:
    """(concept, modifier) pairs that could be related: compatible types, same sentence."""
    starts = sentence_starts(text)

    def sentence(e: Entity) -> int:
        return bisect.bisect_right(starts, e.start)

    return [
        (c, m)
        for c in entities
        if c.type in CONCEPTS
        for m in entities
        if m.type in RELATION_OF and RELATION_OF[m.type][0] == c.type and sentence(c) == sentence(m)
    ]


def _first_token(offsets: Sequence[tuple[int, int]], entity: Entity) -> int | None:
    for i, (s, e) in enumerate(offsets):
        if e > s and s < entity.end and e > entity.start:
            return i
    return None


def token_tags(offsets: Sequence[tuple[int, int]], entities: Sequence[Entity]) -> list[int]:
    """BIO tag id per token: B on the first token overlapping an entity, I on the rest."""
    tags = [IGNORE if e <= s else LABEL_ID["O"] for s, e in offsets]
    for ent in entities:
        first = True
        for i, (s, e) in enumerate(offsets):
            if e > s and s < ent.end and e > ent.start:
                tags[i] = LABEL_ID[f"{'B' if first else 'I'}-{ent.type}"]
                first = False
    return tags


def word_spans(
    offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None]
) -> list[tuple[int, int, int]]:
    """``(start, end, first token)`` of each word (the pre-tokenizer's: punctuation apart)."""
    words: dict[int, list[int]] = {}
    for i, (word, (s, e)) in enumerate(zip(word_ids, offsets, strict=True)):
        if word is None or e <= s:
            continue
        if word in words:
            words[word][1] = e
        else:
            words[word] = [s, e, i]
    return [tuple(w) for w in words.values()]  # type: ignore[misc]


def decode_bio(
    tags: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    words: Sequence[tuple[int, int, int]] | None = None,
) -> list[Entity]:
    """Character spans from BIO tags (an I- that continues nothing starts an entity).

    With ``words``, each word takes its first sub-word's tag and spans cover whole words (a
    sub-word tagged apart from its word would cut a span inside it).
    """
    if words is not None:
        tags = [tags[first] for _, _, first in words]
        offsets = [(s, e) for s, e, _ in words]
    out: list[Entity] = []
    current: list[Any] | None = None  # [start, end, type]
    for tag, (s, e) in zip(tags, offsets, strict=True):
        if e <= s:  # special token
            continue
        label = LABELS[tag] if tag >= 0 else "O"
        if label == "O":
            if current:
                out.append(Entity(*current))
            current = None
            continue
        prefix, kind = label.split("-", 1)
        if prefix == "I" and current and current[2] == kind:
            current[1] = e
            continue
        if current:
            out.append(Entity(*current))
        current = [s, e, kind]
    if current:
        out.append(Entity(*current))
    return out


def pair_tensors(
    pairs: Sequence[tuple[Entity, Entity]],
    offsets: Sequence[tuple[int, int]],
    *,
    max_pairs: int,
    related: dict[tuple[Entity, Entity], str] | None = None,
) -> tuple[list[int], list[int], list[int], list[tuple[Entity, Entity]]]:
    """Token positions of each pair's concept and modifier, their labels, the pairs kept."""
    heads, tails, labels, kept = [], [], [], []
    for concept, modifier in pairs:
        h, t = _first_token(offsets, concept), _first_token(offsets, modifier)
        if h is None or t is None or len(kept) == max_pairs:
            continue
        heads.append(h)
        tails.append(t)
        rel = (related or {}).get((concept, modifier))
        labels.append(0 if rel is None else RELATION_TYPES.index(rel) + 1)
        kept.append((concept, modifier))
    return heads, tails, labels, kept


def encode_notes(
    tokenizer: Tokenizer, records: Sequence[dict[str, Any]], *, max_pairs: int, pad_id: int
) -> dict[str, Any]:
    """The tensors of :class:`ExtractionDataset` and the offsets evaluation decodes with."""
    encodings = tokenizer.encode_batch([str(r["text"]) for r in records])
    width = max((len(enc.ids) for enc in encodings), default=2)
    n = len(records)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    tags = torch.full((n, width), IGNORE, dtype=torch.long)
    heads = torch.full((n, max_pairs), IGNORE, dtype=torch.long)
    tails = torch.full((n, max_pairs), IGNORE, dtype=torch.long)
    pair_labels = torch.full((n, max_pairs), IGNORE, dtype=torch.long)
    offsets: list[list[tuple[int, int]]] = []
    words: list[list[tuple[int, int, int]]] = []
    dropped = 0
    for row, (record, enc) in enumerate(zip(records, encodings, strict=True)):
        entities, relations = gold(record)
        off = [tuple(o) for o in enc.offsets]
        offsets.append(off)
        words.append(word_spans(off, enc.word_ids))
        ids[row, : len(enc.ids)] = torch.tensor(enc.ids)
        mask[row, : len(enc.ids)] = 1
        tags[row, : len(enc.ids)] = torch.tensor(token_tags(off, entities))
        related = {(r.head, r.tail): r.type for r in relations}
        pairs = candidate_pairs(entities, str(record["text"]))
        h, t, lab, kept = pair_tensors(pairs, off, max_pairs=max_pairs, related=related)
        dropped += len(pairs) - len(kept)
        heads[row, : len(h)] = torch.tensor(h, dtype=torch.long)
        tails[row, : len(t)] = torch.tensor(t, dtype=torch.long)
        pair_labels[row, : len(lab)] = torch.tensor(lab, dtype=torch.long)
    return {
        "tensors": (ids, mask, tags, heads, tails, pair_labels),
        "offsets": offsets,
        "words": words,
        "dropped_pairs": dropped,
    }


class ExtractionDataset(TensorDataset):
    """``(input_ids, mask, tags, heads, tails, pair_labels)`` per note, records kept beside."""

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        *,
        records: Sequence[dict[str, Any]],
        offsets: Sequence[Sequence[tuple[int, int]]],
        words: Sequence[Sequence[tuple[int, int, int]]],
    ) -> None:
        super().__init__(*tensors)
        self.records = list(records)
        self.offsets = [list(o) for o in offsets]
        self.words = [list(w) for w in words]
