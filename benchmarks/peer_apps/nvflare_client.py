"""NVIDIA FLARE Client API script of the peers workload: one hospital (site) of the simulator.

NVIDIA FLARE copies this file (and ``workload.py``) into its job; ``nvflare_sim.py`` starts it.
"""

from __future__ import annotations

import argparse
import time

import nvflare.client as flare
import torch
from workload import WorkloadModel, load_workload

RUNNER = "nvflare_simulator"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", required=True)
    args = parser.parse_args()
    flare.init()
    site = flare.get_site_name()
    work = load_workload(args.workload, site)
    model = WorkloadModel(args.workload)
    while flare.is_running():
        received = flare.receive()
        t_start = time.time()
        model.load_state_dict({k: torch.as_tensor(v) for k, v in received.params.items()})
        server_round = received.current_round + 1
        out = work.local_round(model, server_round)
        flare.send(
            flare.FLModel(
                params={k: v.detach().clone() for k, v in model.state_dict().items()},
                metrics={"val_loss": out["val_loss"], "train_loss": out["train_loss"]},
                meta={"NUM_STEPS_CURRENT_ROUND": out["steps"]},
            )
        )
        work.record(RUNNER, server_round, t_start, val_loss=out["val_loss"])


if __name__ == "__main__":
    main()
