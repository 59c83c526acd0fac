"""Benchmark: wall time of each GPS phase for one iteration at the paper's 48-48-10 scale.

Runs ψ0's initialisation and one GPS iteration on MNIST-48 (T = 400, batch 64) with the
default :class:`~l2o.gps.GPSConfig` except the number of Adam steps on π, which is cut
to ``--policy-steps`` so the benchmark stays short; the per-step cost of π's training is
printed so that the full budget can be extrapolated.  Prints numbers; asserts nothing.

    python scripts/bench_gps.py [--samples 20] [--policy-steps 5] [--threads 1]
                                [--grad-scale rms --adam-lr 0.05]
"""

import argparse
import json
import time

import torch

from l2o import baselines
from l2o.data import make_problem
from l2o.features import FeatureConfig
from l2o.gps import ConvolutionalGPS, GPSConfig
from l2o.policy import PolicyConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--policy-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--horizon", type=int, default=400)
    ap.add_argument("--grad-scale", default="offset", choices=("offset", "rms"),
                    help="FeatureConfig.grad_scale (rms: the deviation of chapter 5)")
    ap.add_argument("--adam-lr", type=float, default=None,
                    help="use an Adam teacher with this step instead of tuned momentum")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    P = make_problem("mnist", 48, 48, batch_size=64)
    cfg = GPSConfig(horizon=a.horizon, num_samples=a.samples, num_iterations=1,
                    policy_steps=a.policy_steps, pretrain_steps=a.policy_steps)
    teacher = dict(baselines.default_hparams("momentum"))
    if a.adam_lr is not None:
        teacher = {"name": "adam", "lr": a.adam_lr}
    gps = ConvolutionalGPS(P, cfg, FeatureConfig(grad_scale=a.grad_scale), PolicyConfig(), teacher)
    t0 = time.perf_counter()
    gps.initialize()
    t_init = time.perf_counter() - t0
    d = gps.iterate()
    times = d["times"]
    policy_total = sum(v for k, v in times.items() if k.startswith("policy_"))
    inner_updates = (cfg.inner_iterations - 1) * 4  # no θ-step on the first inner of iteration 0
    per_step = policy_total / max(1, inner_updates * cfg.policy_steps)
    out = {
        "problem": repr(P), "samples": cfg.num_samples, "horizon": cfg.horizon,
        "threads": a.threads, "grad_scale": a.grad_scale, "teacher": teacher,
        "init_s (incl. teacher rollouts + pretraining)": round(t_init, 1),
        "iteration_s": round(d["wall"], 1),
        "phases_s": {k: round(v, 2) for k, v in times.items()},
        "pi_adam_step_s": round(per_step, 3),
        "extrapolated_policy_s_per_iteration_at_default_steps": round(
            per_step * 4 * cfg.inner_iterations * GPSConfig().policy_steps, 0),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
