"""Scoring extraction: entity F1 (strict and lenient, per type) and relation F1 (per type).

Entity F1 comes from ``nervaluate`` (MUC-style counts, as SemEval 2013 task 9.1 defines them):
*strict* needs the exact span and type, *lenient* (nervaluate's ``ent_type``) needs the right
type and any character overlap. A relation counts when its type and both arguments (exact
spans and types) match a gold relation; relations are predicted on predicted entities, so a
missed entity also misses its relations (end-to-end, as a user would get them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from privfed.tasks.extraction.schema import ENTITY_TYPES, RELATION_TYPES, Entity, Relation

__all__ = ["entity_scores", "prf", "relation_scores"]


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1 from counts (0 where undefined)."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _docs(docs: Sequence[Sequence[Entity]]) -> list[list[dict[str, Any]]]:
    # nervaluate's spans are inclusive at both ends: [start, end - 1] keeps "touching" apart
    return [[{"label": e.type, "start": e.start, "end": e.end - 1} for e in doc] for doc in docs]


def entity_scores(
    gold: Sequence[Sequence[Entity]], pred: Sequence[Sequence[Entity]]
) -> dict[str, float]:
    """``entity_{f1,precision,recall}_{strict,lenient}`` overall and ``entity_f1_strict_<TYPE>``
    / ``entity_f1_lenient_<TYPE>`` and ``support_<TYPE>`` per entity type."""
    from nervaluate import Evaluator

    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold documents but {len(pred)} predicted")
    out: dict[str, float] = {}
    if not any(gold) and not any(pred):
        return {
            f"entity_{m}_{s}": 0.0
            for m in ("f1", "precision", "recall")
            for s in ("strict", "lenient")
        }
    results = Evaluator(_docs(gold), _docs(pred), tags=list(ENTITY_TYPES), loader="dict").evaluate()
    for ours, theirs in (("strict", "strict"), ("lenient", "ent_type")):
        r = results["overall"][theirs]
        out |= {
            f"entity_f1_{ours}": float(r.f1),
            f"entity_precision_{ours}": float(r.precision),
            f"entity_recall_{ours}": float(r.recall),
        }
    for kind in ENTITY_TYPES:
        per = results["entities"].get(kind)
        out[f"entity_f1_strict_{kind}"] = float(per["strict"].f1) if per else 0.0
        out[f"entity_f1_lenient_{kind}"] = float(per["ent_type"].f1) if per else 0.0
        out[f"support_{kind}"] = float(sum(e.type == kind for doc in gold for e in doc))
    return out


def relation_scores(
    gold: Sequence[Sequence[Relation]], pred: Sequence[Sequence[Relation]]
) -> dict[str, float]:
    """Micro ``relation_{f1,precision,recall}`` and ``relation_f1_<type>`` per relation type."""
    counts = {kind: [0, 0, 0] for kind in RELATION_TYPES}  # tp, fp, fn
    for g_doc, p_doc in zip(gold, pred, strict=True):
        g, p = set(g_doc), set(p_doc)
        for rel in g | p:
            c = counts.setdefault(rel.type, [0, 0, 0])
            c[0 if rel in g and rel in p else (1 if rel in p else 2)] += 1
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    precision, recall, f1 = prf(tp, fp, fn)
    out = {"relation_f1": f1, "relation_precision": precision, "relation_recall": recall}
    for kind, (t, f, n) in counts.items():
        out[f"relation_f1_{kind}"] = prf(t, f, n)[2]
    return out
