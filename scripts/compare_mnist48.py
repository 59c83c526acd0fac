"""Meta-loss of every optimizer on the training objective (MNIST 48-48-10, batch 64).

The yardstick of the meta-training issue: on initial iterates and minibatch streams
not used in meta-training (experiments.EVAL_SEEDS), Σ_{t=1..T} f(x_t) of Predicted Step
Descent, L2L and the seven tuned baselines, each as mean ± std over seeds.  Baseline
runs come from (or go into) the experiment cache results/grid.  Writes
results/psd/comparison.json with provenance and prints the table.

    python scripts/compare_mnist48.py [--psd results/psd/psd_mnist48.pt] [--l2l results/l2l/l2l_mnist48.pt]
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from l2o import experiments, l2l
from l2o.baselines import BASELINES
from l2o.data import make_problem
from l2o.gps import load_policy
from l2o.learned import evaluate_l2l, evaluate_psd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--psd", default="results/psd/psd_mnist48.pt")
    ap.add_argument("--l2l", default="results/l2l/l2l_mnist48.pt")
    ap.add_argument("--out", default="results/psd/comparison.json")
    ap.add_argument("--horizon", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=10,
                    help="held-out seeds 0..N-1 (never used in tuning, meta-training or "
                         "choosing π)")
    a = ap.parse_args()
    if a.seeds < 2:
        ap.error("--seeds must be ≥ 2")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    seeds = list(range(a.seeds))
    specs = [experiments.ExperimentSpec("mnist", 48, 48, 64, a.horizon, name, s)
             for name in BASELINES for s in seeds]
    results = experiments.run_grid(specs, experiments.GRID_DIR, workers=a.workers, progress=False)
    P = make_problem("mnist", 48, 48, batch_size=64)
    policy, fcfg, meta = load_policy(a.psd)
    results += evaluate_psd(P, policy, seeds, a.horizon, fcfg)
    results += evaluate_l2l(P, l2l.load_l2l(a.l2l), seeds, a.horizon)
    rows = experiments.summary_table(results)
    print(experiments.format_summary(rows))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({
        "rows": rows, "seeds": seeds, "horizon": a.horizon, "psd_file": a.psd, "psd_meta": meta,
        "l2l_file": a.l2l, "command": " ".join(["python scripts/compare_mnist48.py", *sys.argv[1:]]),
        "git_commit": commit, "wall_time_s": time.perf_counter() - t0,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
    }, indent=1, default=str))


if __name__ == "__main__":
    main()
