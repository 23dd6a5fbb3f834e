"""Task ``notes``: federated clinical note generation with a small GPT-2.

Data are JSONL notes per hospital (discharge summaries, progress notes, radiology reports);
the units that partitioning deals out are patients, so one patient's notes stay in one split.
The model is a GPT-2 on a byte-level BPE tokenizer, both from the public corpus
(:mod:`privfed.tasks.notes.public`); hospitals fine-tune it fully (``model.notes.mode: full``)
or train LoRA adapters only (``lora``). One note is one training example and one DP-SGD unit.
The primary metric is perplexity (lower is better); BLEU and ROUGE-L score greedy
continuations of held-out note prefixes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from privfed.io import DataError, read_json
from privfed.tasks.base import TableCheck, Task
from privfed.tasks.notes.layout import (
    NOTES_FILE,
    hospital_note_files,
    read_notes,
    read_user_notes,
    write_notes,
)

if TYPE_CHECKING:
    from privfed.tasks.notes.dataset import NotesDataset
    from privfed.tasks.notes.public import PublicAssets
    from privfed.tasks.notes.settings import NotesModelSection

__all__ = ["NotesTask"]

LAYOUT = "<hospital>/notes.jsonl (note_id, patient_id, hospital, note_type, specialty, text)"
#: Report name of the public base, evaluated before any hospital's notes reach it.
PUBLIC_BASE = "public base (no fine-tuning)"
#: Sample generations per model in the evaluation report.
REPORT_SAMPLES = 5


class NotesTask(Task):
    name = "notes"
    #: GPT-2, LoRA and the metrics the ClientApp builds and scores with (3-4 s per forked
    #: task and round in the tiny federation before the template imported them)
    runtime_imports = (
        "transformers.models.gpt2.modeling_gpt2",
        "peft",
        "tokenizers",
        "sacrebleu",
        "rouge_score.rouge_scorer",
    )
    primary_metric = "perplexity"
    higher_is_better = False
    privacy_unit = (
        "one note (a patient with several notes is protected by group privacy: "
        "k notes give k·ε, k·e^((k−1)ε)·δ)"
    )
    example_noun = "note"

    def _settings(self) -> NotesModelSection:
        """``model.notes``."""
        return self.cfg.model.notes

    def assets(self) -> PublicAssets:
        """The shared tokenizer and base (built once per machine from the public corpus)."""
        from privfed.tasks.notes.public import load_public_assets

        return load_public_assets(self._settings())

    # -- data -------------------------------------------------------------------------------
    def generate(self, out_dir: Path) -> dict[str, Any]:
        cfg = self.cfg
        from privfed.tasks.notes.generate import generate_hospitals

        written = generate_hospitals(
            cfg.base.hospitals,
            Path(out_dir),
            seed=cfg.base.seed,
            notes_per_hospital=cfg.generate_data.notes.notes_per_hospital,
        )
        return {
            "task": self.name,
            "seed": cfg.base.seed,
            "hospitals": cfg.base.hospitals,
            "site_column": "hospital",  # hospitals are folders; ingest's contract for every task
            "layout": LAYOUT,
            **written,
        }

    def ingest(self, source: Path, out_dir: Path, *, site_column: str) -> dict[str, Any]:
        """Read ``source/<hospital>/`` folders of ``.txt`` / ``.jsonl`` notes (no site column).

        What the notes hold (length, type, PHI) is validation's to check, so a bad note reaches
        the report with its id instead of stopping here.
        """
        by_hospital = read_user_notes(Path(source))
        for hospital, records in by_hospital.items():
            write_notes(records, Path(out_dir) / hospital / NOTES_FILE)
        return {
            "task": self.name,
            "hospitals": list(by_hospital),
            "layout": LAYOUT,
            "counts": {"notes": {h: len(r) for h, r in by_hospital.items()}},
        }

    def table_checks(self, raw_dir: Path) -> list[TableCheck]:
        cfg = self.cfg
        from privfed.tasks.notes import checks  # GX is slow to import; only here

        manifest_path = Path(raw_dir) / "manifest.json"
        files = hospital_note_files(Path(raw_dir))
        hospitals = (
            read_json(manifest_path)["hospitals"] if manifest_path.is_file() else sorted(files)
        )
        g = cfg.generate_data.notes
        table = checks.note_table(
            {h: read_notes(p) for h, p in files.items()},
            min_words=g.min_words,
            max_words=g.max_words,
        )
        return checks.table_checks(
            table, hospitals=hospitals, min_notes=cfg.validate_data.min_patients_per_hospital
        )

    def _records(self, raw_dir: Path) -> list[dict[str, Any]]:
        return [r for p in hospital_note_files(Path(raw_dir)).values() for r in read_notes(p)]

    def units(self, raw_dir: Path) -> pd.DataFrame:
        """Patients; ``label`` is the specialty of most of their notes (stratifies splits)."""
        by_patient: dict[tuple[str, str], Counter[str]] = {}
        for r in self._records(raw_dir):
            key = (str(r["hospital"]), str(r["patient_id"]))
            by_patient.setdefault(key, Counter())[str(r.get("specialty", "unknown"))] += 1
        rows = [
            {"unit_id": pid, "hospital": h, "label": c.most_common(1)[0][0]}
            for (h, pid), c in by_patient.items()
        ]
        return pd.DataFrame(rows, columns=["unit_id", "hospital", "label"])

    def write_subset(self, raw_dir: Path, unit_ids: Sequence[str], out_dir: Path) -> None:
        wanted = set(map(str, unit_ids))
        records = [r for r in self._records(raw_dir) if str(r["patient_id"]) in wanted]
        unknown = sorted(wanted - {str(r["patient_id"]) for r in records})
        if unknown:
            raise DataError(f"{raw_dir}: no notes for patient id(s) {unknown[:5]}")
        write_notes(records, Path(out_dir) / NOTES_FILE)

    def examples_per_unit(self, split_dirs: Sequence[Path]) -> int:
        """The most notes one ``patient_id`` has under ``split_dirs`` (each note is an example).

        Raises:
            DataError: a split has no notes file, or the splits hold no note at all.
        """
        per_patient: Counter[str] = Counter()
        for d in split_dirs:
            per_patient.update(str(r["patient_id"]) for r in read_notes(Path(d) / NOTES_FILE))
        if not per_patient:
            raise DataError(f"no notes in {[str(d) for d in split_dirs]}")
        return max(per_patient.values())

    def load_dataset(self, split_dirs: Sequence[Path]) -> Dataset:
        """Every note under ``split_dirs`` as tokens (cut to ``max_length``), in file order."""
        from privfed.tasks.notes.dataset import NotesDataset, encode_notes

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
        settings, assets = self._settings(), self.assets()
        ids = encode_notes(
            assets.tokenizer,
            [str(r["text"]) for r in records],
            max_length=settings.max_length,
            eos_id=assets.eos_id,
        )
        return NotesDataset(
            ids,
            pad_id=assets.pad_id,
            note_ids=[str(r["note_id"]) for r in records],
            hospitals=[str(r["hospital"]) for r in records],
            width=settings.max_length,
        )

    def train_batch_size(self) -> int:
        """``model.notes.batch_size``: notes per step, not ``train.batch_size``."""
        return self._settings().batch_size

    def train_lr(self) -> float:
        """``model.notes.lr`` (full) or ``lora_lr``: fresh adapters want a larger step than a
        pretrained base, which a large step pulls away from what it learned."""
        settings = self._settings()
        return settings.lora_lr if settings.mode == "lora" else settings.lr

    def dp_batch_size(self) -> int:
        return self._settings().dp_batch_size

    def dp_lr(self) -> float:
        return self._settings().dp_lr

    def dp_max_grad_norm(self) -> float:
        """A next-token loss's per-note gradient on rank-4 adapters is small: a bound of 1
        clipped nothing and let the noise drown it (docs/privacy.md)."""
        return self._settings().dp_max_grad_norm

    # -- model ------------------------------------------------------------------------------
    def build_model(self, statistics: Mapping[str, np.ndarray] | None = None) -> nn.Module:
        from privfed.tasks.notes.model import build_notes_model

        return build_notes_model(self._settings(), self.assets())

    def init_description(self) -> str:
        """Notes always start from a base, never from ``model.init``: the user's
        ``model.notes.checkpoint``, else the public GPT-2 base."""
        checkpoint = self._settings().checkpoint
        if checkpoint:
            return f"the user's GPT-2 checkpoint `{checkpoint}` (model.notes.checkpoint)"
        return (
            "the public GPT-2 base (tokenizer and weights trained on the public note corpus "
            "only, no hospital's notes)"
        )

    def reference_models(self) -> dict[str, nn.Module]:
        """The shared public base before any fine-tuning: what the hospitals' notes add to it."""
        return {PUBLIC_BASE: self.build_model()}

    def loss(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean over the batch of each note's mean next-token loss."""
        from privfed.tasks.notes.dataset import per_example_lm_loss

        input_ids, mask = batch
        if len(input_ids) == 0:
            # DP-SGD's Poisson sampling can draw an empty batch: a zero-weighted one-token
            # example keeps the step (Opacus still adds its noise) with zero gradient.
            input_ids = input_ids.new_zeros((1, 2))
            mask = mask.new_ones((1, 2))
            return per_example_lm_loss(model(input_ids, mask), input_ids, mask).sum() * 0.0
        width = int(mask.sum(dim=1).max())  # drop all-padding columns: same loss, less work
        input_ids, mask = input_ids[:, :width], mask[:, :width]
        return per_example_lm_loss(model(input_ids, mask), input_ids, mask).mean()

    def example_losses(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> np.ndarray:
        """Each note's mean token loss, a batch at a time (membership audit)."""
        from torch.utils.data import DataLoader

        from privfed.tasks.notes.dataset import per_example_lm_loss

        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out: list[np.ndarray] = []
        try:
            with torch.no_grad():
                for input_ids, mask in DataLoader(dataset, batch_size=min(batch_size, 64)):
                    input_ids, mask = input_ids.to(device), mask.to(device)
                    losses = per_example_lm_loss(model(input_ids, mask), input_ids, mask)
                    out.append(losses.double().cpu().numpy())
        finally:
            model.train(was_training)
        return np.concatenate(out) if out else np.empty(0)

    def _continuations(self, model: nn.Module, dataset: NotesDataset) -> list[Any]:
        from privfed.tasks.notes.metrics import continuations

        settings, assets = self._settings(), self.assets()
        return continuations(
            model,
            dataset,
            assets.tokenizer,
            prefix_tokens=settings.prefix_tokens,
            continuation_tokens=settings.continuation_tokens,
            max_notes=settings.generation_notes,
            eos_id=assets.eos_id,
        )

    def evaluate(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> dict[str, float]:
        """Loss, perplexity, and BLEU / ROUGE-L of greedy continuations of note prefixes."""
        from privfed.tasks.notes.metrics import lm_scores, text_scores

        was_training = model.training
        model.eval()
        try:
            scores = lm_scores(model, dataset, batch_size=min(batch_size, 64))
            scores |= text_scores(self._continuations(model, dataset))
        finally:
            model.train(was_training)
        scores["n"] = len(dataset)
        return scores

    def selection_score(self, model: nn.Module, val: Dataset) -> float:
        """Perplexity alone: the greedy continuations :meth:`evaluate` adds are not needed to
        pick an epoch, and cost more than the epoch's training on the default profile."""
        from privfed.tasks.notes.metrics import lm_scores

        was_training = model.training
        model.eval()
        try:
            return float(lm_scores(model, val, batch_size=64)["perplexity"])
        finally:
            model.train(was_training)

    def report_section(self, models: Mapping[str, nn.Module], dataset: Dataset) -> str:
        """Markdown: :data:`REPORT_SAMPLES` greedy continuations of each model, to read."""
        lines = ["## Sample generations (greedy, pooled test set)\n"]
        for name, model in models.items():
            was_training = model.training
            model.eval()
            try:
                items = self._continuations(model, dataset)[:REPORT_SAMPLES]
            finally:
                model.train(was_training)
            lines.append(f"### {name}\n")
            for c in items:
                lines += [
                    f"- **{c.note_id}** ({c.hospital})",
                    f"  - prompt: `{_inline(c.prompt)}`",
                    f"  - true continuation: `{_inline(c.reference)}`",
                    f"  - generated: `{_inline(c.generated)}`",
                ]
            lines.append("")
        return "\n".join(lines) + "\n"


def _inline(text: str) -> str:
    return " ".join(text.split()).replace("`", "'")
