from __future__ import annotations

import pandas as pd

from privfed.config import config_from_dict
from privfed.stages import partition_data, validate_data
from tests.conftest import raw_params


def _partition(cfg, raw, tmp_path):
    validate_data.run(cfg, {"raw": raw}, {"report": tmp_path / "v"})
    outs = {"partitions": tmp_path / "p", "stats": tmp_path / "stats.json"}
    stats = partition_data.run(cfg, {"raw": raw, "validation": tmp_path / "v"}, outs)
    return stats, tmp_path / "p"


def _ids(folder) -> list[str]:
    return pd.read_parquet(folder / "patients.parquet")["patient_id"].tolist()


def test_origin_partitions_are_disjoint_complete_and_local(tiny_cfg, tiny_raw, tmp_path) -> None:
    stats, parts = _partition(tiny_cfg, tiny_raw, tmp_path)
    all_ids = set(pd.read_parquet(tiny_raw / "patients.parquet")["patient_id"])
    seen: list[str] = []
    for hospital in tiny_cfg.base.hospitals:
        for split in ("train", "val", "test"):
            ids = _ids(parts / hospital / split)
            assert all(i.startswith(f"{hospital}-") for i in ids)  # stays at its hospital
            ts = pd.read_parquet(parts / hospital / split / "timeseries.parquet")
            assert set(ts["patient_id"]) == set(ids)
            seen += ids
            assert stats["hospitals"][hospital][split]["n"] == len(ids)
    assert len(seen) == len(set(seen))  # disjoint
    assert set(seen) == all_ids  # complete


def test_dirichlet_skews_labels_but_keeps_every_patient(tiny_raw, tmp_path) -> None:
    cfg = config_from_dict(
        raw_params(partition_data={"scheme": "dirichlet", "dirichlet_alpha": 0.3})
    )
    stats, parts = _partition(cfg, tiny_raw, tmp_path)
    total = sum(s[split]["n"] for s in stats["hospitals"].values() for split in s)
    assert total == 180
    mixes = []
    for s in stats["hospitals"].values():
        counts = pd.Series(s["train"]["labels"], dtype=float)
        mixes.append(counts / counts.sum())
    spread = pd.concat(mixes, axis=1).fillna(0).max(axis=1) - pd.concat(mixes, axis=1).fillna(
        0
    ).min(axis=1)
    assert spread.max() > 0.3


def test_partition_refuses_failed_validation(tiny_cfg, tiny_raw, tmp_path) -> None:
    import json

    import pytest

    from privfed.io import DataError

    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "report.json").write_text(json.dumps({"success": False}))
    with pytest.raises(DataError, match="validation did not pass"):
        partition_data.run(
            tiny_cfg,
            {"raw": tiny_raw, "validation": tmp_path / "v"},
            {"partitions": tmp_path / "p", "stats": tmp_path / "s.json"},
        )
    assert not (tmp_path / "p").exists()
