"""Public knowledge: the readmission public registry, its cached model, and ``model.init``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privfed.config import config_from_dict
from privfed.tasks import get_task
from privfed.tasks.base import PUBLIC_ONLY
from privfed.tasks.readmission.generate import (
    PUBLIC_LABEL_SHARES,
    generate_cohorts,
    public_cohort,
)
from privfed.tasks.readmission.schema import LABELS
from tests.conftest import raw_params


def test_public_registry_differs_from_the_hospitals_as_real_public_data_does() -> None:
    # Execute
    patients, ts = public_cohort(600, n_genes=50)
    hospitals, _, _ = generate_cohorts(
        ["hospital_1", "hospital_2"],
        seed=42,
        patients_per_hospital=300,
        min_months=6,
        max_months=12,
        n_genes=50,
        label_noise=0.35,
    )
    # Assert: its own ids, no genomics, its own label definition, another population
    assert patients["patient_id"].str.startswith("public-").all()
    assert set(ts["patient_id"]) <= set(patients["patient_id"])
    genes = [c for c in patients.columns if c.startswith("gene_")]
    assert len(genes) == 50 and (patients[genes] == 0.0).all().all()
    shares = patients["readmission_risk"].value_counts(normalize=True)
    for label, share in zip(LABELS, PUBLIC_LABEL_SHARES, strict=True):
        assert shares[label] == pytest.approx(share, abs=0.01)
    assert patients["age"].mean() < hospitals["age"].mean() - 5


def test_public_registry_is_deterministic_and_reads_no_consortium_seed() -> None:
    a, ts_a = public_cohort(80, n_genes=12)
    b, ts_b = public_cohort(80, n_genes=12)
    assert a.equals(b) and ts_a.equals(ts_b)


@pytest.fixture(scope="module")
def tiny_task():
    return get_task("readmission", config_from_dict(raw_params()))


def test_public_model_is_built_once_and_is_what_every_run_starts_from(tiny_task) -> None:
    from privfed.tasks.readmission.public import public_model

    # Execute
    built = public_model(tiny_task)
    again = public_model(tiny_task)
    model = tiny_task.initial_model()
    # Assert: one cached build (same folder, weights match their digest), loaded into the model
    assert again.folder == built.folder and (built.folder / "public.pt").is_file()
    assert 1 <= built.meta["best_epoch"] <= tiny_task.cfg.model.public_epochs
    for name, value in model.state_dict().items():
        assert torch.equal(value, built.state[name]), name
    # ... and the report shows it as the public-only model
    refs = tiny_task.reference_models()
    assert list(refs) == [PUBLIC_ONLY]


def test_scratch_starts_fresh_and_has_no_public_row() -> None:
    task = get_task("readmission", config_from_dict(raw_params(model={"init": "scratch"})))
    assert task.has_public_model
    assert not get_task("tabular", task.cfg).has_public_model
    assert task.init_state() is None
    assert task.reference_models() == {}


def test_a_users_checkpoint_is_loaded_and_a_wrong_one_is_named(tmp_path) -> None:
    # Prepare: a checkpoint of the right architecture, with recognizable weights
    scratch = get_task("readmission", config_from_dict(raw_params(model={"init": "scratch"})))
    state = {k: torch.full_like(v, 0.25) for k, v in scratch.build_model().state_dict().items()}
    good = tmp_path / "mine.pt"
    torch.save(state, good)
    wrong = tmp_path / "wrong.pt"
    torch.save({"head.0.weight": torch.zeros(2)}, wrong)
    # Execute / Assert: loaded as given
    task = get_task("readmission", config_from_dict(raw_params(model={"init": str(good)})))
    assert all(np.allclose(v.numpy(), 0.25) for v in task.initial_model().state_dict().values())
    # a file that does not fit, or no file, fails naming the value
    task = get_task("readmission", config_from_dict(raw_params(model={"init": str(wrong)})))
    with pytest.raises(
        ValueError, match=r"model.init='.*wrong.pt' does not fit task 'readmission'"
    ):
        task.initial_model()
    task = get_task("readmission", config_from_dict(raw_params(model={"init": "nope.pt"})))
    with pytest.raises(FileNotFoundError, match=r"model.init='nope.pt': no such file"):
        task.initial_model()


def test_public_model_reads_no_hospital_setting() -> None:
    """The consortium's seed, label noise and cohort sizes do not reach the public build."""
    from privfed.tasks.readmission.public import public_model

    # Prepare: two consortia that differ in everything but the model's input layout
    a = get_task("readmission", config_from_dict(raw_params()))
    b = get_task(
        "readmission",
        config_from_dict(
            raw_params(
                base={"seed": 7, "num_hospitals": 5},
                generate_data={"label_noise": 0.9, "patients_per_hospital": 80},
            )
        ),
    )
    # Execute / Assert: one and the same public model
    assert public_model(a).folder == public_model(b).folder


def test_notes_card_says_it_starts_from_its_public_base() -> None:
    """Notes ignore ``model.init`` (they always start from a base); the card must say so."""
    task = get_task("notes", config_from_dict(raw_params(base={"task": "notes"})))
    assert "public GPT-2 base" in task.init_description()
    assert "fresh" not in task.init_description()
