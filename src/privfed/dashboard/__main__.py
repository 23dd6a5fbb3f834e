"""``python -m privfed.dashboard``: the same as ``privfed dashboard``."""

from __future__ import annotations

import sys

from privfed.cli import main

if __name__ == "__main__":
    sys.exit(main(["dashboard", *sys.argv[1:]]))
