"""Typed, validated view of ``params.yaml``.

``params.yaml`` is the only place values are written. It has a ``base`` section, one section per
stage (plus the shared ``model``/``train``/``privacy`` sections) and ``profiles``: overlays that
replace individual keys when ``base.profile`` names them. Validation errors name the bad key and
value so a user can fix the file without reading code.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ConfigError",
    "PrivFedConfig",
    "load_config",
    "config_from_dict",
    "resolved_config",
    "STAGES",
]

STAGES = (
    "generate_data",
    "ingest_data",
    "validate_data",
    "partition_data",
    "train_centralized",
    "train_local",
    "train_federated",
    "account_privacy",
    "evaluate_models",
    "register_model",
)


class ConfigError(ValueError):
    """A params.yaml value is missing, of the wrong type or out of range."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseSection(_Section):
    task: str = "readmission"
    profile: Literal["tiny", "default", "full"] = "default"
    seed: int = 42
    num_hospitals: int = Field(3, ge=2, le=64)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data_source: Literal["synthetic", "directory"] = "synthetic"

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from privfed.tasks import available_tasks

        if value not in available_tasks():
            raise ValueError(f"unknown task {value!r}; available: {sorted(available_tasks())}")
        return value

    @property
    def hospitals(self) -> list[str]:
        """Synthetic hospital names, ``hospital_1`` … ``hospital_N``.

        With ``data_source: directory`` the hospitals are the user's folders or site values;
        stages read them from the ingested data, never from here.
        """
        return [f"hospital_{i + 1}" for i in range(self.num_hospitals)]


class SegmentationDataSection(_Section):
    """Synthetic brain MRI of task ``segmentation`` (see :mod:`privfed.tasks.segmentation`).

    Every hospital images the same physical field of view, ``volume_size * spacing_mm`` mm per
    side; a hospital with a coarser scanner stores fewer, larger voxels.
    """

    cases_per_hospital: int = Field(24, ge=3, le=2000)
    volume_size: int = Field(48, ge=16, le=256, description="voxels per side at spacing_mm")
    spacing_mm: float = Field(4.0, gt=0.0, le=10.0, description="reference voxel edge (mm)")


class NotesDataSection(_Section):
    """Synthetic clinical notes of task ``notes`` (see :mod:`privfed.tasks.notes`)."""

    notes_per_hospital: int = Field(400, ge=10, le=1_000_000)
    min_words: int = Field(20, ge=1, description="validation: shorter notes fail")
    max_words: int = Field(600, ge=2, description="validation: longer notes fail")

    @model_validator(mode="after")
    def _words_ordered(self) -> NotesDataSection:
        if self.min_words >= self.max_words:
            raise ValueError(f"min_words={self.min_words} must be below max_words={self.max_words}")
        return self


class GenerateDataSection(_Section):
    patients_per_hospital: int = Field(400, ge=10)
    min_months: int = Field(6, ge=1, le=24)
    max_months: int = Field(12, ge=1, le=24)
    n_genes: int = Field(64, ge=10, le=200)
    label_noise: float = Field(0.35, ge=0.0)
    segmentation: SegmentationDataSection = SegmentationDataSection()
    notes: NotesDataSection = NotesDataSection()

    @model_validator(mode="after")
    def _months_ordered(self) -> GenerateDataSection:
        if self.min_months > self.max_months:
            raise ValueError(
                f"min_months={self.min_months} is larger than max_months={self.max_months}"
            )
        return self


