"""Figure 3: bytes per round per hospital for full-model federation of the task's model.

Two views of the same thing:

* serialized: the train message (global weights + config) and the reply (weights + metrics
  + identity) built exactly as ``privfed.federated`` builds them, deflated into the objects
  flwr 1.41 transfers (one HTTP request per object per hop); summed bytes and object count;
* measured: Flower's own per-run network traffic from the SuperLink (``flwr ls``) for runs of
  R1 and R2 rounds in one federation; (bytes(R2) - bytes(R1)) / (R2 - R1) / hospitals removes
  the per-run constant (FAB, final evaluation, run setup).

LoRA belongs to another model (the ``notes`` task's GPT-2): ``python -m benchmarks notes``
measures its bytes beside full fine-tuning. SecAgg+'s bytes are measured side by side with
plain FedAvg by ``python -m benchmarks secure_aggregation``.

    python -m benchmarks communication [--profiles tiny default full] [--rounds 2 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from benchmarks.common import make_config, md_table, prepare_data, wait_for_quiet, write_result
from privfed.config import PrivFedConfig
from privfed.federated.client import CONFIG_KEY
from privfed.federated.launcher import LocalFederation, RunSpec
from privfed.partitions import hospital_dirs
from privfed.tasks import get_task


def deflated(record: RecordDict) -> dict[str, int]:
    """Bytes and object count of ``record`` as Flower's object store transfers it."""
    objects = get_all_nested_objects(record)
    return {
        "bytes": sum(len(o.deflate()) for o in objects.values()),
        "objects": len(objects),
    }


def message_sizes(cfg: PrivFedConfig) -> dict[str, Any]:
    """Serialized train message and reply of one hospital in one round (non-DP)."""
    task = get_task(cfg.base.task, cfg)
    model = task.build_model()
    arrays = ArrayRecord(model.state_dict())
    config = ConfigRecord(
        {CONFIG_KEY: json.dumps(cfg.model_dump(mode="json")), "dp": False, "server-round": 1}
    )
    metric_names = ["accuracy", "loss", "macro_auroc", "macro_f1", "n"]
    timing_names = ["load_s", "deserialize_s", "validate_s", "train_s", "serialize_s"]
    metrics = MetricRecord(
        {
            "num-examples": 390,
            "train_loss": 0.5,
            **{f"val_{k}": 0.5 for k in metric_names},
            **{f"t_{k}": 0.1 for k in timing_names},
        }
    )
    down = deflated(RecordDict({"arrays": arrays, "config": config}))
    up = deflated(
        RecordDict(
            {"arrays": arrays, "metrics": metrics, "ident": ConfigRecord({"hospital": "h_1"})}
        )
    )
    raw = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "tensors": len(model.state_dict()),
        "raw_weight_bytes": raw,
        "down": down,
        "up": up,
        "config_bytes": len(config.deflate()),
        "per_round_per_hospital_bytes": down["bytes"] + up["bytes"],
    }


def measured(profile: str, rounds: list[int]) -> dict[str, Any]:
    """Flower's network traffic for runs of each length in one federation; the per-round slope."""
    cfg = make_config(
        profile, {"privacy": {"enabled": False}, "register_model": {"candidate": "federated"}}
    )
    out: dict[str, Any] = {"profile": profile, "hospitals": cfg.base.num_hospitals, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="privfed-bench-comm-") as tmp:
        parts = prepare_data(cfg, Path(tmp) / "data")
        with LocalFederation(cfg, hospital_dirs(parts), Path(tmp) / "fed") as federation:
            for r in rounds:
                fed = cfg.train_federated.model_copy(update={"rounds": r})
                federation.cfg = cfg.model_copy(update={"train_federated": fed})
                out["load"] = wait_for_quiet()
                t0 = time.monotonic()
                run = federation.run(RunSpec(name=f"r{r}", out_dir=Path(tmp) / f"r{r}", dp=False))
                traffic = run["flower"].get("network-traffic") or {}
                out["runs"][r] = {"traffic": traffic, "wall_s": time.monotonic() - t0}
                print(f"  {r} rounds: {traffic}", flush=True)
    lo, hi = min(rounds), max(rounds)
    total = {r: out["runs"][r]["traffic"].get("total-bytes") for r in rounds}
    if total[lo] is not None and total[hi] is not None and hi > lo:
        out["per_round_per_hospital_bytes"] = (total[hi] - total[lo]) / (hi - lo) / out["hospitals"]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks communication")
    parser.add_argument("--profiles", nargs="+", default=["tiny", "default", "full"])
    parser.add_argument("--measure-profile", default="default")
    parser.add_argument("--rounds", type=int, nargs=2, default=[2, 4])
    args = parser.parse_args(argv)
    sizes = {p: message_sizes(make_config(p)) for p in args.profiles}
    real = measured(args.measure_profile, args.rounds)
    rows = []
    for p, s in sizes.items():
        measured_cell = (
            f"{real['per_round_per_hospital_bytes'] / 1024:.1f}"
            if p == args.measure_profile and "per_round_per_hospital_bytes" in real
            else "—"
        )
        rows.append(
            [
                p,
                f"{s['parameters']:,}",
                f"{s['raw_weight_bytes'] / 1024:.1f}",
                f"{s['down']['bytes'] / 1024:.1f} ({s['down']['objects']})",
                f"{s['up']['bytes'] / 1024:.1f} ({s['up']['objects']})",
                f"{s['per_round_per_hospital_bytes'] / 1024:.1f}",
                measured_cell,
                "see notes",
                "see secure_aggregation",
            ]
        )
    markdown = (
        "Bytes per round per hospital, full-model FedAvg (KiB; objects = Flower object-store "
        "transfers per hop)\n\n"
        + md_table(
            [
                "profile",
                "parameters",
                "raw float32 weights",
                "down: weights+config (objects)",
                "up: weights+metrics (objects)",
                "serialized total",
                "measured by Flower (SuperLink in+out)",
                "LoRA",
                "with SecAgg+",
            ],
            rows,
        )
    )
    write_result(
        "communication",
        {"serialized": sizes, "measured": real},
        markdown,
        "python -m benchmarks communication",
    )


if __name__ == "__main__":
    main()
