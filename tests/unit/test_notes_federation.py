"""Task ``notes`` federated in-process (the real client, strategy and screening, no processes).

Full and LoRA modes, and the data-aware strategy, for two tiny rounds each: every update passes
screening, the global model improves on the hospitals' validation notes, and LoRA's updates are
a small fraction of full mode's bytes. `tests/integration/test_notes_pipeline.py` runs LoRA
through real SuperLink and SuperNode processes.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from privfed.config import config_from_dict
from privfed.federated.inprocess import run_rounds
from privfed.partitions import hospital_dirs
from privfed.stages import run_data_stages
from tests.conftest import raw_params


def _cfg(**overrides: dict):
    raw = raw_params()
    raw["base"]["task"] = "notes"
    tiny = raw["profiles"]["tiny"]
    for section, values in overrides.items():
        tiny[section] = {**(tiny.get(section) or {}), **values}
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    parts = run_data_stages(_cfg(), tmp_path_factory.mktemp("notes-data"))
    return {h.name: h for h in hospital_dirs(parts)}


@pytest.fixture(scope="module")
def runs(hospitals, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    out = {}
    for name, overrides in {
        "full": {"model": {"notes": {**_cfg().model.notes.model_dump(), "mode": "full"}}},
        "lora": {},
        "lora_data_aware": {"train_federated": {"rounds": 2, "strategy": "data_aware"}},
    }.items():
        cfg = _cfg(**overrides)
        _, recorder = run_rounds(cfg, hospitals, tmp_path_factory.mktemp(name))
        out[name] = recorder.rounds
    return out


@pytest.mark.parametrize("name", ["full", "lora", "lora_data_aware"])
def test_every_update_is_accepted_and_the_model_improves(runs, name) -> None:
    rows = runs[name]
    assert all(not row["rejected"] for row in rows[1:]), name
    first, last = rows[0]["val"]["perplexity"], rows[-2]["val"]["perplexity"]
    assert math.isfinite(last) and last < first, (name, first, last)


def test_lora_sends_a_small_fraction_of_full_modes_bytes(runs) -> None:
    def update_bytes(name: str) -> set[int]:
        return {t["bytes_update"] for row in runs[name][1:] for t in row["train"].values()}

    full, lora = update_bytes("full"), update_bytes("lora")
    assert len(full) == len(lora) == 1  # the same arrays every round, from every hospital
    assert next(iter(full)) > 10 * next(iter(lora))
