"""The per-federation cache of featurized splits: used only for exactly the same input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from privfed.federated.data_cache import DATA_CACHE_ENV, load_split


class _Task:
    """Counts loads; the dataset is the split's file bytes as a tensor."""

    name = "counting"

    def __init__(self) -> None:
        self.loads = 0

    def load_dataset(self, split_dirs: list[Path]) -> TensorDataset:
        self.loads += 1
        data = (split_dirs[0] / "rows.bin").read_bytes()
        return TensorDataset(torch.tensor(list(data)))


@pytest.fixture()
def split(tmp_path: Path) -> Path:
    folder = tmp_path / "hospital_1" / "train"
    folder.mkdir(parents=True)
    (folder / "rows.bin").write_bytes(b"\x01\x02\x03")
    return folder


def test_without_the_variable_every_call_loads(split: Path, monkeypatch) -> None:
    monkeypatch.delenv(DATA_CACHE_ENV, raising=False)
    task = _Task()
    load_split(task, split, "{}")
    load_split(task, split, "{}")
    assert task.loads == 2


def test_same_input_is_loaded_once_and_a_change_loads_again(split, tmp_path, monkeypatch) -> None:
    # Prepare
    monkeypatch.setenv(DATA_CACHE_ENV, str(tmp_path / "cache"))
    task = _Task()
    # Execute / Assert: the second call comes from the cache, with the same tensors
    first = load_split(task, split, '{"a": 1}')
    again = load_split(task, split, '{"a": 1}')
    assert task.loads == 1
    assert torch.equal(first.tensors[0], again.tensors[0])
    # another config is another key
    load_split(task, split, '{"a": 2}')
    assert task.loads == 2
    # so is a changed file (new size and mtime)
    (split / "rows.bin").write_bytes(b"\x09\x09\x09\x09")
    os.utime(split / "rows.bin", ns=(1, 1))
    changed = load_split(task, split, '{"a": 1}')
    assert task.loads == 3
    assert changed.tensors[0].tolist() == [9, 9, 9, 9]


def test_an_unreadable_entry_is_ignored(split, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(DATA_CACHE_ENV, str(tmp_path / "cache"))
    task = _Task()
    load_split(task, split, "{}")
    for entry in (tmp_path / "cache").iterdir():
        entry.write_bytes(b"torn")
    assert load_split(task, split, "{}").tensors[0].tolist() == [1, 2, 3]
    assert task.loads == 2


def test_memo_computes_once_per_arguments(tmp_path, monkeypatch) -> None:
    from privfed.federated.data_cache import memo

    monkeypatch.setenv(DATA_CACHE_ENV, str(tmp_path / "cache"))
    calls: list[int] = []

    def compute() -> float:
        calls.append(1)
        return 0.75

    assert memo("sigma", {"eps": 1.0}, compute) == 0.75
    assert memo("sigma", {"eps": 1.0}, compute) == 0.75
    assert len(calls) == 1
    memo("sigma", {"eps": 8.0}, compute)
    assert len(calls) == 2
