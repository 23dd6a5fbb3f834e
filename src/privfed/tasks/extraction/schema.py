"""What an annotation is: entity types, the relations between a concept and its modifiers.

Concepts are problems, treatments, tests and drugs; modifiers are spans that qualify a
concept (a problem's severity, body site, negation, uncertainty or time; a drug's dosage, route
or frequency). A relation always links a concept (head) to one of its modifiers (tail), and its
type follows from the modifier's type, so the relation head's job is to find *which* concept a
modifier belongs to ("denies fever but reports severe headache": the negation is fever's).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONCEPTS",
    "ENTITY_TYPES",
    "MODIFIERS",
    "RELATION_OF",
    "RELATION_TYPES",
    "Entity",
    "Relation",
    "bio_labels",
]

CONCEPTS = ("PROBLEM", "TREATMENT", "TEST", "DRUG")
#: modifier type -> (concept type it qualifies, relation type)
RELATION_OF: dict[str, tuple[str, str]] = {
    "SEVERITY": ("PROBLEM", "severity"),
    "BODY_SITE": ("PROBLEM", "body_site"),
    "NEGATION": ("PROBLEM", "negation"),
    "UNCERTAINTY": ("PROBLEM", "uncertainty"),
    "TEMPORAL": ("PROBLEM", "temporality"),
    "DOSAGE": ("DRUG", "dosage"),
    "ROUTE": ("DRUG", "route"),
    "FREQUENCY": ("DRUG", "frequency"),
}
MODIFIERS = tuple(RELATION_OF)
ENTITY_TYPES = (*CONCEPTS, *MODIFIERS)
#: Relation types; index 0 of the relation head is "no relation".
RELATION_TYPES = tuple(rel for _, rel in RELATION_OF.values())


def bio_labels() -> tuple[str, ...]:
    """``O``, then ``B-X``, ``I-X`` for every entity type (the token head's classes)."""
    return ("O", *(f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I")))


@dataclass(frozen=True, order=True)
class Entity:
    """A typed character span ``text[start:end]`` (end exclusive)."""

    start: int
    end: int
    type: str


@dataclass(frozen=True, order=True)
class Relation:
    """``type`` from the concept ``head`` to its modifier ``tail``."""

    type: str
    head: Entity
    tail: Entity
