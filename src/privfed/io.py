"""File I/O that never leaves a half-written output behind and names the bad file on failure."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from privfed.stale import owned_prefix, remove_stale

__all__ = [
    "DataError",
    "atomic_path",
    "atomic_dir",
    "jsonable",
    "write_json",
    "write_jsonl",
    "read_jsonl",
    "read_json",
    "write_parquet",
    "read_parquet",
    "write_text",
]


class DataError(ValueError):
    """An input file is missing, unreadable or has the wrong content."""


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


#: Read once at import: probing it sets the process umask to 0 for a moment.
_UMASK = _read_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, f".{path.name}.")  # what a killed writer of ``path`` left
    fd, tmp = tempfile.mkstemp(
        prefix=owned_prefix(f".{path.name}."), suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o666 & ~_UMASK)  # mkstemp makes it private; a published file is not
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` whole when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, f".{path.name}.")  # a half-written folder of a killed run
    tmp = Path(tempfile.mkdtemp(prefix=owned_prefix(f".{path.name}."), dir=path.parent))
    tmp.chmod(0o777 & ~_UMASK)  # mkdtemp makes it private; the published folder is not
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)  # put the previous output back rather than lose it
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def jsonable(value: Any) -> Any:
    """Strict JSON has no NaN or infinity: write them as the strings 'nan', 'inf', '-inf'."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json(data: Any, path: str | Path) -> None:
    text = json.dumps(
        jsonable(data), indent=2, sort_keys=True, default=_json_default, allow_nan=False
    )
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from None


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | Path) -> None:
    """One JSON object per line, UTF-8 (temp file, then rename: never a half-written file)."""
    with atomic_path(path) as tmp:
        tmp.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
        )


def read_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank line; errors name the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from None


def write_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def read_parquet(path: str | Path) -> pd.DataFrame:
    """Read a Parquet file, turning pyarrow's errors into one that names the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    try:
        # Python's open, not pyarrow's own: every data read then shows in Python's audit events
        # (the integration tests use them to prove which process read which hospital's files)
        with open(path, "rb") as handle:
            return pd.read_parquet(handle)
    except Exception as err:  # pyarrow raises several unrelated types for corrupt files
        raise DataError(f"cannot read Parquet file {path}: {err}") from err
