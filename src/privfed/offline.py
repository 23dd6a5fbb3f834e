"""Reports that open without the internet: a hospital network often has none.

DVC's ``dvc plots show`` page loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline it
renders nothing. :func:`dvc_plots_template` is DVC's page with those three libraries inlined
(bundled by ``vl-convert``, from the Vega project, out of its own wheel: nothing downloads).
``make install`` writes it to ``.dvc/plots-offline.html``, which ``.dvc/config`` names as
``plots.html_template``.

Usage: ``python -m privfed.offline [PATH]`` (default ``.dvc/plots-offline.html``).
"""

from __future__ import annotations

import argparse
import html
import logging
import re
from pathlib import Path

from privfed.io import write_text

__all__ = ["DVC_TEMPLATE", "VEGA_LITE", "dvc_plots_template", "remote_references"]

log = logging.getLogger(__name__)

#: the Vega-Lite major DVC's plot templates are written for (their ``$schema`` is v5)
VEGA_LITE = "5.21"
#: where ``make install`` writes the template (``.dvc/config`` names it relative to ``.dvc``)
DVC_TEMPLATE = Path(".dvc/plots-offline.html")

#: DVC's page (dvc_render.html.PAGE_HTML) with the CDN ``{scripts}`` replaced by the bundle
_PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot (offline)</title>
    <script>__BUNDLE__</script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>"""

_REMOTE = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


def dvc_plots_template() -> str:
    """DVC's HTML page with Vega, Vega-Lite and Vega-Embed inlined (``vegaEmbed`` global)."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE)
    # DVC fills {plot_divs} and {refresh_tag} with str.replace: the bundle must hold neither
    for placeholder in ("{plot_divs}", "{refresh_tag}", "{scripts}", "</script"):
        if placeholder in bundle:
            raise RuntimeError(f"the Vega bundle contains {placeholder!r}; cannot inline it")
    return _PAGE.replace("__BUNDLE__", bundle)


def remote_references(page: str) -> list[str]:
    """Each ``src=``/``href=`` of ``page`` that points off the machine (what breaks offline)."""
    return [html.unescape(m.group(0)) for m in _REMOTE.finditer(page)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write DVC's offline plots page template.")
    parser.add_argument("path", nargs="?", type=Path, default=DVC_TEMPLATE)
    args = parser.parse_args(argv)
    write_text(dvc_plots_template(), args.path)
    print(f"wrote {args.path} (Vega-Lite {VEGA_LITE} inlined; `dvc plots show` works offline)")


if __name__ == "__main__":
    main()
