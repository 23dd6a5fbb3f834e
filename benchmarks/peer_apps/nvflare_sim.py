"""NVIDIA FLARE's simulator on the peers workload: ``python nvflare_sim.py WORKLOAD_DIR``.

Runs in ``benchmarks/peer_apps/.venv-nvflare`` (requirements-nvflare.txt), never in the project's
environment. FLARE's PyTorch FedAvg recipe (its FedAvg controller, weighted by each site's
``NUM_STEPS_CURRENT_ROUND``), one simulated site per hospital, one thread per site.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe
from nvflare.recipe.sim_env import SimEnv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import WorkloadModel  # noqa: E402

RUNNER = "nvflare_simulator"


def main(folder: Path) -> None:
    plan = json.loads((folder / "plan.json").read_text())
    hospitals = plan["hospitals"]
    recipe = FedAvgRecipe(
        name="peers",
        model=WorkloadModel(str(folder)),
        min_clients=len(hospitals),
        num_rounds=plan["rounds"],
        train_script=str(Path(__file__).resolve().parent / "nvflare_client.py"),
        train_args=f"--workload {folder}",
    )
    env = SimEnv(
        clients=hospitals,
        num_clients=len(hospitals),
        num_threads=len(hospitals),
        workspace_root=str(folder / "nvflare-workspace"),
    )
    t_launch = time.time()
    recipe.execute(env)
    run = {"t_launch": t_launch, "t_end": time.time()}
    (folder / f"run-{RUNNER}.json").write_text(json.dumps(run))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
