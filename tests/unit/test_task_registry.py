"""The task registry: names, settings composed into the config, registration from outside."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pydantic import Field
from torch.utils.data import TensorDataset

import privfed.tasks as tasks
from privfed.config import ConfigError, TaskSettings, config_from_dict
from privfed.config.sections import Section
from privfed.tasks import TaskEntry, available_tasks, get_task, register_task
from privfed.training import DPSettings, FitPlan, LocalResult, private_training, train_with_config
from tests.conftest import raw_params

TOY = TaskEntry("toy", "tests.plugins.toy.task:ToyTask", "tests.plugins.toy.settings:SETTINGS")


@pytest.fixture(autouse=True)
def registry() -> Iterator[None]:
    """Each test sees the built-in registry and leaves it as it found it."""
    saved, loaded = dict(tasks._REGISTRY), tasks._entry_points_loaded
    yield
    tasks._REGISTRY.clear()
    tasks._REGISTRY.update(saved)
    tasks._entry_points_loaded = loaded


class _Clash(Section):
    n_genes: int = Field(3)


def test_unknown_task_names_every_registered_one() -> None:
    register_task(TOY)
    with pytest.raises(ConfigError, match=r"unknown task 'nope'.*'toy'"):
        config_from_dict(raw_params(base={"task": "nope"}))
    assert available_tasks()[:4] == ("readmission", "tabular", "segmentation", "notes")


def test_a_registered_tasks_keys_are_validated_where_it_declares_them() -> None:
    register_task(TOY)
    cfg = config_from_dict(
        raw_params(base={"task": "toy"}, generate_data={"toy": {"separation": 3}})
    )
    assert cfg.generate_data.toy.separation == 3.0 and cfg.model.toy.dp_batch_size == 16
    with pytest.raises(ConfigError, match=r"generate_data\.toy\.separation.*-1"):
        config_from_dict(raw_params(generate_data={"toy": {"separation": -1}}))
    # readmission's keys are still where users' params.yaml files write them
    assert cfg.generate_data.n_genes == 50 and cfg.model.seq_days == 28


def test_two_tasks_may_not_declare_the_same_key() -> None:
    register_task(TaskEntry("clash", TOY.task, f"{__name__}:CLASH"))
    with pytest.raises(ConfigError, match=r"task 'clash' declares generate_data\.n_genes"):
        config_from_dict(raw_params())


CLASH = TaskSettings(flat={"generate_data": _Clash})


def test_a_taken_name_is_refused_unless_replaced_on_purpose() -> None:
    with pytest.raises(ValueError, match="'readmission' is already registered"):
        register_task(TaskEntry("readmission", TOY.task))
    register_task(TaskEntry("readmission", TOY.task, TOY.settings), replace=True)
    assert tasks._REGISTRY["readmission"].task == TOY.task


def test_plugins_named_in_params_register_and_bad_ones_are_named() -> None:
    tasks._REGISTRY.pop("toy", None)
    sys.modules.pop("tests.plugins.toy", None)
    cfg = config_from_dict(raw_params(base={"task": "toy", "plugins": ["tests.plugins.toy"]}))
    assert get_task("toy", cfg).name == "toy"
    with pytest.raises(ConfigError, match="base.plugins: cannot import 'no_such_plugin'"):
        config_from_dict(raw_params(base={"plugins": ["no_such_plugin"]}))


def test_an_installed_entry_point_registers_a_task(tmp_path: Path, monkeypatch) -> None:
    # Prepare: a distribution on sys.path whose entry point names a TaskEntry
    info = tmp_path / "privfed_toy-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: privfed-toy\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[privfed.tasks]\ntoy_installed = tests.unit.test_task_registry:INSTALLED\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    tasks._entry_points_loaded = False

    # Execute
    names = available_tasks()

    # Assert
    assert "toy_installed" in names
    cfg = config_from_dict(raw_params(base={"task": "toy_installed"}))
    assert get_task("toy_installed", cfg).primary_metric == "accuracy"


INSTALLED = TaskEntry("toy_installed", TOY.task, None)


def test_validating_a_config_imports_no_tasks_model_code() -> None:
    probe = (
        "import sys; from privfed.config import load_config; load_config('params.yaml'); "
        "print(sorted(m for m in sys.modules if m.startswith('privfed.tasks.'))); "
        "print('torch' in sys.modules, 'monai' in sys.modules, 'transformers' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    loaded = eval(out[0])  # a printed list of module names
    assert "privfed.tasks.notes.settings" in loaded
    assert not [m for m in loaded if not m.endswith((".settings", ".base")) and m.count(".") > 2]
    assert out[1] == "False False False"


class _TwoStepsPerBatch(type(get_task("readmission", config_from_dict(raw_params())))):
    """A task whose fit takes two private steps per batch (a GAN's discriminator, say)."""

    def fit(self, model, dataset, plan: FitPlan) -> LocalResult:
        loader = torch.utils.data.DataLoader(dataset, batch_size=plan.batch_size)
        optimizer = torch.optim.SGD(model.parameters(), lr=plan.lr)
        with private_training(model, optimizer, loader, plan.dp) as private:
            for batch in private.loader:
                for _ in range(2):
                    private.optimizer.zero_grad()
                    self.loss(private.module, batch).backward()
                    private.optimizer.step()
        return LocalResult(train_loss=0.0, num_examples=len(dataset), history=private.history())

    def dp_steps_per_epoch(self, num_examples: int, batch_size: int) -> int:
        return 2 * super().dp_steps_per_epoch(num_examples, batch_size)


def test_a_tasks_own_fit_trains_and_reports_the_private_steps_it_took() -> None:
    # Prepare
    cfg = config_from_dict(raw_params(privacy={"batch_size": 8}))
    task = _TwoStepsPerBatch(cfg)
    data = TensorDataset(torch.randn(40, 3), torch.randint(0, 2, (40,)))
    model = torch.nn.Linear(3, 2)
    task.loss = lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1])
    before = model.weight.detach().clone()
    carried = [(1.0, 0.2, 7)]
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, history=carried)

    # Execute: the stages' entry point dispatches to the task's fit
    result = train_with_config(task, model, data, cfg, epochs=1, seed=0, label="t", dp=dp)

    # Assert: 40 examples / batch 8 = 5 Poisson batches, two steps each, on top of the 7 carried
    assert result.dp_steps(carried) == 10 == task.dp_steps_per_epoch(40, 8)
    assert sum(k for _, _, k in result.history) == 17  # Opacus merges equal (σ, q) entries
    assert not torch.equal(model.weight, before)
    assert not hasattr(model, "_module")  # Opacus' hooks are gone: a plain module again
