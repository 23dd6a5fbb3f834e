"""Figure 5: ``dvc repro`` of the default profile end to end, per stage, then a no-change rerun.

Runs in a temporary git + DVC copy of the project's tracked files (as the integration tests'
``project`` fixture builds it, but with the profile params.yaml selects), so the working tree
and its DVC cache are never touched. Stage times are the intervals between DVC's "Running
stage" lines, timestamped as they stream (they include DVC's own hashing and caching of each
stage's outputs, a real cost of the pipeline).

    python -m benchmarks pipeline [--profile default] [--compare-live]

``--compare-live`` also runs a second fresh copy with ``register_model.live: false`` (only
``register_model`` logs to MLflow, at the end): each stage's cost of logging into the
pipeline's MLflow run as it runs, side by side in one benchmark run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import ROOT, md_table, wait_for_quiet, write_result

BIN = Path(sys.executable).parent
STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false",
    }


def copy_project(dst: Path, profile: str, *, live: bool = True) -> Path:
    """Tracked files (no tests, benchmarks or dvc.lock) into a fresh git repository;
    ``live``: ``register_model.live`` (every stage logs to MLflow as it runs)."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        if rel.startswith(("tests/", "benchmarks/")) or rel == "dvc.lock":
            continue
        if not (ROOT / rel).is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["base"]["profile"] = profile
    params["register_model"]["live"] = live
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "copy"],
    ):
        subprocess.run(cmd, cwd=dst, env=_env(), check=True)
    # dvc.yaml's stages call .venv/bin/privfed: this environment's (not in git)
    (dst / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    return dst


def timed_repro(project: Path, log_path: Path) -> dict[str, Any]:
    """Run ``dvc repro``; seconds per stage from the streamed output, and the total."""
    t0 = time.monotonic()
    marks: list[tuple[str, float]] = []
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            [str(BIN / "dvc"), "repro"],
            cwd=project,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            match = STAGE_LINE.search(line)
            if match:
                marks.append((match.group(1), time.monotonic() - t0))
        code = proc.wait()
    total = time.monotonic() - t0
    if code != 0:
        raise RuntimeError(f"dvc repro failed ({code}); see {log_path}")
    stages = {}
    for i, (name, start) in enumerate(marks):
        end = marks[i + 1][1] if i + 1 < len(marks) else total
        stages[name] = end - start
    text = log_path.read_text()
    return {
        "total_s": total,
        "stages_s": stages,
        "before_first_stage_s": marks[0][1] if marks else total,
        "skipped": len(re.findall(r"didn't change, skipping", text)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks pipeline")
    parser.add_argument("--profile", default="default")
    parser.add_argument(
        "--compare-live",
        action="store_true",
        help="also time a copy with register_model.live: false, side by side",
    )
    args = parser.parse_args(argv)
    off = None
    with tempfile.TemporaryDirectory(prefix="privfed-bench-dvc-") as tmp:
        project = copy_project(Path(tmp) / "project", args.profile)
        load = wait_for_quiet()
        first = timed_repro(project, Path(tmp) / "repro1.log")
        print(f"  first repro {first['total_s']:.1f} s", flush=True)
        load2 = wait_for_quiet()
        second = timed_repro(project, Path(tmp) / "repro2.log")
        print(f"  no-change rerun {second['total_s']:.1f} s", flush=True)
        tail = (Path(tmp) / "repro2.log").read_text()[-2000:]
        if args.compare_live:
            quiet = copy_project(Path(tmp) / "project-live-off", args.profile, live=False)
            wait_for_quiet()
            off = timed_repro(quiet, Path(tmp) / "repro-live-off.log")
            print(f"  first repro, live off {off['total_s']:.1f} s", flush=True)
    markdown = _markdown(args.profile, first, second, off)
    write_result(
        "pipeline",
        {
            "profile": args.profile,
            "load": [load, load2],
            "first": first,
            "no_change": second,
            "no_change_log_tail": tail,
            "live_off": off,
        },
        markdown,
        f"python -m benchmarks pipeline --profile {args.profile}"
        + (" --compare-live" if off else ""),
    )


def _markdown(
    profile: str, first: dict[str, Any], second: dict[str, Any], off: dict[str, Any] | None
) -> str:
    """Seconds per stage; with ``off``, beside the run that logged nothing until registration."""
    header = ["stage", "seconds"] + (["seconds, live off", "live logging costs"] if off else [])

    def row(name: str, on_s: float, off_s: float | None) -> list[str]:
        cells = [name, f"{on_s:.1f}"]
        if off is not None:
            cells += ["–", "–"] if off_s is None else [f"{off_s:.1f}", f"{on_s - off_s:+.1f}"]
        return cells

    rows = [
        row(name, s, (off or {}).get("stages_s", {}).get(name))
        for name, s in first["stages_s"].items()
    ]
    rows.append(row("**total `dvc repro`**", first["total_s"], off and off["total_s"]))
    rows.append(row("**no-change rerun**", second["total_s"], None))
    return (
        f"`dvc repro` of the {profile} profile in a fresh copy (seconds"
        + ("; live: every stage logs to MLflow as it runs, the default" if off else "")
        + ")\n\n"
        + md_table(header, rows)
        + f"\nNo-change rerun: {second['skipped']} stage(s) reported unchanged, "
        f"{len(second['stages_s'])} rerun.\n"
    )


if __name__ == "__main__":
    main()