class IngestDataSection(_Section):
    """Where a user's own data is (``base.data_source: directory``) and how to read it.

    ``schema`` (tabular task) is a path to the user's schema YAML when written in params.yaml;
    loading resolves it to the schema's contents, so the resolved config that travels to
    Kubeflow pods and Flower apps carries the schema itself, not a path they cannot open.
    """

    path: str = "data/external"
    site_column: str = "site"
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    min_rows_per_site: int = Field(20, ge=2)

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True
    )

    @field_validator("schema_", mode="before")
    @classmethod
    def _read_schema_file(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            return read_schema_file(Path(value))
        return value

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        from privfed.tasks.tabular.schema import TabularSchema

        return TabularSchema.parse(value).model_dump(mode="json")


def read_schema_file(path: Path) -> dict[str, Any]:
    """The mapping in a schema YAML file; errors name the file."""
    if not path.is_file():
        raise ValueError(
            f"schema file not found: {str(path)!r} (write one with `privfed schema infer`)"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"schema file {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"schema file {str(path)!r} must hold a mapping")
    return data


class ValidateDataSection(_Section):
    min_patients_per_hospital: int = Field(20, ge=1)
    max_patients_per_hospital: int = Field(100_000, ge=1)
    min_cases_per_hospital: int = Field(6, ge=3, description="imaging tasks: cases per hospital")


class PartitionDataSection(_Section):
    scheme: Literal["origin", "dirichlet"] = "origin"
    dirichlet_alpha: float = Field(0.5, gt=0.0)
    quantity_skew: float = Field(0.0, ge=0.0, description="lognormal sigma of hospital sizes")
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)


class SegmentationModelSection(_Section):
    """MONAI UNet and the preprocessing grid of task ``segmentation``.

    Volumes are resampled to ``spacing_mm``, cropped to the head and padded or cropped to
    ``grid`` voxels per side; training takes random ``roi_size`` crops and inference slides a
    ``roi_size`` window. Both sizes must be multiples of 2**(len(channels) - 1), the UNet's
    total downsampling.
    """

    channels: tuple[int, ...] = Field((16, 32, 64, 128), min_length=2, max_length=6)
    num_res_units: int = Field(1, ge=0, le=4)
    norm: Literal["instance", "group"] = "instance"
    spacing_mm: float = Field(4.0, gt=0.0, le=10.0)
    grid: int = Field(48, ge=8, le=512)
    roi_size: int = Field(48, ge=8, le=512)
    sw_overlap: float = Field(0.25, ge=0.0, lt=1.0)
    augment: bool = Field(True, description="random flips and intensity shifts on train splits")
    batch_size: int = Field(
        2, ge=1, le=64, description="volumes per training step (replaces train.batch_size)"
    )
    baseline_epochs: int = Field(
        16,
        ge=1,
        le=1000,
        description="centralized and local-only epochs (replaces train_centralized/train_local"
        ".epochs)",
    )

    @model_validator(mode="after")
    def _sizes_fit(self) -> SegmentationModelSection:
        step = 2 ** (len(self.channels) - 1)
        for key in ("grid", "roi_size"):
            value = getattr(self, key)
            if value % step:
                raise ValueError(
                    f"{key}={value} must be a multiple of {step} (2**(len(channels) - 1) for "
                    f"channels={list(self.channels)})"
                )
        if self.roi_size > self.grid:
            raise ValueError(f"roi_size={self.roi_size} is larger than grid={self.grid}")
        if self.norm == "group" and any(c % 4 for c in self.channels):
            raise ValueError(
                f"norm='group' uses 4 groups: channels must be multiples of 4, got "
                f"{list(self.channels)}"
            )
        return self


class TabularModelSection(_Section):
    """Task ``tabular``: DP-SGD settings for a consortium's own table (its MLP uses
    ``model.hidden`` and ``model.dropout``)."""

    dp_batch_size: int = Field(32, ge=1, description="DP-SGD expected batch")
    dp_lr: float = Field(0.05, gt=0.0, description="DP-SGD step size")
    dp_max_grad_norm: float = Field(0.3, gt=0.0, description="DP-SGD clipping bound")


class NotesModelSection(_Section):
    """GPT-2 of task ``notes``, its byte-level BPE tokenizer, and how hospitals fine-tune it.

    Without ``checkpoint``, the tokenizer and the frozen base come from the public corpus
    (shared by every hospital, never a hospital's notes): ``vocab_size`` BPE tokens, and a GPT-2
    of ``n_layer`` x ``n_embd`` pretrained on it for ``pretrain_epochs``. ``mode: full`` trains
    and sends every weight; ``lora`` trains and sends only LoRA adapters (rank ``lora_rank``)
    on the attention projections, the base staying identical at every hospital.
    """

    mode: Literal["full", "lora"] = "lora"
    checkpoint: str | None = Field(
        None, description="local folder with a GPT-2 (config.json, weights, tokenizer.json)"
    )
    vocab_size: int = Field(2000, ge=300, le=65536)
    public_notes: int = Field(2000, ge=50, description="public corpus size (notes)")
    n_layer: int = Field(2, ge=1, le=48)
    n_embd: int = Field(96, ge=16, le=4096)
    n_head: int = Field(4, ge=1, le=64)
    max_length: int = Field(192, ge=16, le=2048, description="tokens per training window")
    pretrain_epochs: int = Field(6, ge=0, le=100)
    pretrain_lr: float = Field(3e-3, gt=0.0)
    lora_rank: int = Field(4, ge=1, le=256)
    lora_alpha: float = Field(8.0, gt=0.0)
    lora_freeze_a: bool = Field(
        False, description="FFA-LoRA: A stays at its shared init; only B trains and travels"
    )
    lr: float = Field(1e-4, gt=0.0, description="full: fine-tuning step (replaces train.lr)")
    lora_lr: float = Field(3e-3, gt=0.0, description="lora: the adapters' step (replaces train.lr)")
    batch_size: int = Field(16, ge=1, le=1024, description="notes per step (not train.batch_size)")
    dp_batch_size: int = Field(128, ge=1, le=4096, description="DP-SGD notes per step")
    dp_lr: float = Field(0.01, gt=0.0, description="DP-SGD step size (either mode)")
    dp_max_grad_norm: float = Field(0.05, gt=0.0, description="DP-SGD clipping bound")
    prefix_tokens: int = Field(32, ge=4, description="eval: prompt tokens")
    continuation_tokens: int = Field(32, ge=4, description="eval: tokens generated")
    generation_notes: int = Field(48, ge=1, description="eval: notes per split for BLEU/ROUGE-L")

    @model_validator(mode="after")
    def _heads_divide(self) -> NotesModelSection:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")
        if self.prefix_tokens + self.continuation_tokens > self.max_length:
            raise ValueError(
                f"prefix_tokens + continuation_tokens = "
                f"{self.prefix_tokens + self.continuation_tokens} exceeds "
                f"max_length={self.max_length}"
            )
        return self


class ModelSection(_Section):
    seq_days: int = Field(60, ge=7)
    seq_weeks: int = Field(12, ge=2)
    hidden: int = Field(32, ge=4)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    init: str = Field(
        "public",
        min_length=1,
        description="scratch | public (the task's public model, where it has one) | a "
        "state-dict file",
    )
    public_patients: int = Field(2000, ge=50, le=1_000_000, description="public registry size")
    public_epochs: int = Field(12, ge=1, le=500, description="public pretraining epochs")
    dp_batch_size: int = Field(192, ge=1, description="readmission: DP-SGD expected batch")
    dp_lr: float = Field(0.02, gt=0.0, description="readmission: DP-SGD step size")
    dp_max_grad_norm: float = Field(3.0, gt=0.0, description="readmission: DP clipping bound")
    segmentation: SegmentationModelSection = SegmentationModelSection()
    notes: NotesModelSection = NotesModelSection()
    tabular: TabularModelSection = TabularModelSection()


class TrainSection(_Section):
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)


