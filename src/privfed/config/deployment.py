"""Where the pipeline runs on a cluster: ``cluster`` (Flower on Kubernetes) and ``kubeflow``.

No DVC stage reads ``kubeflow``; ``cluster`` is read by ``train_federated`` with
``launcher: kubernetes``.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from privfed.config.sections import Section

__all__ = ["ClusterSection", "KubeflowSection"]


class ClusterSection(Section):
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


class KubeflowSection(Section):
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
