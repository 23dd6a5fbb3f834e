"""The interface every task plug-in implements.

A task owns everything that depends on the kind of data: how to synthesize it, what valid data
looks like, how a hospital's rows become tensors, the model, the loss and the metrics. Stages,
the federation and the registry only ever talk to this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from privfed.config import PrivFedConfig
    from privfed.training import FitPlan, LocalResult

__all__ = ["PUBLIC_ONLY", "Task", "TableCheck"]

#: Name of the reference model trained on public data only, in reports and the registry.
PUBLIC_ONLY = "public_only"


@dataclass(frozen=True)
class TableCheck:
    """One table and the Great Expectations it must meet.

    ``expectations`` apply to the whole table; ``per_group`` expectations are checked once per
    value of ``group_column`` (e.g. a row-count range per hospital).
    """

    name: str
    frame: pd.DataFrame
    expectations: Sequence[Any]
    group_column: str | None = None
    per_group: Sequence[Any] = field(default_factory=tuple)


class Task(ABC):
    """A federated learning task (data, model, metrics)."""

    name: str
    #: Key of :meth:`evaluate`'s result that decides promotion and comparisons.
    primary_metric: str
    higher_is_better: bool = True
    #: True when :meth:`build_model` needs :meth:`local_statistics` (summed over hospitals).
    uses_statistics: bool = False
    #: What one example is, hence what DP-SGD's (ε, δ) protects (the model card says it).
    privacy_unit: str = "one patient (each patient is one training example)"
    #: One training example in words ("per note ε = …" in the model card).
    example_noun: str = "example"
    #: Modules the task imports lazily when a hospital loads its data or builds the model
    #: (MONAI's data package, a transformers architecture). A local federation's warm template
    #: imports them once for the run's task; otherwise every forked ClientApp task, one per
    #: round and hospital, imported them anew. Modules only: the template never holds data.
    runtime_imports: tuple[str, ...] = ()

    def __init__(self, cfg: PrivFedConfig) -> None:
        #: The run's config, bound once: every method reads its settings from here.
        self.cfg = cfg

    # -- data -------------------------------------------------------------------------------
    @abstractmethod
    def generate(self, out_dir: Path) -> dict[str, Any]:
        """Write synthetic data for ``cfg.base.hospitals`` in a layout :meth:`ingest` reads.

        The manifest names the ``site_column`` that says which hospital a row belongs to.
        """

    @abstractmethod
    def ingest(self, source: Path, out_dir: Path, *, site_column: str) -> dict[str, Any]:
        """Read per-hospital folders or site-column files at ``source``; write the raw layout.

        Returns the manifest, whose ``hospitals`` lists the hospitals found. Errors name the
        file, column and value at fault (:mod:`privfed.ingest` has the shared readers).
        """

    def site_column(self, configured: str | None) -> str:
        """The column naming each row's hospital in a user's one-file export.

        ``configured`` is ``ingest_data.site_column`` (None when unset); a task whose own
        settings record the column (the tabular schema) overrides this to read it there.
        """
        from privfed.ingest import DEFAULT_SITE_COLUMN

        return configured or DEFAULT_SITE_COLUMN

    @abstractmethod
    def table_checks(self, raw_dir: Path) -> list[TableCheck]:
        """Load the raw tables (raising a clear error if unreadable) with their expectations."""

    @abstractmethod
    def units(self, raw_dir: Path) -> pd.DataFrame:
        """One row per independent unit (patient): ``unit_id``, ``hospital``, ``label``."""

    @abstractmethod
    def write_subset(self, raw_dir: Path, unit_ids: Sequence[str], out_dir: Path) -> None:
        """Write the raw rows of ``unit_ids`` to ``out_dir`` in the raw layout."""

    @abstractmethod
    def load_dataset(self, split_dirs: Sequence[Path]) -> Dataset:
        """Tensors for the units stored in ``split_dirs`` (partition split folders)."""

    def write_evaluation_cohorts(self, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        """Write the cohorts no hospital trains on (e.g. an external-validation site) to
        ``out_dir``, which ``partition_data`` keeps beside the hospitals' folders.

        Returns what was written, per cohort (the partition stats record it); the default
        writes nothing. :meth:`evaluation_settings` reads them back.
        """
        return {}

    def evaluation_settings(
        self, models: Mapping[str, nn.Module], cohorts_dir: Path, results: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Evaluation settings beyond each hospital's test split, in ``evaluate_models``.

        ``models`` are the evaluated models by name, ``cohorts_dir`` what
        :meth:`write_evaluation_cohorts` wrote, ``results`` the stage's per-model results.
        Returns a JSON-able dict, or None (the default) for no further settings. The stage
        writes it to the report folder, appends its ``markdown`` key (if any) to the report and
        puts its ``summary`` key (flat headline numbers, if any) in the DVC metrics.
        """
        return None

    def examples_per_unit(self, split_dirs: Sequence[Path]) -> int | None:
        """The most training examples one patient contributes to the rows in ``split_dirs``.

        DP-SGD protects one example; a patient with k examples gets the group-privacy bound
        for k (:func:`privfed.privacy.group_privacy`), which ``account_privacy`` reports per
        hospital. None (the default) means the task's example is its patient, as
        :attr:`privacy_unit` states, so nothing is counted.
        """
        return None

    def local_statistics(self, split_dirs: Sequence[Path]) -> dict[str, np.ndarray] | None:
        """Additive statistics (counts, sums) of these rows that :meth:`build_model` needs.

        None (the default) means the model needs none. The federation sums each hospital's
        arrays elementwise, so the statistics must be additive for that sum to equal the
        pooled data's.
        """
        return None

    def train_batch_size(self) -> int:
        """Examples per training step (and per DP-SGD expected batch): ``train.batch_size``.

        Tasks whose examples are large (3-D volumes) override it with a key of their own
        section, so the shared ``train.batch_size`` stays what tabular tasks need.
        """
        return self.cfg.train.batch_size

    def baseline_epochs(self, epochs: int) -> int:
        """Epochs of the centralized and local-only baselines; ``epochs`` is the stage's own.

        A task whose baselines need another budget than the tabular tasks' shared default
        (e.g. the federated run's rounds x local epochs) overrides it with a key of its own.
        """
        return epochs

    def train_lr(self) -> float:
        """Adam's step size for every training pass: ``train.lr`` unless the task overrides it.

        A task that fine-tunes a pretrained model (notes) wants a smaller step than tabular
        models trained from scratch, from a key of its own section.
        """
        return self.cfg.train.lr

    def dp_batch_size(self) -> int:
        """DP-SGD's expected batch when ``privacy.batch_size`` is null: the task's own choice.

        DP wants larger batches than plain training (the noise is added once per step, so its
        share of the mean gradient falls as the batch grows). The default is
        :meth:`train_batch_size`; a task overrides it with a key of its own section.
        """
        return self.train_batch_size()

    def dp_lr(self) -> float:
        """DP-SGD's step size when ``privacy.lr`` is null (default :meth:`train_lr`)."""
        return self.train_lr()

    def dp_max_grad_norm(self) -> float:
        """DP-SGD's per-example clipping bound when ``privacy.max_grad_norm`` is null (1.0)."""
        return 1.0

    def dp_trainable(self) -> tuple[str, ...] | None:
        """What DP-SGD trains when ``privacy.trainable`` is null: module names or patterns
        (None: every parameter). Fine-tuning a part of a public model spends ε on fewer values.
        """
        return None

    # -- training ---------------------------------------------------------------------------
    def fit(self, model: nn.Module, dataset: Dataset, plan: FitPlan) -> LocalResult:
        """Train ``model`` in place as ``plan`` says; report the loss and the DP steps taken.

        The default is :func:`privfed.training.train_local_pass`: one Adam over :meth:`loss`.
        A task that needs more (a GAN's alternating generator and discriminator steps, two
        learning rates) overrides it. With ``plan.dp`` set, every step that reads ``dataset``
        must go through :func:`privfed.training.private_training`, and the result's
        ``history`` must extend ``plan.dp.history`` by exactly those steps: ε is accounted
        from it.
        """
        from privfed.training import train_local_pass

        return train_local_pass(self, model, dataset, **plan.as_kwargs())

    def dp_steps_per_epoch(self, num_examples: int, batch_size: int) -> int:
        """DP-SGD steps :meth:`fit` takes on private data per epoch (noise is calibrated for it).

        The default, one step per expected batch, is what the default :meth:`fit` takes; a
        task whose fit takes several private steps per batch overrides both together.
        """
        from privfed.training import steps_per_epoch

        return steps_per_epoch(num_examples, batch_size)

    # -- model ------------------------------------------------------------------------------
    @abstractmethod
    def build_model(self, statistics: Mapping[str, np.ndarray] | None = None) -> nn.Module:
        """A fresh, Opacus-compatible model (given :meth:`local_statistics`, summed, if any)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean loss of ``model`` on one batch from :meth:`load_dataset`'s dataset."""

    @abstractmethod
    def evaluate(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> dict[str, float]:
        """Metrics of ``model`` on ``dataset``; must contain :attr:`primary_metric`."""

    def selection_score(self, model: nn.Module, val: Dataset) -> float:
        """The primary metric on ``val`` that picks the epoch a baseline keeps (after every
        epoch: :mod:`privfed.selection`). A task whose :meth:`evaluate` does costly extra work
        (text generation) overrides it with just the primary metric."""
        return float(self.evaluate(model, val)[self.primary_metric])

    def example_losses(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> np.ndarray:
        """The loss of each example of ``dataset``, in order (for membership-inference audits).

        The default calls :meth:`loss` on one-example batches: slow but right for every task,
        because :meth:`loss` returns a batch mean. ``batch_size`` is for overrides that compute
        ``reduction="none"`` losses a batch at a time. The model is scored in eval mode (no
        dropout) and left in the mode it came in.
        """
        import numpy as np
        import torch
        from torch.utils.data import DataLoader

        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        losses = np.empty(len(dataset), dtype=np.float64)
        try:
            with torch.no_grad():
                for i, batch in enumerate(DataLoader(dataset, batch_size=1)):
                    losses[i] = float(self.loss(model, [t.to(device) for t in batch]))
        finally:
            model.train(was_training)
        return losses

    def confusion_matrix(
        self, model: nn.Module, dataset: Dataset, *, batch_size: int = 256
    ) -> dict[str, Any] | None:
        """``{"labels": [...], "matrix": [[...]]}`` for classification tasks; None otherwise."""
        return None

    def report_figures(
        self, model: nn.Module, dataset: Dataset, out_dir: Path, *, label: str = ""
    ) -> list[Path]:
        """Write the task's own figures of ``model`` on ``dataset`` (PNG) under ``out_dir``.

        What a reader needs to see besides the metric tables (e.g. segmentation overlays).
        Returns the files written; the default writes none.
        """
        return []

    def reference_models(self) -> dict[str, nn.Module]:
        """Models built without any hospital's data that the report compares against.

        A task that starts from a shared public model returns it, so nobody mistakes
        pretraining for learning from the hospitals. The default returns the
        :meth:`initial_model` as ``public_only`` when ``model.init`` gives one, else none.
        """
        state = self.init_state()
        if state is None:
            return {}
        return {PUBLIC_ONLY: self._with_init(self.build_model(), state)}

    # -- public knowledge -------------------------------------------------------------------
    def public_state(self) -> dict[str, torch.Tensor] | None:
        """Weights of :meth:`build_model`'s model pretrained on public data only (cached).

        None (the default) means the task has no public corpus: ``model.init: public`` then
        starts from scratch.
        """
        return None

    @property
    def has_public_model(self) -> bool:
        """Whether the task overrides :meth:`public_state` (asks nothing to be built)."""
        return type(self).public_state is not Task.public_state

    def init_state(self) -> dict[str, torch.Tensor] | None:
        """The weights every training run starts from, as ``model.init`` names them.

        ``scratch``: none (a seeded fresh model). ``public``: :meth:`public_state`. Anything
        else is a local file written by ``torch.save(model.state_dict(), path)``: a public
        checkpoint of the user's own (nothing downloads).
        """
        import torch

        init = self.cfg.model.init
        if init == "scratch":
            return None
        if init == "public":
            return self.public_state()
        path = Path(init)
        if not path.is_file():
            raise FileNotFoundError(
                f"model.init={init!r}: no such file; expected 'scratch', 'public' or a local "
                "state-dict file written by torch.save(model.state_dict(), path)"
            )
        return torch.load(path, map_location="cpu", weights_only=True)

    def initial_model(self, statistics: Mapping[str, np.ndarray] | None = None) -> nn.Module:
        """:meth:`build_model`, loaded with :meth:`init_state` where there is one.

        Every run that trains (centralized, local-only, the federation's first global model)
        starts here, so all of them start from the same public knowledge.
        """
        state = self.init_state()
        model = self.build_model(statistics)
        return model if state is None else self._with_init(model, state)

    def _with_init(self, model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """``model`` loaded with ``state``; a state that does not fit names ``model.init``."""
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"model.init={self.cfg.model.init!r} does not fit task {self.name!r}'s model: {err}"
            ) from err
        return model

    def released_model(self, model: nn.Module) -> nn.Module:
        """The part of a trained model that is registered and served (default: all of it).

        A GAN's discriminator is a training device that saw real images: only the generator
        is released (:class:`~privfed.tasks.retina.task.RetinaTask`).
        """
        return model

    def init_description(self) -> str:
        """Where training starts, in words (the model card), without building anything."""
        init = self.cfg.model.init
        if init == "scratch":
            return "a fresh seeded model"
        if init == "public":
            return (
                "the task's public model (pretrained on public data only, no hospital's records)"
                if self.has_public_model
                else "a fresh seeded model (the task has no public model)"
            )
        return f"the user's checkpoint `{init}`"

    def report_section(self, models: Mapping[str, nn.Module], dataset: Dataset) -> str:
        """Markdown the task adds to the comparison report about every model (e.g. samples).

        ``models`` maps each evaluated model's name to it; ``dataset`` is the pooled test set.
        The default adds nothing.
        """
        return ""
