"""Shared fixtures: the project's own params.yaml, resolved with the tiny profile."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import pytest
import yaml

from privfed.config import PrivFedConfig, config_from_dict

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# The notes task's public tokenizer and base: built once per test session (every subprocess
# inherits this), never read from or left in the user's ~/.cache.
os.environ.setdefault("PRIVFED_CACHE_DIR", tempfile.mkdtemp(prefix="privfed-test-cache-"))


def raw_params(**overrides: dict) -> dict:
    """params.yaml as a dict with base.profile=tiny and section overrides merged in."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["base"]["profile"] = "tiny"
    for section, values in overrides.items():
        raw.setdefault(section, {})
        raw[section] = {**(raw[section] or {}), **values}
    return copy.deepcopy(raw)


@pytest.fixture
def tiny_cfg() -> PrivFedConfig:
    return config_from_dict(raw_params())


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated raw data for the tiny profile (shared, read-only)."""
    from privfed.stages import generate_data, ingest_data

    cfg = config_from_dict(raw_params())
    base = tmp_path_factory.mktemp("raw")
    generate_data.run(cfg, {}, {"generated": base / "generated"})
    ingest_data.run(cfg, {"generated": base / "generated"}, {"raw": base / "raw"})
    return base / "raw"