class TrainCentralizedSection(_Section):
    epochs: int = Field(15, ge=1)


class TrainLocalSection(_Section):
    epochs: int = Field(15, ge=1)


#: Flower's SecAgg+ mask modulus (``SecAggPlusWorkflow(modulus_range=...)``, its default).
SECAGG_MODULUS = 2**32
#: Strategies that need only the sum of the hospitals' updates, so SecAgg+ can serve them.
SECAGG_STRATEGIES = ("fedavg", "fedprox")


class SecureAggregationSection(_Section):
    """Flower's SecAgg+: the server learns only the sum of the hospitals' weighted updates.

    Each hospital sends ``num-examples / max_weight x (its weights - the global weights)``,
    clipped to ``±clipping_range`` per value and stochastically quantized to integers in
    ``[0, quantization_range]``, masked so that only the sum over hospitals can be unmasked.
    The server divides the sum by the total ``num-examples / max_weight``: FedAvg's mean.
    """

    enabled: bool = False
    num_shares: float = Field(
        1.0, gt=0.0, le=1.0, description="share of the round's hospitals holding key shares"
    )
    reconstruction_threshold: float = Field(
        0.67, gt=0.0, le=1.0, description="share of the key shares needed to unmask"
    )
    clipping_range: float = Field(
        1.0, gt=0.0, description="bound on each value of a hospital's update (larger: clipped)"
    )
    quantization_range: int = Field(
        2**22, ge=2, lt=2**31, description="integer levels per value (finer: larger sums)"
    )
    max_weight: int = Field(
        1000, ge=1, description="largest num-examples of any hospital's training split"
    )

    def quantization_step(self) -> float:
        """One quantization level, in units of a hospital's weighted update value."""
        return 2.0 * self.clipping_range / self.quantization_range

    def error_bound(self, num_examples: Sequence[float]) -> float:
        """Worst-case per-value error of the secure FedAvg mean of these hospitals' updates.

        Stochastic rounding moves each hospital's weighted value by less than one step; the
        server divides the sum by the total weight ``sum(n) / max_weight``. Values that were
        clipped are not covered (they are counted per hospital instead).
        """
        total = float(sum(num_examples))
        if total <= 0:
            raise ValueError(f"num_examples must sum to a positive number, got {num_examples}")
        return len(num_examples) * self.quantization_step() * self.max_weight / total


