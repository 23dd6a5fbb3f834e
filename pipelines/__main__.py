"""``python -m pipelines compile``: this checkout's pipelines as IR YAML.

``privfed pipeline compile`` (and ``run-local``, ``submit``, ``schedule``, which start from the
compiled IR) run this with the checkout as working directory, so ``pipelines`` and
``components`` are imported from here and the installed package never reaches into a checkout.
A params error exits with :data:`~privfed.kubeflow.project.CONFIG_ERROR_EXIT` and its message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from privfed.config import ConfigError
from privfed.kubeflow.project import CONFIG_ERROR_EXIT, PIPELINES, write_ir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    comp = actions.add_parser("compile", help="write a pipeline's IR YAML")
    comp.add_argument("--pipeline", default="main", choices=list(PIPELINES))
    comp.add_argument("--params", default="params.yaml", help="defaults for the pipeline")
    comp.add_argument("--output", help="default: the committed pipelines/<name>.yaml")
    args = parser.parse_args(argv)

    from pipelines import privfed_pipeline

    definition = PIPELINES[args.pipeline]
    try:
        pipeline = getattr(privfed_pipeline, definition.builder)(Path(args.params))
    except ConfigError as err:
        print(err)
        return CONFIG_ERROR_EXIT
    write_ir(pipeline, Path(args.output or definition.package))
    return 0


if __name__ == "__main__":
    sys.exit(main())
