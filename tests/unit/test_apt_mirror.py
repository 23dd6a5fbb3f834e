"""components/base/apt-mirror.sh: which Debian mirror `make images` debootstraps from.

CI once failed with exit 2 and no message because a `*.list` glob matched nothing and grep's
"no such file" status ended the script under pipefail; these run the script on apt folders laid
out the ways real machines have them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "components" / "base" / "apt-mirror.sh"

DEB822 = """Types: deb
URIs: http://mirror.example.org/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example.org/debian-security
Suites: bookworm-security
Components: main
"""


def _mirror(apt: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), str(apt)], capture_output=True, text=True)


def test_deb822_sources_alone_give_the_mirror(tmp_path: Path) -> None:
    # Prepare: no sources.list, no *.list: only a deb822 file and a disabled list
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "other.list.disabled").write_text("deb https://x/debian a b\n")
    # Execute
    out = _mirror(tmp_path)
    # Assert
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "http://mirror.example.org/debian"


def test_one_line_sources_list_gives_the_mirror(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb http://deb.example.net/debian/ bookworm main\n"
    )
    out = _mirror(tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "http://deb.example.net/debian/"


def test_no_mirror_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "node.sources").write_text(
        "URIs: https://deb.nodesource.com/x\n"
    )
    out = _mirror(tmp_path)
    assert out.returncode == 1
    assert "no Debian mirror" in out.stderr and "DEBIAN_MIRROR" in out.stderr
