"""``privfed <stage>``: the command-line front door that ``dvc.yaml`` calls.

Every stage accepts ``--params`` and ``--in NAME=PATH`` / ``--out NAME=PATH`` overrides of the
default DVC layout. Errors print one readable message and exit non-zero.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from privfed.config import STAGES, ConfigError, load_config
from privfed.logs import setup_logging

log = logging.getLogger("privfed")


def _pairs(values: list[str] | None, flag: str) -> dict[str, Path]:
    out = {}
    for item in values or []:
        if "=" not in item:
            raise ConfigError(f"{flag} expects NAME=PATH, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = Path(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="privfed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        p = sub.add_parser(stage, help=f"run the {stage} stage")
        p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
        p.add_argument("--in", dest="inputs", action="append", metavar="NAME=PATH")
        p.add_argument("--out", dest="outputs", action="append", metavar="NAME=PATH")
    check = sub.add_parser("check-params", help="validate params.yaml and print the result")
    check.add_argument("--params", default="params.yaml")
    return parser


def run_stage(stage: str, params: str, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    from privfed.stages import DEFAULT_PATHS, get_stage

    cfg = load_config(params)
    defaults = DEFAULT_PATHS[stage]
    unknown = (set(inputs) - set(defaults["inputs"])) | (set(outputs) - set(defaults["outputs"]))
    if unknown:
        raise ConfigError(f"stage {stage} has no input/output named {sorted(unknown)}")
    ins = {k: Path(v) for k, v in defaults["inputs"].items()} | inputs
    outs = {k: Path(v) for k, v in defaults["outputs"].items()} | outputs
    log.info("stage %s (task %s, profile %s)", stage, cfg.base.task, cfg.base.profile)
    return get_stage(stage)(cfg, ins, outs)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    warnings.filterwarnings("ignore", category=UserWarning, module="opacus")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check-params":
            cfg = load_config(args.params)
            print(cfg.model_dump_json(indent=2))
            return 0
        run_stage(
            args.command, args.params, _pairs(args.inputs, "--in"), _pairs(args.outputs, "--out")
        )
    except Exception as err:  # one readable line for the user; traceback with PRIVFED_DEBUG=1
        log.error("%s failed: %s: %s", args.command, type(err).__name__, err)
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