class TrainFederatedSection(_Section):
    strategy: Literal[
        "fedavg",
        "fedprox",
        "fedadam",
        "fedyogi",
        "fedadagrad",
        "krum",
        "multikrum",
        "bulyan",
        "trimmed_mean",
        "median",
        "scaffold",
        "data_aware",
    ] = "fedavg"
    proximal_mu: float = Field(0.01, ge=0.0)
    scaffold_server_lr: float = Field(
        1.0, gt=0.0, description="scaffold: global step on the hospitals' mean update (eta_g)"
    )
    data_aware_temperature: float = Field(
        1.0, gt=0.0, description="data_aware: loss scale of the weights; large = FedAvg"
    )
    server_lr: float = Field(0.1, gt=0.0, description="adaptive strategies: server step (eta)")
    server_tau: float = Field(1e-3, gt=0.0, description="adaptive strategies: adaptivity (tau)")
    num_malicious: int = Field(
        1, ge=0, description="krum/multikrum/bulyan: hospitals assumed malicious (f)"
    )
    multikrum_select: int | None = Field(
        None, ge=1, description="multikrum: updates averaged; None: sampled hospitals - f"
    )
    trim_fraction: float = Field(
        0.2, ge=0.0, lt=0.5, description="trimmed_mean: share cut at each end per coordinate"
    )
    screen_updates: bool = Field(True, description="reject NaN/Inf, misshapen, outsized updates")
    screen_norm_factor: float = Field(
        10.0, gt=1.0, description="reject an update whose norm exceeds this x the others' median"
    )
    rounds: int = Field(10, ge=1)
    local_epochs: int = Field(1, ge=1)
    fraction_train: float = Field(1.0, gt=0.0, le=1.0)
    min_train_nodes: int | None = Field(None, ge=1)
    round_timeout_s: float = Field(600.0, gt=0.0)
    startup_timeout_s: float = Field(120.0, gt=0.0)
    run_timeout_s: float = Field(3600.0, gt=0.0)
    port: int = Field(0, ge=0, le=65535, description="SuperLink port; 0 picks a free one")
    poll_interval_s: float = Field(0.1, gt=0.0, le=5.0)
    clientapp_launcher: Literal["warm", "subprocess"] = "warm"
    supernode_poll_s: float | None = Field(
        0.2, gt=0.0, le=3.0, description="cap on the SuperNode's idle waits; None: Flower's 3 s"
    )
    launcher: Literal["local", "kubernetes"] = "local"
    insecure: bool = Field(False, description="local launcher: plaintext, no node auth (warned)")
    supernode_auth: bool = Field(True, description="local launcher: only enrolled SuperNodes")
    resume: bool = Field(True, description="a rerun goes on from the last completed round")
    secure_aggregation: SecureAggregationSection = SecureAggregationSection()

    @model_validator(mode="after")
    def _secure_aggregation_fits(self) -> TrainFederatedSection:
        if not self.secure_aggregation.enabled:
            return self
        if self.strategy not in SECAGG_STRATEGIES:
            raise ValueError(
                f"train_federated.strategy={self.strategy} cannot run with "
                "secure_aggregation.enabled=true: under SecAgg+ the server sees only the sum "
                "of the hospitals' updates, and "
                + (
                    f"{self.strategy} needs each hospital's update to rank, trim or take "
                    "medians of them"
                    if self.strategy in ("krum", "multikrum", "bulyan", "trimmed_mean", "median")
                    else f"{self.strategy} is not implemented on the secure path"
                )
                + f"; use one of {', '.join(SECAGG_STRATEGIES)}"
            )
        if self.screen_updates:
            raise ValueError(
                "train_federated.screen_updates=true cannot run with "
                "secure_aggregation.enabled=true: screening checks each hospital's update, "
                "which SecAgg+ hides from the server; set screen_updates: false to accept that"
            )
        return self


