"""Reading a consortium's own tables: one folder per hospital, or one file with a site column.

Shared by every task's ``ingest``; a task says which table it wants and what a valid row is.
Each error names the file it is about, so a user knows where to look.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from privfed.io import DataError

__all__ = [
    "DEFAULT_SITE_COLUMN",
    "TABLE_SUFFIXES",
    "SiteTable",
    "check_site_sizes",
    "concat_sites",
    "read_table",
    "site_tables",
]

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
#: The site column read when neither ``ingest_data.site_column`` nor a schema names one.
DEFAULT_SITE_COLUMN = "site"
#: How a user of ``ingest_data`` names the site column (the CLI's ``schema infer`` says its flag).
SITE_COLUMN_SETTING = "ingest_data.site_column"
_SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True)
class SiteTable:
    """One hospital's rows of one table, and the file they came from."""

    hospital: str
    file: Path
    frame: pd.DataFrame


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame (CSV columns keep pandas' inferred types)."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{path}: unsupported table format {suffix!r}; use one of {TABLE_SUFFIXES}")
    try:
        # Python's open for both formats: reads then show in Python's audit events
        with open(path, "rb") as handle:
            frame = pd.read_csv(handle) if suffix == ".csv" else pd.read_parquet(handle)
    except Exception as err:
        raise DataError(f"cannot read {path}: {err}") from err
    frame.columns = [str(c).strip() for c in frame.columns]  # ' age' in a hand-made header
    return frame


def _table_file(folder: Path, table: str | None) -> Path:
    """``<table>.csv|.parquet`` in ``folder``, or its only table file when ``table`` is None."""
    candidates = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
    )
    if table is not None:
        candidates = [p for p in candidates if p.stem == table]
        wanted = f"{table}{{{','.join(TABLE_SUFFIXES)}}}"
    else:
        wanted = f"one table file ({', '.join(TABLE_SUFFIXES)})"
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise DataError(f"{folder}: expected exactly {wanted}; found {found}")
    return candidates[0]


def _site_name(value: object, file: Path, column: str) -> str:
    name = str(value)
    if not _SITE_NAME.fullmatch(name):
        raise DataError(
            f"{file}: site {name!r} in column {column!r} is not a usable hospital name "
            "(letters, digits, '_', '.', '-'; at most 63 characters)"
        )
    return name


def _split_by_site(
    file: Path, frame: pd.DataFrame, site_column: str, setting: str
) -> list[SiteTable]:
    if site_column not in frame.columns:
        raise DataError(
            f"{file}: site column {site_column!r} not found (columns: {list(frame.columns)}); "
            f"{setting} (the column naming each row's hospital), or give one folder per hospital"
        )
    if frame[site_column].isna().any():
        rows = frame.index[frame[site_column].isna()].tolist()[:5]
        raise DataError(f"{file}: column {site_column!r} is empty in rows {rows}")
    out = []
    for value, rows in frame.groupby(site_column, sort=True):
        hospital = _site_name(value, file, site_column)
        out.append(SiteTable(hospital, file, rows.drop(columns=[site_column])))
    return out


def site_tables(
    source: Path,
    *,
    table: str | None,
    site_column: str,
    setting: str = f"set {SITE_COLUMN_SETTING}",
) -> list[SiteTable]:
    """One :class:`SiteTable` per hospital, sorted by hospital name.

    ``source`` is a table file with a site column, a folder holding such a file, or a folder
    with one sub-folder per hospital (named after it). ``table`` names the file to read
    (``patients`` reads ``patients.csv`` or ``patients.parquet``); None takes a folder's only
    table file. ``setting`` tells a user how to name another site column when it is missing
    (``"pass --site-column"`` for ``schema infer``).
    """
    source = Path(source)
    if source.is_file():
        tables = _split_by_site(source, read_table(source), site_column, setting)
    elif source.is_dir():
        folders = sorted(
            p for p in source.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))
        )
        loose = [p.name for p in source.iterdir() if p.suffix.lower() in TABLE_SUFFIXES]
        if folders and loose:
            raise DataError(
                f"{source}: holds both hospital folders ({', '.join(f.name for f in folders)}) "
                f"and table files ({', '.join(sorted(loose))}); keep one layout"
            )
        if folders:
            tables = []
            for folder in folders:
                file = _table_file(folder, table)
                frame = read_table(file)
                hospital = _site_name(folder.name, file, "<folder name>")
                tables.append(
                    SiteTable(hospital, file, frame.drop(columns=[site_column], errors="ignore"))
                )
        else:
            file = _table_file(source, table)
            tables = _split_by_site(file, read_table(file), site_column, setting)
    else:
        raise DataError(f"ingest_data.path={str(source)!r} does not exist")
    if len(tables) < 2:
        raise DataError(
            f"{source}: found {len(tables)} hospital(s) ({', '.join(t.hospital for t in tables)}); "
            "a federation needs at least 2"
        )
    return tables


def check_site_sizes(tables: Iterable[SiteTable], *, minimum: int) -> None:
    """Every hospital has at least ``minimum`` rows to split into train/val/test."""
    small = [t for t in tables if len(t.frame) < minimum]
    if small:
        raise DataError(
            "too few rows to train and evaluate (ingest_data.min_rows_per_site="
            f"{minimum}): "
            + "; ".join(f"{t.file}: site {t.hospital!r} has {len(t.frame)}" for t in small)
        )


def concat_sites(tables: Sequence[SiteTable], *, site_column: str = "hospital") -> pd.DataFrame:
    """The hospitals' rows in one frame, with a ``site_column`` naming each row's hospital."""
    frames = [t.frame.assign(**{site_column: t.hospital}) for t in tables]
    return pd.concat(frames, ignore_index=True)
