"""The compiled pipelines, checked on their IR: what a cluster would actually execute."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import dsl

from privfed.config import STAGES
from privfed.kubeflow import project
from privfed.kubeflow.parameters import COMPILE_TIME_SECTIONS, PIPELINE_SECTIONS
from privfed.kubeflow.settings import DATA_STAGES, TRAINING_STAGES
from privfed.stages import stage_spec
from tests.conftest import PARAMS, ROOT


def _compile(tmp_path: Path, name: str = "main") -> tuple[dict[str, Any], dict[str, Any]]:
    out = project.compile_pipeline(name, PARAMS, tmp_path / f"{name}.yaml", ROOT)
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def main_ir(tmp_path_factory) -> tuple[dict[str, Any], dict[str, Any]]:
    return _compile(tmp_path_factory.mktemp("ir"))


def _tasks(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]


def _task(stage: str) -> str:
    return stage.replace("_", "-")


@pytest.mark.parametrize("name", list(project.PIPELINES))
def test_committed_yaml_is_current(tmp_path: Path, name: str) -> None:
    """Users upload the committed YAML: it must be byte for byte what params.yaml and the
    code compile to (KFP's header comment is put in key order, see ``sorted_header``)."""
    fresh = project.compile_pipeline(name, PARAMS, tmp_path / "fresh.yaml", ROOT).read_text()
    committed = (ROOT / project.PIPELINES[name].package).read_text()
    assert committed == fresh, (
        f"{project.PIPELINES[name].package} is stale: run `privfed pipeline compile "
        f"--pipeline {name}` and commit it"
    )


def test_header_defaults_are_in_key_order() -> None:
    """Dict defaults in KFP's header comment come out sorted, whatever order KFP printed."""
    text = "# Inputs:\n#    base: dict [Default: {'seed': 42.0, 'b': {'z': 1, 'a': [2]}}]\nx: 1\n"
    assert project.sorted_header(text) == (
        "# Inputs:\n#    base: dict [Default: {'b': {'a': [2], 'z': 1}, 'seed': 42.0}]\nx: 1\n"
    )


def test_all_stages_with_their_edges(main_ir) -> None:
    spec, _ = main_ir
    tasks = _tasks(spec)
    assert set(tasks) == {_task(s) for s in STAGES} | {"check-params"}
    producers = {
        name: {
            a["taskOutputArtifact"]["producerTask"]
            for a in task.get("inputs", {}).get("artifacts", {}).values()
        }
        for name, task in tasks.items()
    }
    assert producers["generate-data"] == set()
    assert producers["ingest-data"] == {"generate-data"}
    assert producers["validate-data"] == {"ingest-data"}
    assert producers["partition-data"] == {"validate-data"}
    for stage in TRAINING_STAGES:
        assert producers[_task(stage)] == {"partition-data"}
    assert producers["account-privacy"] == {"partition-data", "train-federated"}
    assert producers["evaluate-models"] == {
        "partition-data",
        "train-centralized",
        "train-local",
        "train-federated",
        "account-privacy",
    }
    assert producers["register-model"] == {
        "validate-data",
        "train-centralized",
        "train-federated",
        "account-privacy",
        "evaluate-models",
    }


#: Inputs not fed by the stage that writes their DVC path: only data that passed validation
#: goes on (validate-data's copy ``validated``; in DVC partition_data refuses a failed report).
_NOT_FROM_THE_WRITER = {
    ("partition-data", "raw"): ("validate-data", "validated"),
    ("register-model", "data"): ("validate-data", "validated"),
}


def test_every_artifact_edge_is_the_dvc_layout(main_ir) -> None:
    """A stage's input comes from the task whose output has the same DVC path (``SPEC``s)."""
    spec, _ = main_ir
    tasks = _tasks(spec)
    writer = {
        path: (_task(stage), name)
        for stage in STAGES
        for name, path in stage_spec(stage).outputs.items()
    }
    for stage in STAGES:
        inputs = tasks[_task(stage)].get("inputs", {}).get("artifacts", {})
        declared = dict(stage_spec(stage).inputs)
        for alternative, replaced in stage_spec(stage).alternative_inputs.items():
            declared[alternative] = declared.pop(replaced)
        assert set(inputs) == set(declared), stage
        for name, arg in inputs.items():
            source = arg["taskOutputArtifact"]
            expected = _NOT_FROM_THE_WRITER.get((_task(stage), name)) or writer[declared[name]]
            assert (source["producerTask"], source["outputArtifactKey"]) == expected, (stage, name)


#: check-params' and the exit handler's parameters beside the sections: where and under which
#: key the pipeline's MLflow run is
TRACKING = {"mlflow_tracking_uri", "pipeline_job"}


def test_every_stage_takes_the_whole_config_from_check_params(main_ir) -> None:
    """check-params gets every section (pipeline parameters and compile-time constants) and
    every stage its output: cross-section validation sees what the DVC door sees."""
    spec, _ = main_ir
    tasks = _tasks(spec)
    checked = tasks["check-params"]["inputs"]["parameters"]
    assert set(checked) == set(PIPELINE_SECTIONS) | set(COMPILE_TIME_SECTIONS) | TRACKING
    # the job id keys the MLflow run every stage logs into (docs/tracking.md)
    assert checked["pipeline_job"]["runtimeValue"]["constant"] == dsl.PIPELINE_JOB_ID_PLACEHOLDER
    assert checked["mlflow_tracking_uri"] == {
        "componentInputParameter": "pipelinechannel--mlflow_tracking_uri"
    }
    for section in PIPELINE_SECTIONS:
        assert checked[section] == {"componentInputParameter": f"pipelinechannel--{section}"}
    for section in COMPILE_TIME_SECTIONS:
        assert "constant" in checked[section]["runtimeValue"]
    for stage in STAGES:
        config = tasks[_task(stage)]["inputs"]["parameters"]["config"]
        assert config["taskOutputParameter"]["producerTask"] == "check-params", stage
    exit_inputs = spec["root"]["dag"]["tasks"]["record-pipeline-status"]["inputs"]["parameters"]
    assert set(PIPELINE_SECTIONS) | set(COMPILE_TIME_SECTIONS) <= set(exit_inputs)
    # the exit handler marks the same MLflow run failed
    assert exit_inputs["pipeline_job"] == checked["pipeline_job"]


def test_pipeline_parameters_are_the_params_sections(main_ir) -> None:
    spec, _ = main_ir
    declared = spec["root"]["inputDefinitions"]["parameters"]
    params = yaml.safe_load(PARAMS.read_text())
    assert set(declared) == set(PIPELINE_SECTIONS) | {"mlflow_tracking_uri"}
    assert set(PIPELINE_SECTIONS) == set(params) - set(COMPILE_TIME_SECTIONS)
    assert declared["train_federated"]["parameterType"] == "STRUCT"
    default = declared["train_federated"]["defaultValue"]
    assert default["rounds"] == params["train_federated"]["rounds"]
    assert "min_train_nodes" not in default  # null in params.yaml: the schema default


def test_resources_gpus_retries_and_caching(main_ir) -> None:
    spec, _ = main_ir
    kf = yaml.safe_load(PARAMS.read_text())["kubeflow"]
    executors = spec["deploymentSpec"]["executors"]
    tasks = _tasks(spec)
    for stage in STAGES:
        resources = executors[f"exec-{_task(stage)}"]["container"]["resources"]
        task = tasks[_task(stage)]
        if stage in TRAINING_STAGES:
            assert resources["accelerator"]["resourceType"] == kf["accelerator_type"]
            assert resources["accelerator"]["resourceCount"] == str(kf["accelerator_count"])
            assert resources["resourceMemoryLimit"] == kf["train_memory_limit"]
            assert task["retryPolicy"]["maxRetryCount"] == kf["retries"]
            assert task["retryPolicy"]["backoffDuration"] == kf["backoff_duration"]
            assert executors[f"exec-{_task(stage)}"]["container"]["image"] == kf["gpu_image"]
        else:
            assert "accelerator" not in resources
            assert resources["resourceCpuRequest"] == kf["cpu_request"]
            assert "retryPolicy" not in task
            assert executors[f"exec-{_task(stage)}"]["container"]["image"] == kf["image"]
        assert task["cachingOptions"].get("enableCache", False) is (stage in DATA_STAGES)


def _params_with(tmp_path: Path, section: str, **values: Any) -> Path:
    params = yaml.safe_load(PARAMS.read_text())
    params[section] = {**params[section], **values}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_kubernetes_platform_settings(main_ir) -> None:
    _, platform = main_ir
    for stage in TRAINING_STAGES:
        tolerations = platform[f"exec-{_task(stage)}"]["tolerations"]
        assert {
            "key": "nvidia.com/gpu",
            "operator": "Exists",
            "effect": "NoSchedule",
        } in tolerations
    # launcher: local (the default) runs the federation inside the pod: no cluster wiring
    assert "pvcMount" not in platform["exec-train-federated"]
    # every task logs into the pipeline's MLflow run (docs/tracking.md)
    for task in (*STAGES, "check_params", "record_pipeline_status"):
        executor = f"exec-{_task(task)}"
        (secret,) = platform[executor]["secretAsEnv"]
        assert secret["secretName"] == "privfed-mlflow-s3"
        assert secret["optional"] is True


def test_ingest_volume_is_mounted_only_into_ingest_data(tmp_path: Path) -> None:
    # Prepare
    params = _params_with(tmp_path, "kubeflow", ingest_pvc="consortium-data")
    # Execute
    out = project.compile_pipeline("main", params, tmp_path / "ingest.yaml", ROOT)
    # Assert
    _, platform = yaml.safe_load_all(out.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    (mount,) = executors["exec-ingest-data"]["pvcMount"]
    assert mount["constant"] == "consortium-data"
    assert mount["mountPath"] == "/mnt/privfed/ingest"
    others = [e for n, e in executors.items() if n != "exec-ingest-data"]
    assert all(m["constant"] != "consortium-data" for e in others for m in e.get("pvcMount", []))


def test_a_user_schema_file_is_inlined_into_the_pipeline_defaults(tmp_path: Path) -> None:
    """Pods cannot open a schema path on the compiling machine: its contents travel instead."""
    # Prepare
    (tmp_path / "schema.yaml").write_text(
        yaml.safe_dump(
            {
                "target": {"column": "y", "kind": "classification", "classes": ["0", "1"]},
                "features": {
                    "x": {"type": "numeric"},
                    "c": {"type": "categorical", "categories": ["a"]},
                },
            }
        )
    )
    params = _params_with(tmp_path, "ingest_data", schema=str(tmp_path / "schema.yaml"))
    # Execute
    out = project.compile_pipeline("main", params, tmp_path / "schema.yaml.ir", ROOT)
    # Assert
    spec, _ = yaml.safe_load_all(out.read_text())
    default = spec["root"]["inputDefinitions"]["parameters"]["ingest_data"]["defaultValue"]
    assert default["schema"]["target"]["column"] == "y"
    assert default["schema"]["features"]["x"] == {"type": "numeric", "missing": "reject"}


def test_ingest_data_never_reuses_a_cached_output(main_ir) -> None:
    """A user's files can change while every parameter stays the same."""
    spec, _ = main_ir
    assert _tasks(spec)["ingest-data"]["cachingOptions"].get("enableCache", False) is False


def test_cluster_launcher_gets_volume_ca_and_label_but_no_gpu(tmp_path: Path) -> None:
    """launcher: kubernetes submits to the cluster's SuperLink; the SuperNode pods train."""
    params = _params_with(tmp_path, "train_federated", launcher="kubernetes")
    out = project.compile_pipeline("main", params, tmp_path / "k8s.yaml", ROOT)
    spec, platform = yaml.safe_load_all(out.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    cluster = yaml.safe_load(PARAMS.read_text())["cluster"]
    federated = executors["exec-train-federated"]
    (mount,) = federated["pvcMount"]
    assert mount["mountPath"] == cluster["shared_dir"]
    assert mount["constant"] == cluster["shared_pvc"]
    (ca,) = federated["secretAsVolume"]
    assert ca["secretName"] == cluster["ca_secret"]
    assert ca["mountPath"] == str(Path(cluster["root_certificates"]).parent)
    assert federated["podMetadata"]["labels"] == {"privfed.ai/superlink-client": "true"}
    resources = spec["deploymentSpec"]["executors"]
    assert "accelerator" not in resources["exec-train-federated"]["container"]["resources"]
    assert "accelerator" in resources["exec-train-centralized"]["container"]["resources"]


def test_sweep_refuses_the_cluster_launcher(tmp_path: Path) -> None:
    from privfed.config import ConfigError

    params = _params_with(tmp_path, "train_federated", launcher="kubernetes")
    with pytest.raises(ConfigError, match="launcher=local"):
        project.compile_pipeline("sweep", params, tmp_path / "s.yaml", ROOT)


def test_no_pipeline_compiles_with_the_docker_launcher(tmp_path: Path) -> None:
    """launcher: docker needs a Docker daemon beside the stage; a pod has none."""
    from privfed.config import ConfigError

    params = _params_with(tmp_path, "train_federated", launcher="docker")
    for name in ("main", "sweep"):
        with pytest.raises(ConfigError, match="launcher=docker"):
            project.compile_pipeline(name, params, tmp_path / f"{name}.yaml", ROOT)


def test_exit_handler_runs_after_any_outcome(main_ir) -> None:
    spec, _ = main_ir
    exit_task = spec["root"]["dag"]["tasks"]["record-pipeline-status"]
    assert exit_task["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert exit_task["inputs"]["parameters"]["status"]["taskFinalStatus"]["producerTask"] == (
        "exit-handler-1"
    )


def test_image_is_one_setting(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PRIVFED_IMAGE", "registry.example/privfed:abc")
    monkeypatch.setenv("PRIVFED_GPU_IMAGE", "registry.example/privfed:abc-cuda")
    spec, _ = _compile(tmp_path)
    images = {
        name: e["container"]["image"] for name, e in spec["deploymentSpec"]["executors"].items()
    }
    assert {images[f"exec-{_task(s)}"] for s in TRAINING_STAGES} == {
        "registry.example/privfed:abc-cuda"
    }
    assert {
        i for n, i in images.items() if n not in {f"exec-{_task(s)}" for s in TRAINING_STAGES}
    } == {"registry.example/privfed:abc"}


def test_cpu_only_cluster_has_no_gpu_requests(tmp_path: Path) -> None:
    path = _params_with(tmp_path, "kubeflow", accelerator_count=0)
    out = project.compile_pipeline("main", path, tmp_path / "cpu.yaml", ROOT)
    spec, platform = yaml.safe_load_all(out.read_text())
    image = yaml.safe_load(PARAMS.read_text())["kubeflow"]["image"]
    for name, executor in spec["deploymentSpec"]["executors"].items():
        assert "accelerator" not in executor["container"]["resources"], name
        assert executor["container"]["image"] == image
    assert "tolerations" not in str(platform)


def test_sweep_fans_out_over_epsilons_and_federation_sizes(tmp_path: Path) -> None:
    spec, _ = _compile(tmp_path, "sweep")
    kf = yaml.safe_load(PARAMS.read_text())["kubeflow"]
    root = spec["root"]["dag"]["tasks"]
    loops = {n: t for n, t in root.items() if "parameterIterator" in t}
    assert len(loops) == 2
    iterated = {t["parameterIterator"]["items"]["inputParameter"] for t in loops.values()}
    assert iterated == {"pipelinechannel--epsilons", "pipelinechannel--hospital_counts"}
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["epsilons"]["defaultValue"] == kf["sweep_epsilons"]
    assert inputs["hospital_counts"]["defaultValue"] == kf["sweep_hospitals"]
    assert set(root["collect-sweep"]["dependentTasks"]) == set(loops)


def _component(module: str, name: str) -> Any:
    import importlib
    import sys

    sys.path.insert(0, str(ROOT))
    return getattr(importlib.import_module(f"components.{module}.component"), name)


def _kinds(component: Any) -> dict[str, set[str]]:
    """Input artifacts, output artifacts and plain parameters of a component, by name."""
    spec = component.component_spec
    artifact = {n for n, i in spec.inputs.items() if i.type.startswith("system.")}
    return {
        "input": artifact,
        "output": set(spec.outputs or {}),
        "parameter": set(spec.inputs) - artifact,
    }


@pytest.mark.parametrize("stage", STAGES)
def test_every_component_takes_the_config_and_its_stage_artifacts(stage: str) -> None:
    """A component's artifacts are its stage's declared inputs and outputs, by the same names
    (plus views for the UI: validated data, HTML and Markdown pages, Metrics), and its one
    params argument is the whole config."""
    spec = stage_spec(stage)
    kinds = _kinds(_component(stage, stage))
    declared = set(spec.inputs) - set(spec.alternative_inputs.values())
    assert kinds["input"] == declared | set(spec.alternative_inputs)
    assert set(spec.outputs) <= kinds["output"]
    assert kinds["parameter"] - {"mlflow_tracking_uri"} == {"config"}


@pytest.mark.parametrize(
    ("module", "name"),
    [("check_params", "check_params"), ("record_pipeline_status", "record_pipeline_status")],
)
def test_whole_config_components_take_every_section(module: str, name: str) -> None:
    params = set(inspect.signature(_component(module, name).python_func).parameters)
    sections = set(PIPELINE_SECTIONS) | set(COMPILE_TIME_SECTIONS)
    assert params - sections <= {"status"} | TRACKING
    assert sections <= params