class PrivacySection(_Section):
    enabled: bool = True
    target_epsilon: float | None = Field(1.0, gt=0.0)
    noise_multiplier: float | None = Field(None, gt=0.0)
    max_grad_norm: float | None = Field(
        None, gt=0.0, description="per-example clipping bound; null = the task's DP default"
    )
    delta: float = Field(1e-5, gt=0.0, lt=1.0)
    epsilon_budget: float = Field(1.0, gt=0.0)
    accountants: tuple[Literal["rdp", "prv"], ...] = ("rdp", "prv")
    accountant: Literal["rdp", "prv"] = Field(
        "prv", description="calibrates the noise and decides ε (one of accountants)"
    )
    batch_size: int | None = Field(None, ge=1, description="DP expected batch; null = task's")
    lr: float | None = Field(None, gt=0.0, description="DP step size; null = task's")
    local_epochs: int | None = Field(None, ge=1, description="DP local epochs; null = federation's")
    trainable: tuple[str, ...] | None = Field(
        None, min_length=1, description="DP trains only parameters under these module names"
    )
    dropout: bool = Field(False, description="dropout layers stay on while DP-SGD trains")

    @model_validator(mode="after")
    def _one_noise_source(self) -> PrivacySection:
        if self.enabled and (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError(
                "set exactly one of privacy.target_epsilon and privacy.noise_multiplier "
                f"(got target_epsilon={self.target_epsilon}, "
                f"noise_multiplier={self.noise_multiplier})"
            )
        if self.accountant not in self.accountants:
            raise ValueError(
                f"privacy.accountant={self.accountant!r} must be one of privacy.accountants "
                f"{list(self.accountants)} (it is reported beside the others)"
            )
        return self


class AccountPrivacySection(_Section):
    """No keys yet: the stage reads ``privacy``. Present so unknown keys are rejected."""


class EvaluateModelsSection(_Section):
    membership_audit: bool = Field(True, description="attack every model (loss, offline LiRA)")
    audit_max_examples: int = Field(
        2000, ge=1, description="members and non-members each capped at this many"
    )


class RegisterModelSection(_Section):
    model_name: str = "privfed-readmission"
    experiment: str = "privfed"
    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlartifacts"
    candidate: Literal["federated", "federated_dp"] = "federated_dp"
    min_ratio_to_central: float = Field(0.9, gt=0.0)


class ClusterSection(_Section):
    """Where ``train_federated`` finds the federation when ``launcher: kubernetes``.

    The values must agree with ``manifests/`` (a test checks that they do); the validators
    reject what Kubernetes or Flower would only reject later, on the cluster.
    """

    namespace: str = "privfed"
    superlink_address: str = "privfed-superlink.privfed.svc.cluster.local:9093"
    root_certificates: str = "/etc/privfed/tls/ca.crt"
    insecure: bool = False
    shared_pvc: str = "privfed-runs"
    shared_dir: str = "/mnt/privfed/runs"
    supernode_selector: str = "app.kubernetes.io/component=supernode"
    hospital_label: str = "privfed.ai/hospital"
    ca_secret: str = "privfed-ca"

    @staticmethod
    def _is_label(key: str, value: str = "") -> bool:
        """Kubernetes' label key (optional DNS-subdomain prefix, then a name) and value syntax."""
        import re  # local: this section is the only part of the module that needs it

        name = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
        prefix = r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        return bool(re.fullmatch(prefix + name, key) and re.fullmatch(f"({name})?", value))

    @field_validator("namespace", "shared_pvc", "ca_secret")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
            raise ValueError(f"must be a Kubernetes DNS label (a-z, 0-9, '-'), got {value!r}")
        return value

    @field_validator("superlink_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"must be host:port (no URL scheme), got {value!r}")
        return value

    @field_validator("root_certificates", "shared_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path, got {value!r}")
        return value

    @field_validator("hospital_label")
    @classmethod
    def _label_key(cls, value: str) -> str:
        if not cls._is_label(value):
            raise ValueError(f"must be a Kubernetes label key, got {value!r}")
        return value

    @field_validator("supernode_selector")
    @classmethod
    def _equality_selector(cls, value: str) -> str:
        cls.parse_selector(value)
        return value

    @staticmethod
    def parse_selector(selector: str) -> dict[str, str]:
        """``k=v,k2=v2`` as a dict; only equality terms, so manifests can be checked against it."""
        labels: dict[str, str] = {}
        for term in selector.split(","):
            key, sep, val = term.strip().partition("=")
            if not sep or not ClusterSection._is_label(key, val):
                raise ValueError(
                    f"label selector must be key=value terms joined by ',', got {selector!r}"
                )
            labels[key] = val
        return labels

    @property
    def supernode_labels(self) -> dict[str, str]:
        """The labels every SuperNode pod carries (from ``supernode_selector``)."""
        return self.parse_selector(self.supernode_selector)


class KubeflowSection(_Section):
    """How ``privfed pipeline`` builds the Kubeflow DAG. No DVC stage reads it."""

    image: str = "ghcr.io/privfed/privfed:0.1.0"
    gpu_image: str = "ghcr.io/privfed/privfed:0.1.0-cuda"
    pipeline_name: str = "privfed"
    experiment: str = "privfed"
    cpu_request: str = "500m"
    memory_request: str = "1Gi"
    memory_limit: str = "4Gi"
    train_cpu_request: str = "2"
    train_memory_request: str = "4Gi"
    train_memory_limit: str = "16Gi"
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_count: int = Field(1, ge=0, le=8)
    gpu_node_selector: dict[str, str] = Field(default_factory=dict)
    retries: int = Field(2, ge=0, le=10)
    backoff_duration: str = "60s"
    backoff_factor: float = Field(2.0, ge=1.0)
    backoff_max_duration: str = "3600s"
    cache_data_stages: bool = True
    mlflow_tracking_uri: str = "http://mlflow.privfed.svc.cluster.local:5000"
    mlflow_secret: str = "privfed-mlflow-s3"
    service_account: str = ""
    ingest_pvc: str = ""
    ingest_dir: str = "/mnt/privfed/ingest"
    sweep_epsilons: tuple[float, ...] = (8.0, 3.0, 1.0, 0.5)
    sweep_hospitals: tuple[int, ...] = (3, 5)

    @field_validator("sweep_epsilons")
    @classmethod
    def _positive_epsilons(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        bad = [v for v in value if not v > 0]
        if bad or not value:
            raise ValueError(f"sweep_epsilons must be a non-empty list of values > 0, got {value}")
        return value

    @field_validator("sweep_hospitals")
    @classmethod
    def _valid_sizes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [v for v in value if not 2 <= v <= 64]
        if bad or not value:
            raise ValueError(f"sweep_hospitals must be a non-empty list in [2, 64], got {value}")
        return value


class PrivFedConfig(_Section):
    base: BaseSection = BaseSection()
    generate_data: GenerateDataSection = GenerateDataSection()
    ingest_data: IngestDataSection = IngestDataSection()
    validate_data: ValidateDataSection = ValidateDataSection()
    partition_data: PartitionDataSection = PartitionDataSection()
    model: ModelSection = ModelSection()
    train: TrainSection = TrainSection()
    train_centralized: TrainCentralizedSection = TrainCentralizedSection()
    train_local: TrainLocalSection = TrainLocalSection()
    train_federated: TrainFederatedSection = TrainFederatedSection()
    privacy: PrivacySection = PrivacySection()
    account_privacy: AccountPrivacySection = AccountPrivacySection()
    evaluate_models: EvaluateModelsSection = EvaluateModelsSection()
    register_model: RegisterModelSection = RegisterModelSection()
    cluster: ClusterSection = ClusterSection()
    kubeflow: KubeflowSection = KubeflowSection()

    @model_validator(mode="after")
    def _cross_section(self) -> PrivFedConfig:
        fed = self.train_federated
        if fed.min_train_nodes is not None and fed.min_train_nodes > self.base.num_hospitals:
            raise ValueError(
                f"train_federated.min_train_nodes={fed.min_train_nodes} exceeds "
                f"base.num_hospitals={self.base.num_hospitals}"
            )
        secagg = fed.secure_aggregation
        largest = self.base.num_hospitals * secagg.quantization_range
        if secagg.enabled and largest >= SECAGG_MODULUS:
            raise ValueError(
                "train_federated.secure_aggregation.quantization_range="
                f"{secagg.quantization_range} x base.num_hospitals={self.base.num_hospitals} "
                f"= {largest} does not fit SecAgg+'s modulus 2**32 = {SECAGG_MODULUS}: the sum "
                "of the hospitals' quantized updates would wrap around; use a "
                f"quantization_range below {SECAGG_MODULUS // self.base.num_hospitals}"
            )
        if fed.strategy == "scaffold" and self.privacy.enabled:
            raise ValueError(
                "train_federated.strategy=scaffold cannot run with privacy.enabled=true: each "
                "hospital's control variate is an un-clipped, un-noised gradient of its data, "
                "sent to the server every round, so DP-SGD's guarantee would not hold; set "
                "privacy.enabled: false (and register_model.candidate: federated) or use fedavg "
                "| fedprox with DP"
            )
        if self.register_model.candidate == "federated_dp" and not self.privacy.enabled:
            raise ValueError("register_model.candidate='federated_dp' needs privacy.enabled=true")
        return self

    def as_flat_dict(self) -> dict[str, Any]:
        """Dotted-key view for MLflow params and the Flower run config."""
        flat: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, sub in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, sub)
            else:
                flat[prefix] = value

        walk("", self.model_dump(mode="json"))
        return flat

    @property
    def epsilon_budget(self) -> float:
        return self.privacy.epsilon_budget if self.privacy.enabled else math.inf


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "<root>"
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {key}: {item['msg']}{shown}")
    return "invalid params:\n" + "\n".join(lines)


def config_from_dict(raw: dict[str, Any]) -> PrivFedConfig:
    """Apply the selected profile overlay and validate.

    Raises:
        ConfigError: naming each bad key and value.
    """
    raw = dict(raw or {})
    profiles = raw.pop("profiles", {}) or {}
    profile = (raw.get("base") or {}).get("profile", "default")
    if profile not in profiles and profile != "default":
        raise ConfigError(
            f"base.profile={profile!r} has no overlay under 'profiles' "
            f"(available: {sorted(profiles)})"
        )
    merged = _deep_merge(raw, profiles.get(profile) or {})
    try:
        return PrivFedConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def resolved_config(data: dict[str, Any]) -> PrivFedConfig:
    """Validate an already-resolved config (``model_dump`` of one), without profile overlays.

    This is how the config travels to the Flower ServerApp and ClientApps.
    """
    try:
        return PrivFedConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def load_config(path: str | Path = "params.yaml") -> PrivFedConfig:
    """Load and validate a params file.

    Raises:
        ConfigError: the file is missing, not YAML, or holds a bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping, got {type(raw).__name__}")
    return config_from_dict(raw)
