"""How the learned optimizers react to the scale of the loss (README, "Robustness").

Trains a 48-48-10 ReLU net on 2,000 MNIST-48 examples (the meta-training objective's
net and data, on a subset) with the shipped Predicted Step Descent policy, the shipped
L2L net and Adam at its tuned step, each from the same three initialisations and
minibatch streams, giving the optimizer the minibatch loss multiplied by a constant
``c`` (``c = 64`` is ``reduction="sum"`` for the minibatch of 64).  Reports the
meta-loss ``sum_{t=1..T} f(x_t)`` of the *unscaled* mean training loss ``f``.

    python scripts/loss_scale.py [--steps 100] [--out results/loss_scale]
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from l2o import data, record
from l2o.baselines import default_hparams
from l2o.l2l import L2LOptimizer
from l2o.policy import PredictedStepDescent

SCALES = (0.1, 1.0, 10.0, 64.0)
SEEDS = (0, 1, 2)


def run(make_opt, scale: float, seed: int, x, y, steps: int, batch: int) -> float:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    opt = make_opt(model.parameters())
    meta = 0.0
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)

        def closure():
            opt.zero_grad()
            loss = scale * F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            meta += float(F.cross_entropy(model(x), y))
    return meta


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--out", default="results/loss_scale")
    a = ap.parse_args()
    torch.set_num_threads(1)
    prep = data.prepare("mnist", 48)
    x, y = prep.x[: a.examples], prep.y[: a.examples]
    tuned_adam = default_hparams("adam")["lr"]
    makers = {
        "psd": lambda ps: PredictedStepDescent.from_pretrained(ps),
        "l2l": lambda ps: L2LOptimizer.from_pretrained(ps),
        "adam": lambda ps: torch.optim.Adam(ps, lr=tuned_adam),
    }
    git, t0 = record.git_state(), time.perf_counter()
    table = {}
    for name, make in makers.items():
        table[name] = {}
        for c in SCALES:
            runs = [run(make, c, s, x, y, a.steps, 64) for s in SEEDS]
            table[name][str(c)] = sum(runs) / len(runs)
            print(f"{name:5s} c = {c:5g}: meta-loss {table[name][str(c)]:.2f}", flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python scripts/loss_scale.py", *sys.argv[1:]])
    record.atomic_write_json(out / "loss_scale.json", {
        "what": "mean over seeds of sum_{t=1..T} f(x_t), f the unscaled mean training loss; "
                "the optimizer sees c times the minibatch mean loss",
        "meta_loss": table, "scales": list(SCALES), "seeds": list(SEEDS), "steps": a.steps,
        "examples": a.examples, "batch": 64, "adam_lr": tuned_adam, "data": prep.describe(),
        **record.provenance(command, round(time.perf_counter() - t0, 1), git)})
    print(f"wrote {out / 'loss_scale.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
