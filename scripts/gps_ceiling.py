"""How far can a gradient-linear optimizer go on the small GPS objective?

Chapter 5 asks why convolutional GPS improves on its momentum teacher but stalls above
Adam on MNIST-8 (8-8-10 net, batch 64, T = 100).  ψ is linear in the state features Φ,
and on this objective the gradient features are nearly raw gradients: the median
|∂f̂/∂x_j| is about 5e-4, far below the constant 1 in Φ's denominators
``|ḡ| + 1``.  A linear ψ can therefore set a step size per coordinate group and per
time step, and filter the gradient history, but it cannot rescale coordinates one by
one as Adam, AdaGrad and RMSprop do.  This script measures, on the tuning seeds
(1000-1002):

1. the seven tuned baselines' family on this objective (learning-rate grids), to
   pick the teacher and the reference;
2. momentum with one learning rate per coordinate group (W1, b1, W2, b2), searched
   on a grid: the best a per-group step size buys over one global step size;
3. the spread of the minibatch gradients (the scale Φ's offset is compared with).

    python scripts/gps_ceiling.py --out results/gps_ceiling

Writes ``ceiling.json`` and ``provenance.json``.
"""

import argparse
import itertools
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

SIZES = (8, 8)
HORIZON = 100
SEEDS = [1000, 1001, 1002]
GRIDS = {
    "momentum": [{"lr": lr, "momentum": b} for lr in (0.1, 0.3, 1.0, 3.0) for b in (0.5, 0.9, 0.95)],
    "adam": [{"lr": lr} for lr in (0.003, 0.01, 0.03, 0.1)],
    "adagrad": [{"lr": lr} for lr in (0.03, 0.1, 0.3, 1.0)],
    "rmsprop": [{"lr": lr} for lr in (0.01, 0.03, 0.1, 0.3)],
    "sgd": [{"lr": lr} for lr in (0.3, 1.0, 3.0, 10.0)],
}
GROUP_LRS = [(0.3, 1.0, 3.0), (0.3, 1.0, 3.0, 10.0), (0.3, 1.0, 3.0), (0.3, 1.0, 3.0, 10.0)]


def per_group_momentum(P, x0, idx, lrs, beta):
    """Meta-loss (mean over seeds) of momentum SGD with one learning rate per group."""
    lr = torch.tensor(lrs, dtype=x0.dtype)[P.group_index]
    x, v, total = x0.clone(), torch.zeros_like(x0), 0.0
    for t in range(idx.shape[0]):
        _, g = P.minibatch_loss_and_grad(x, idx[t])
        v = beta * v - g
        x = x + lr * v
        f = P.true_loss(x)
        if not torch.isfinite(f).all():
            return float("inf")
        total += float(f.mean())
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/gps_ceiling")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from l2o import experiments as ex
    from l2o.data import make_problem

    t0 = time.time()
    P = make_problem("mnist", *SIZES, batch_size=64)
    out = {"objective": f"MNIST-{SIZES[0]}, {SIZES[0]}-{SIZES[1]}-10 net, batch 64, T={HORIZON}",
           "seeds": SEEDS, "baselines": {}}
    for name, grid in GRIDS.items():
        rows = []
        for hp in grid:
            runs = ex.train_many(P, name, HORIZON, SEEDS, hparams=hp)
            rows.append({"hparams": hp, "meta_loss": float(np.mean([ex.meta_loss(r.true_loss)
                                                                     for r in runs]))})
        out["baselines"][name] = sorted(rows, key=lambda r: r["meta_loss"])
        print(name, out["baselines"][name][0], flush=True)

    x0 = torch.stack([ex.initial_iterate(P, s) for s in SEEDS])
    idx = torch.stack([ex.minibatch_stream(P, s, HORIZON) for s in SEEDS], 1)
    beta = out["baselines"]["momentum"][0]["hparams"]["momentum"]
    rows = [{"lrs": list(lrs), "momentum": beta,
             "meta_loss": per_group_momentum(P, x0, idx, lrs, beta)}
            for lrs in itertools.product(*GROUP_LRS)]
    rows.sort(key=lambda r: r["meta_loss"])
    out["per_group_momentum"] = {"groups": [g.name for g in P.groups], "best": rows[:10],
                                 "n_tried": len(rows)}
    print("per-group momentum", rows[0], flush=True)

    _, g = P.minibatch_loss_and_grad(x0, idx[0])
    q = np.quantile(g.abs().double().numpy(), [0.1, 0.5, 0.9, 0.99])
    out["gradient_abs_quantiles_t0"] = dict(zip(["q10", "q50", "q90", "q99"], map(float, q)))
    print("gradient |g| quantiles at t=0", out["gradient_abs_quantiles_t0"], flush=True)

    dest = Path(a.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "ceiling.json").write_text(json.dumps(out, indent=1))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (dest / "provenance.json").write_text(json.dumps({
        "command": "python scripts/gps_ceiling.py --out " + a.out, "git_commit": commit,
        "wall_time_s": time.time() - t0, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1}},
        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
