"""Flower's simulation engine (Ray, virtual SuperNodes in one process tree) on the peers workload.

Runs in ``benchmarks/peer_apps/.venv-flower-sim`` (requirements-flower-sim.txt), never in the
project's environment: ``python flower_sim.py WORKLOAD_DIR``. Flower 1.41's Message API, the same
FedAvg (``flwr.serverapp.strategy.FedAvg``) PrivFed's ServerApp drives, no evaluate round (each
hospital validates the received model inside its train reply, as PrivFed's ClientApp does).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import initial_model, load_workload  # noqa: E402

RUNNER = "flower_simulation"
FOLDER = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path.cwd()
PLAN = json.loads((FOLDER / "plan.json").read_text())

client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    t_start = time.time()
    work = load_workload(FOLDER, int(context.node_config["partition-id"]))
    server_round = int(msg.content["config"]["server-round"])
    model = work.initial_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    out = work.local_round(model, server_round)
    reply = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"num-examples": out["n"], "train_loss": out["train_loss"]}),
        }
    )
    work.record(RUNNER, server_round, t_start, val_loss=out["val_loss"])
    return Message(content=reply, reply_to=msg)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    model = initial_model(FOLDER)  # the server holds no hospital's data
    strategy = FedAvg(
        fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=len(PLAN["hospitals"])
    )
    t0 = time.time()
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=PLAN["rounds"],
        train_config=ConfigRecord({}),
    )
    (FOLDER / f"run-{RUNNER}.json").write_text(
        json.dumps({"t_rounds_start": t0, "t_end": time.time()})
    )


if __name__ == "__main__":
    t_launch = time.time()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=len(PLAN["hospitals"]),
        # one CPU per virtual SuperNode: Ray runs as many at once as the machine has cores
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    run = json.loads((FOLDER / f"run-{RUNNER}.json").read_text())
    run["t_launch"] = t_launch
    (FOLDER / f"run-{RUNNER}.json").write_text(json.dumps(run))
