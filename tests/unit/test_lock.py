"""requirements.lock pins what pyproject.toml asks for: a new machine resolves what was tested."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert "==" in line and "@" not in line, f"requirements.lock: not an exact pin: {line!r}"
        name, version = line.split("==", 1)
        pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_dependency_make_installs_is_pinned_within_its_range() -> None:
    # Prepare: what `make install` asks for (the project and its dev extra)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pins = _lock()
    # Assert: each one is locked, at a version its range admits (torch's local +cpu label too)
    for spec in map(Requirement, wanted):
        name = canonicalize_name(spec.name)
        assert name in pins, f"{spec.name} is in pyproject.toml but not in requirements.lock"
        assert spec.specifier.contains(pins[name], prereleases=True) or spec.specifier.contains(
            Version(pins[name].public), prereleases=True
        ), f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {spec}"


def test_the_installed_environment_is_the_locked_one() -> None:
    """What this run imports is what the lock says (a stale venv would hide a drift)."""
    from importlib.metadata import distributions

    pins = _lock()
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in distributions()}
    drift = {
        name: (str(pins[name]), str(installed[name]))
        for name in pins
        if name in installed and installed[name] != pins[name]
    }
    missing = sorted(set(pins) - set(installed))
    assert not drift, f"installed versions differ from requirements.lock: {drift}"
    assert not missing, f"locked but not installed: {missing}"
