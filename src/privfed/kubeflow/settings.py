"""Compile-time task settings from the ``kubeflow`` params section: images, resources, GPUs.

One place decides what each stage's pod gets, so the components stay thin and the image name is
written once (``kubeflow.image`` / ``PRIVFED_IMAGE``). Local runs ignore these settings (KFP's
local runner warns about resources and skips ``kfp.kubernetes`` platform settings).
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Any

from privfed.config import STAGES, ClusterSection, KubeflowSection, PrivFedConfig

__all__ = [
    "DATA_STAGES",
    "TRAINING_STAGES",
    "component",
    "cpu_image",
    "gpu_image",
    "configure_task",
]

DATA_STAGES = ("generate_data", "validate_data", "partition_data")
TRAINING_STAGES = ("train_centralized", "train_local", "train_federated")
#: Pod label the SuperLink's NetworkPolicy admits (besides the SuperNodes).
SUPERLINK_CLIENT_LABEL = "privfed.ai/superlink-client"
#: Tasks that talk to MLflow and get its credentials: every stage logs into the pipeline's run
#: as it runs (docs/tracking.md), check-params opens it, the exit handler closes a failed one.
MLFLOW_STAGES = (*STAGES, "check_params", "record_pipeline_status")


def cpu_image(kf: KubeflowSection | None = None) -> str:
    """The project image every CPU component runs (env ``PRIVFED_IMAGE`` wins over params)."""
    return os.environ.get("PRIVFED_IMAGE") or (kf or KubeflowSection()).image


def gpu_image(kf: KubeflowSection | None = None) -> str:
    """The CUDA image for training components (env ``PRIVFED_GPU_IMAGE`` wins over params)."""
    return os.environ.get("PRIVFED_GPU_IMAGE") or (kf or KubeflowSection()).gpu_image


def component(func: Any) -> Any:
    """``@dsl.component`` with the project image and no per-task ``pip install kfp``.

    The image baked in here is only the default; :func:`configure_task` sets the image from the
    params used at compile time on every task.
    """
    from kfp import dsl

    return dsl.component(func, base_image=cpu_image(), install_kfp_package=False)


def _uses_gpu(stage: str, cfg: PrivFedConfig) -> bool:
    """Training stages get GPUs, except train_federated when it only submits to the cluster's
    SuperLink (launcher: kubernetes): then the SuperNode pods train."""
    if stage == "train_federated" and cfg.train_federated.launcher == "kubernetes":
        return False
    return stage in TRAINING_STAGES and cfg.kubeflow.accelerator_count > 0


def configure_task(task: Any, stage: str, cfg: PrivFedConfig) -> Any:
    """Image, resources, GPU, retries, caching and Kubernetes platform settings for one task."""
    from kfp import kubernetes

    kf = cfg.kubeflow
    training = stage in TRAINING_STAGES
    task.set_container_image(gpu_image(kf) if _uses_gpu(stage, cfg) else cpu_image(kf))
    task.set_cpu_request(kf.train_cpu_request if training else kf.cpu_request)
    task.set_memory_request(kf.train_memory_request if training else kf.memory_request)
    task.set_memory_limit(kf.train_memory_limit if training else kf.memory_limit)
    if _uses_gpu(stage, cfg):
        task.set_accelerator_type(kf.accelerator_type)
        task.set_accelerator_limit(kf.accelerator_count)
        kubernetes.add_toleration(
            task, key=kf.accelerator_type, operator="Exists", effect="NoSchedule"
        )
        for key, value in sorted(kf.gpu_node_selector.items()):
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
    if training:
        task.set_retry(
            num_retries=kf.retries,
            backoff_duration=kf.backoff_duration,
            backoff_factor=kf.backoff_factor,
            backoff_max_duration=kf.backoff_max_duration,
        )
    # Data stages are deterministic in their params (ingest_data is not: it reads files a
    # cache key cannot see, so it always runs); training draws DP noise from OS entropy and
    # registration must reach MLflow every run, so only data stages may reuse cached outputs.
    # Every stage takes the whole config, so a hit needs every section unchanged.
    task.set_caching_options(enable_caching=kf.cache_data_stages and stage in DATA_STAGES)
    if stage == "ingest_data" and kf.ingest_pvc:
        # the consortium's data, read in place: ingest_data.path points under ingest_dir
        kubernetes.mount_pvc(task, pvc_name=kf.ingest_pvc, mount_path=kf.ingest_dir)
    if stage == "train_federated" and cfg.train_federated.launcher == "kubernetes":
        _mount_runs_volume(task, cfg.cluster)
    if stage in MLFLOW_STAGES:
        kubernetes.use_secret_as_env(
            task,
            secret_name=kf.mlflow_secret,
            secret_key_to_env={
                "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
                "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL",
            },
            optional=True,  # an MLflow server that proxies artifacts needs no client credentials
        )
    return task


def _mount_runs_volume(task: Any, cluster: ClusterSection) -> None:
    """What ``launcher: kubernetes`` needs in the pod: the volume the cluster's ServerApp writes
    the final model to, the CA that signed the SuperLink certificate, and the label the
    SuperLink's NetworkPolicy admits (manifests/base/networkpolicies.yaml)."""
    from kfp import kubernetes

    kubernetes.mount_pvc(task, pvc_name=cluster.shared_pvc, mount_path=cluster.shared_dir)
    kubernetes.use_secret_as_volume(
        task,
        secret_name=cluster.ca_secret,
        mount_path=str(PurePosixPath(cluster.root_certificates).parent),
    )
    kubernetes.add_pod_label(task, label_key=SUPERLINK_CLIENT_LABEL, label_value="true")
