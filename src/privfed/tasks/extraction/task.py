"""Task ``extraction``: federated clinical information extraction with LoRA (Fed-MedLoRA).

Data are annotated notes per hospital, BRAT standoff (:mod:`.brat`) in a user's folders and
JSONL records once ingested; partitioning deals out patients, so one patient's notes stay in
one split. The model (:mod:`.model`) is a small BERT encoder pretrained with masked LM on the
public corpus (:mod:`.public`), a BIO token head (entities: problems, treatments, tests, drugs
and their modifiers) and a relation head (concept -> modifier). Hospitals train LoRA adapters
and the heads (``model.extraction.mode: lora``), or every weight (``full``). One note is one
training example; a patient with several notes is protected by group privacy.

Two cohorts never train: the external-validation cohort and a new site with few labelled
notes. :meth:`ExtractionTask.write_evaluation_cohorts` carries them through partitioning and
:meth:`ExtractionTask.evaluation_settings` scores the three settings (in-domain per hospital,
external validation, new-site adaptation) in ``evaluate_models``. The primary metric is strict
entity F1 (higher is better).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from privfed.io import DataError, read_json
from privfed.tasks.base import TableCheck, Task
from privfed.tasks.extraction.layout import (
    NOTES_FILE,
    RAW_COHORTS,
    cohort_files,
    hospital_files,
    read_notes,
    read_user_folders,
    write_notes,
)

if TYPE_CHECKING:
    from privfed.tasks.extraction.dataset import ExtractionDataset
    from privfed.tasks.extraction.public import PublicEncoder
    from privfed.tasks.extraction.schema import Entity, Relation
    from privfed.tasks.extraction.settings import ExtractionModelSection

__all__ = ["ExtractionTask"]

log = logging.getLogger(__name__)

LAYOUT = (
    "<hospital>/<note>.txt + <note>.ann (BRAT standoff) [+ patients.csv]; "
    "external_validation/ and new_site/ are evaluation-only cohorts"
)
#: The model the new-site and external settings are about.
FEDERATED = "federated"


def _base(dataset: Dataset) -> tuple[ExtractionDataset, list[int]]:
    from privfed.tasks.extraction.dataset import ExtractionDataset

    if isinstance(dataset, Subset):
        base, rows = dataset.dataset, list(dataset.indices)
    else:
        base, rows = dataset, list(range(len(dataset)))
    if not isinstance(base, ExtractionDataset):
        raise TypeError(f"extraction needs an ExtractionDataset, got {type(base).__name__}")
    return base, rows


def _weights_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def per_example_loss(model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each note's mean token loss plus its mean relation-pair loss, ``[B]``."""
    ids, mask, tags, heads, tails, pair_labels = batch
    width = max(int(mask.sum(dim=1).max()), 1)  # drop all-padding columns: same loss
    ids, mask, tags = ids[:, :width], mask[:, :width], tags[:, :width]
    token_logits, pair_logits = model(ids, mask, heads, tails)
    token = F.cross_entropy(
        token_logits.transpose(1, 2).float(), tags, ignore_index=-100, reduction="none"
    )
    n_tokens = (tags != -100).sum(dim=1).clamp(min=1)
    pair = F.cross_entropy(
        pair_logits.transpose(1, 2).float(), pair_labels, ignore_index=-100, reduction="none"
    )
    n_pairs = (pair_labels != -100).sum(dim=1).clamp(min=1)
    return token.sum(dim=1) / n_tokens + pair.sum(dim=1) / n_pairs


class ExtractionTask(Task):
    name = "extraction"
    #: BERT, LoRA and the tokenizer the ClientApp builds its model and batches with
    runtime_imports = ("transformers.models.bert.modeling_bert", "peft", "tokenizers")
    primary_metric = "entity_f1_strict"
    higher_is_better = True
    privacy_unit = (
        "one note (a patient with several notes is protected by group privacy: "
        "k notes give k·ε, k·e^((k−1)ε)·δ)"
    )
    example_noun = "note"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        #: evaluate()'s scores by (model weights, dataset): the report's tables reuse the
        #: stage's; the dataset is held so its id cannot be reused by another one
        self._scores: dict[tuple[str, int, tuple[int, ...]], tuple[Dataset, dict]] = {}

    def _settings(self) -> ExtractionModelSection:
        return self.cfg.model.extraction

    def public(self) -> PublicEncoder:
        from privfed.tasks.extraction.public import load_public_encoder

        return load_public_encoder(self._settings())

    # -- data -------------------------------------------------------------------------------
    def generate(self, out_dir: Path) -> dict[str, Any]:
        from privfed.tasks.extraction.brat import write_brat_folder
        from privfed.tasks.extraction.generate import site_notes

        cfg = self.cfg
        g = cfg.generate_data.extraction
        sites = site_notes(
            cfg.base.hospitals,
            seed=cfg.base.seed,
            notes_per_hospital=g.notes_per_hospital,
            external_notes=g.external_notes,
            new_site_notes=g.new_site_notes,
        )
        for site, records in sites.items():
            write_brat_folder(records, Path(out_dir) / site)
        return {
            "task": self.name,
            "seed": cfg.base.seed,
            "hospitals": cfg.base.hospitals,
            "cohorts": [s for s in sites if s not in cfg.base.hospitals],
            "site_column": "hospital",  # sites are folders; the key keeps ingest's contract
            "layout": LAYOUT,
            "counts": {"notes": {s: len(r) for s, r in sites.items()}},
        }

    def ingest(self, source: Path, out_dir: Path, *, site_column: str) -> dict[str, Any]:
        """Read ``source/<site>/`` BRAT folders (spans checked against the text here: a span
        that does not fit its note stops ingest with the file and offset)."""
        hospitals, cohorts = read_user_folders(Path(source))
        for hospital, records in hospitals.items():
            write_notes(records, Path(out_dir) / hospital / NOTES_FILE)
        for cohort, records in cohorts.items():
            write_notes(records, Path(out_dir) / RAW_COHORTS / cohort / NOTES_FILE)
        return {
            "task": self.name,
            "hospitals": list(hospitals),
            "cohorts": list(cohorts),
            "layout": LAYOUT,
            "counts": {"notes": {s: len(r) for s, r in {**hospitals, **cohorts}.items()}},
        }

    def table_checks(self, raw_dir: Path) -> list[TableCheck]:
        from privfed.tasks.extraction import checks  # GX is slow to import; only here

        raw_dir = Path(raw_dir)
        files = hospital_files(raw_dir)
        manifest = raw_dir / "manifest.json"
        hospitals = read_json(manifest)["hospitals"] if manifest.is_file() else sorted(files)
        cohorts = cohort_files(raw_dir / RAW_COHORTS)
        return checks.table_checks(
            checks.note_table({h: read_notes(p) for h, p in files.items()}),
            checks.note_table({c: read_notes(p) for c, p in cohorts.items()}),
            hospitals=hospitals,
            min_notes=self.cfg.validate_data.min_patients_per_hospital,
        )

    def _records(self, raw_dir: Path) -> list[dict[str, Any]]:
        return [r for p in hospital_files(Path(raw_dir)).values() for r in read_notes(p)]

    def units(self, raw_dir: Path) -> pd.DataFrame:
        """Patients (``<hospital>/<patient_id>``); ``label`` is their notes' main specialty."""
        by_patient: dict[tuple[str, str], Counter[str]] = {}
        for r in self._records(raw_dir):
            key = (str(r["hospital"]), str(r["patient_id"]))
            by_patient.setdefault(key, Counter())[str(r.get("specialty", "unknown"))] += 1
        rows = [
            {"unit_id": f"{h}/{pid}", "hospital": h, "label": c.most_common(1)[0][0]}
            for (h, pid), c in by_patient.items()
        ]
        return pd.DataFrame(rows, columns=["unit_id", "hospital", "label"])

    def write_subset(self, raw_dir: Path, unit_ids: Sequence[str], out_dir: Path) -> None:
        wanted = set(map(str, unit_ids))
        records = [
            r for r in self._records(raw_dir) if f"{r['hospital']}/{r['patient_id']}" in wanted
        ]
        unknown = sorted(wanted - {f"{r['hospital']}/{r['patient_id']}" for r in records})
        if unknown:
            raise DataError(f"{raw_dir}: no notes for patient(s) {unknown[:5]}")
        write_notes(records, Path(out_dir) / NOTES_FILE)

    def write_evaluation_cohorts(self, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        """Copy the external-validation and new-site cohorts, whole, beside the partitions."""
        counts = {}
        for cohort, path in cohort_files(Path(raw_dir) / RAW_COHORTS).items():
            (Path(out_dir) / cohort).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(out_dir) / cohort / NOTES_FILE)
            counts[cohort] = {"n": len(read_notes(path))}
        return counts

    def examples_per_unit(self, split_dirs: Sequence[Path]) -> int:
        """The most notes one patient has under ``split_dirs`` (each note is an example)."""
        per_patient: Counter[tuple[str, str]] = Counter()
        for d in split_dirs:
            per_patient.update(
                (str(r["hospital"]), str(r["patient_id"])) for r in read_notes(Path(d) / NOTES_FILE)
            )
        if not per_patient:
            raise DataError(f"no notes in {[str(d) for d in split_dirs]}")
        return max(per_patient.values())

    def _dataset(self, records: list[dict[str, Any]]) -> ExtractionDataset:
        from privfed.tasks.extraction.dataset import ExtractionDataset, encode_notes

        public = self.public()
        encoded = encode_notes(
            public.tokenizer, records, max_pairs=self._settings().max_pairs, pad_id=public.pad_id
        )
        if encoded["dropped_pairs"]:
            log.warning(
                "%d candidate relation pairs beyond model.extraction.max_pairs=%d (or cut off "
                "with their note) are not trained on",
                encoded["dropped_pairs"],
                self._settings().max_pairs,
            )
        return ExtractionDataset(
            encoded["tensors"],
            records=records,
            offsets=encoded["offsets"],
            words=encoded["words"],
        )

    def load_dataset(self, split_dirs: Sequence[Path]) -> Dataset:
        if not split_dirs:
            raise ValueError("load_dataset needs at least one split directory")
        records = []
        for d in split_dirs:
            path = Path(d) / NOTES_FILE
            if not path.is_file():
                raise DataError(f"missing {path}")
            records += read_notes(path)
        if not records:
            raise DataError(f"no notes in {[str(d) for d in split_dirs]}")
        return self._dataset(records)

    # -- optimizer settings -----------------------------------------------------------------
    def train_batch_size(self) -> int:
        return self._settings().batch_size

    def train_lr(self) -> float:
        s = self._settings()
        return s.lora_lr if s.mode == "lora" else s.lr

    def baseline_epochs(self, epochs: int) -> int:
        return self._settings().baseline_epochs

    def dp_batch_size(self) -> int:
        return self._settings().dp_batch_size

    def dp_lr(self) -> float:
        return self._settings().dp_lr

    def dp_max_grad_norm(self) -> float:
        return self._settings().dp_max_grad_norm

    # -- model ------------------------------------------------------------------------------
    def build_model(self, statistics: Mapping[str, np.ndarray] | None = None) -> nn.Module:
        from privfed.tasks.extraction.model import build_model

        return build_model(self._settings(), self.public())

    def init_description(self) -> str:
        init = self.cfg.model.init
        if init not in ("public", "scratch"):
            return f"the user's checkpoint `{init}`"
        return (
            "the public BERT encoder (WordPiece tokenizer and masked-LM pretraining on the "
            "public corpus only, no hospital's notes) with fresh seeded heads"
            + (" and LoRA adapters" if self._settings().mode == "lora" else "")
        )

    def reference_models(self) -> dict[str, nn.Module]:
        """None: untrained heads extract nothing; the new-site setting trains the public
        encoder on the new site's notes alone instead (what pretraining alone gives)."""
        return {}

    def loss(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        ids = batch[0]
        if len(ids) == 0:
            # DP-SGD's Poisson sampling can draw an empty batch: a zero-weighted dummy note
            # keeps the step (Opacus still adds its noise) with zero gradient.
            dummy = [
                ids.new_zeros((1, 2)),
                ids.new_ones((1, 2)),
                ids.new_zeros((1, 2)),
                *(ids.new_zeros((1, 1)) for _ in range(3)),
            ]
            return per_example_loss(model, dummy).sum() * 0.0
        return per_example_loss(model, batch).mean()

    def example_losses(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> np.ndarray:
        """Each note's loss, a batch at a time (membership audit)."""
        was = model.training
        model.eval()
        out = []
        try:
            with torch.no_grad():
                for batch in DataLoader(dataset, batch_size=min(batch_size, 64)):
                    out.append(per_example_loss(model, batch).double().numpy())
        finally:
            model.train(was)
        return np.concatenate(out) if out else np.empty(0)

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 64
    ) -> list[tuple[list[Entity], list[Relation]]]:
        """Entities (BIO decoded to character spans) and relations on them, per note."""
        from privfed.tasks.extraction.dataset import candidate_pairs, decode_bio, pair_tensors
        from privfed.tasks.extraction.schema import RELATION_TYPES, Relation

        base, rows = _base(dataset)
        was = model.training
        model.eval()
        out: list[tuple[list[Entity], list[Relation]]] = []
        try:
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                ids, mask = base.tensors[0][chunk], base.tensors[1][chunk]
                hidden = model.encode(ids, mask)
                tags = model.token_head(hidden).argmax(dim=-1)
                found, pairs = [], []
                for k, row in enumerate(chunk):
                    length = int(mask[k].sum())
                    offsets = base.offsets[row][:length]
                    entities = decode_bio(tags[k, :length].tolist(), offsets, base.words[row])
                    cands = candidate_pairs(entities, str(base.records[row]["text"]))
                    h, t, _, kept = pair_tensors(cands, offsets, max_pairs=10_000)
                    found.append(entities)
                    pairs.append((h, t, kept))
                width = max((len(p[0]) for p in pairs), default=0)
                relations: list[list[Relation]] = [[] for _ in chunk]
                if width:
                    heads = torch.full((len(chunk), width), -100, dtype=torch.long)
                    tails = torch.full_like(heads, -100)
                    for k, (h, t, _) in enumerate(pairs):
                        heads[k, : len(h)] = torch.tensor(h, dtype=torch.long)
                        tails[k, : len(t)] = torch.tensor(t, dtype=torch.long)
                    labels = model.pair_logits(hidden, heads, tails).argmax(dim=-1)
                    for k, (_, _, kept) in enumerate(pairs):
                        for p, (concept, modifier) in enumerate(kept):
                            label = int(labels[k, p])
                            if label:
                                relations[k].append(
                                    Relation(RELATION_TYPES[label - 1], concept, modifier)
                                )
                out += list(zip(found, relations, strict=True))
        finally:
            model.train(was)
        return out

    def evaluate(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> dict[str, float]:
        """Strict and lenient entity F1 (overall, per type), relation F1 (per type), loss."""
        from privfed.tasks.extraction.dataset import gold
        from privfed.tasks.extraction.metrics import entity_scores, relation_scores

        base, rows = _base(dataset)
        key = (_weights_digest(model), id(base), tuple(rows))
        if key in self._scores:
            return dict(self._scores[key][1])
        truth = [gold(base.records[i]) for i in rows]
        predicted = self.predict(model, dataset)
        scores = entity_scores([t[0] for t in truth], [p[0] for p in predicted])
        scores |= relation_scores([t[1] for t in truth], [p[1] for p in predicted])
        scores["loss"] = float(np.mean(self.example_losses(model, dataset)))
        scores["n"] = len(rows)
        self._scores[key] = (base, scores)
        return dict(scores)

    # -- the three settings -----------------------------------------------------------------
    def _new_site_split(self, records: list[dict[str, Any]]) -> tuple[list, list]:
        """The new site's labelled notes (whole patients, seeded order, at most
        ``adapt_notes``) and the rest, its test set."""
        s = self._settings()
        patients = sorted({str(r["patient_id"]) for r in records})
        order = np.random.default_rng([self.cfg.base.seed, 0x5E]).permutation(len(patients))
        chosen: set[str] = set()
        count = Counter(str(r["patient_id"]) for r in records)
        used = 0
        for i in order:
            pid = patients[i]
            if used + count[pid] <= s.adapt_notes:
                chosen.add(pid)
                used += count[pid]
        train = [r for r in records if str(r["patient_id"]) in chosen]
        test = [r for r in records if str(r["patient_id"]) not in chosen]
        if not train or not test:
            raise DataError(
                f"new site: {len(records)} notes give {len(train)} labelled and {len(test)} test "
                f"notes with model.extraction.adapt_notes={s.adapt_notes}; it needs both"
            )
        return train, test

    def _adapt(self, model: nn.Module, records: list[dict[str, Any]], label: str) -> nn.Module:
        from privfed.training import FitPlan

        s = self._settings()
        plan = FitPlan(
            epochs=s.adapt_epochs,
            batch_size=self.train_batch_size(),
            lr=self.train_lr(),
            weight_decay=self.cfg.train.weight_decay,
            seed=self.cfg.base.seed,
            label=label,
        )
        self.fit(model, self._dataset(records), plan)
        return model

    def evaluation_settings(
        self, models: Mapping[str, nn.Module], cohorts_dir: Path, results: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """In-domain per hospital (from ``results``), external validation (every model on the
        cohort no hospital trained on) and new-site adaptation (the federated model fine-tuned
        on the new site's few labelled notes, vs the public encoder trained on them alone)."""
        metric = self.primary_metric
        cohorts = cohort_files(Path(cohorts_dir))
        out: dict[str, Any] = {"metric": metric, "in_domain": {}}
        for name, r in results.items():
            per = {h: float(m[metric]) for h, m in r["per_hospital"].items()}
            out["in_domain"][name] = {
                "per_hospital": per,
                "mean": float(np.mean(list(per.values()))),
            }
        from privfed.tasks.extraction.generate import EXTERNAL, NEW_SITE

        if EXTERNAL in cohorts:
            external = self._dataset(read_notes(cohorts[EXTERNAL]))
            out["external_validation"] = {
                name: self.evaluate(model, external) for name, model in models.items()
            }
        if NEW_SITE in cohorts and FEDERATED in models:
            train, test = self._new_site_split(read_notes(cohorts[NEW_SITE]))
            test_set = self._dataset(test)
            federated = models[FEDERATED]
            adapted = self._adapt(copy.deepcopy(federated), train, "new site: federated + local")
            torch.manual_seed(self.cfg.base.seed)
            alone = self._adapt(self.initial_model(), train, "new site: public encoder alone")
            in_domain = out["in_domain"][FEDERATED]["mean"]
            rows = {
                "federated (no adaptation)": self.evaluate(federated, test_set),
                "federated + new-site fine-tuning": self.evaluate(adapted, test_set),
                "public encoder + new-site training only": self.evaluate(alone, test_set),
            }
            out["new_site"] = {
                "labelled_notes": len(train),
                "test_notes": len(test),
                "epochs": self._settings().adapt_epochs,
                "federated_in_domain_mean": in_domain,
                "models": rows,
                "adapted_to_in_domain": rows["federated + new-site fine-tuning"][metric] / in_domain
                if in_domain
                else float("nan"),
            }
        out["summary"] = {
            **{f"external_{n}": m[metric] for n, m in out.get("external_validation", {}).items()},
            **(
                {
                    "new_site_adapted": out["new_site"]["models"][
                        "federated + new-site fine-tuning"
                    ][metric],
                    "new_site_alone": out["new_site"]["models"][
                        "public encoder + new-site training only"
                    ][metric],
                    "new_site_adapted_to_in_domain": out["new_site"]["adapted_to_in_domain"],
                }
                if "new_site" in out
                else {}
            ),
        }
        out["markdown"] = self._settings_markdown(out)
        return out

    def _settings_markdown(self, s: Mapping[str, Any]) -> str:
        metric = s["metric"]
        lines = ["## Evaluation settings (extraction)\n"]
        lines += [
            "### In-domain (each hospital's own test split)\n",
            f"| model | mean {metric} |",
            "|---|---|",
        ]
        lines += [f"| {n} | {v['mean']:.3f} |" for n, v in s["in_domain"].items()]
        cols = ("entity_f1_strict", "entity_f1_lenient", "relation_f1")
        if "external_validation" in s:
            lines += [
                "\n### External validation (a cohort no model trained on)\n",
                "| model | " + " | ".join(cols) + " |",
                "|---" * (len(cols) + 1) + "|",
            ]
            lines += [
                f"| {n} | " + " | ".join(f"{m[c]:.3f}" for c in cols) + " |"
                for n, m in s["external_validation"].items()
            ]
        if "new_site" in s:
            ns = s["new_site"]
            lines += [
                f"\n### New-site adaptation ({ns['labelled_notes']} labelled notes, "
                f"{ns['epochs']} epochs; scored on its other {ns['test_notes']} notes)\n",
                "| model | " + " | ".join(cols) + " |",
                "|---" * (len(cols) + 1) + "|",
            ]
            lines += [
                f"| {n} | " + " | ".join(f"{m[c]:.3f}" for c in cols) + " |"
                for n, m in ns["models"].items()
            ]
            lines.append(
                f"\nAdapted / federated in-domain mean {metric}: {ns['adapted_to_in_domain']:.3f}"
            )
        return "\n".join(lines) + "\n"

    # -- report -----------------------------------------------------------------------------
    def report_section(self, models: Mapping[str, nn.Module], dataset: Dataset) -> str:
        """Per-entity-type and per-relation-type F1 of every model, and a few notes as the
        federated model extracted them."""
        from privfed.tasks.extraction.schema import ENTITY_TYPES, RELATION_TYPES

        scores = {name: self.evaluate(model, dataset) for name, model in models.items()}
        names = list(scores)
        lines = [
            "## Per entity type (pooled test set; strict / lenient F1)\n",
            "| type | support | " + " | ".join(names) + " |",
            "|---" * (len(names) + 2) + "|",
        ]
        first = scores[names[0]]
        for kind in ENTITY_TYPES:
            cells = [
                f"{scores[n][f'entity_f1_strict_{kind}']:.3f} / "
                f"{scores[n][f'entity_f1_lenient_{kind}']:.3f}"
                for n in names
            ]
            lines.append(
                f"| {kind} | {int(first[f'support_{kind}'])} | " + " | ".join(cells) + " |"
            )
        lines += [
            "\n## Per relation type (pooled test set; F1 on predicted entities)\n",
            "| type | " + " | ".join(names) + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        for kind in RELATION_TYPES:
            lines.append(
                f"| {kind} | "
                + " | ".join(f"{scores[n][f'relation_f1_{kind}']:.3f}" for n in names)
                + " |"
            )
        shown = FEDERATED if FEDERATED in models else names[0]
        lines.append(f"\n## Extracted notes ({shown}, first {self._settings().report_notes})\n")
        lines.append(self.render_notes(models[shown], dataset, self._settings().report_notes))
        return "\n".join(lines) + "\n"

    def render_notes(self, model: nn.Module, dataset: Dataset, count: int) -> str:
        """Markdown: notes with predicted entities inline (``⟦text|TYPE⟧``) and relations."""
        from privfed.tasks.extraction.dataset import gold

        base, rows = _base(dataset)
        rows = rows[:count]
        predicted = self.predict(model, Subset(base, rows))
        blocks = []
        for row, (entities, relations) in zip(rows, predicted, strict=True):
            record = base.records[row]
            text = str(record["text"])
            marked, cursor = [], 0
            for e in sorted(entities):
                if e.start < cursor:
                    continue
                marked += [text[cursor : e.start], f"⟦{text[e.start : e.end]}|{e.type}⟧"]
                cursor = e.end
            marked.append(text[cursor:])
            true_entities, true_relations = gold(record)
            hit = len(set(entities) & set(true_entities))
            rel_hit = len(set(relations) & set(true_relations))
            rels = "; ".join(
                f"{text[r.head.start : r.head.end]} —{r.type}→ {text[r.tail.start : r.tail.end]}"
                for r in relations
            )
            blocks.append(
                f"**{record['note_id']}** ({record['hospital']}): {hit} of {len(true_entities)} "
                f"gold entities exact ({len(entities)} predicted), {rel_hit} of "
                f"{len(true_relations)} gold relations ({len(relations)} predicted)\n\n"
                "```\n" + "".join(marked) + "\n```\n\nRelations: " + (rels or "none") + "\n"
            )
        return "\n".join(blocks)
