"""Benchmark: wall time of each GPS phase at the paper's 48-48-10 scale.

Two modes; both print numbers and assert nothing.

- Run (default): ψ0's initialisation and ``--iterations`` GPS iterations on MNIST-48
  (T = 400, batch 64) with the default :class:`~l2o.gps.GPSConfig` (N = 20 samples,
  200 Adam steps on π per inner iteration, 50-step BPTT windows), one thread; prints the
  per-phase times and the extrapolation to the default budget (15 iterations).
- ``--history FILE``: the same summary from a real meta-training run's ``history.json``
  (e.g. ``results/psd/history.json``), without running anything.

    python scripts/bench_gps.py [--iterations 1] [--samples 20] [--policy-steps 200]
                                [--teacher adam|momentum] [--grad-scale rms|offset]
    python scripts/bench_gps.py --history results/psd/history.json
"""

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import torch

from l2o import baselines
from l2o.data import make_problem
from l2o.features import FeatureConfig
from l2o.gps import ConvolutionalGPS, GPSConfig
from l2o.policy import PolicyConfig

PHASES = ("sample", "fit", "policy", "lqg", "eval")


def phase_totals(history):
    """Per-iteration seconds of each phase (groups summed): {phase: [s, ...]}."""
    out = defaultdict(list)
    for d in history:
        sums = defaultdict(float)
        for k, v in d["times"].items():
            phase = k.split("_")[0]
            sums["eval" if phase == "eval" else phase] += v
        for p in PHASES:
            out[p].append(sums.get(p, 0.0))
        out["iteration"].append(d["wall"])
    return out


def summary(history, init_s, iterations_target):
    per = phase_totals(history)
    mean = {k: float(np.mean(v)) for k, v in per.items()}
    return {
        "iterations_measured": len(history),
        "init_s": None if init_s is None else round(init_s, 1),
        "mean_phase_s_per_iteration": {k: round(v, 1) for k, v in mean.items()},
        "share_of_iteration": {p: round(mean[p] / mean["iteration"], 3) for p in PHASES},
        f"extrapolated_total_s_for_{iterations_target}_iterations": round(
            (init_s or 0.0) + iterations_target * mean["iteration"], 0),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--history", default=None, help="summarise a run's history.json instead")
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--samples", type=int, default=GPSConfig().num_samples)
    ap.add_argument("--policy-steps", type=int, default=GPSConfig().policy_steps)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--horizon", type=int, default=400)
    ap.add_argument("--grad-scale", default="rms", choices=("offset", "rms"),
                    help="as `python -m l2o.gps train` (default rms)")
    ap.add_argument("--teacher", default="adam", choices=("adam", "momentum"),
                    help="the tuned teacher, as `python -m l2o.gps train` (default adam)")
    a = ap.parse_args()
    target = GPSConfig().num_iterations
    if a.history:
        blob = json.load(open(a.history))
        init = (blob.get("init") or {}).get("wall_init")
        print(json.dumps(summary(blob["history"], init, target), indent=1))
        return
    torch.set_num_threads(a.threads)
    P = make_problem("mnist", 48, 48, batch_size=64)
    cfg = GPSConfig(horizon=a.horizon, num_samples=a.samples, num_iterations=a.iterations,
                    policy_steps=a.policy_steps)
    hp = dict(baselines.default_hparams(a.teacher))
    teacher = ({"name": "adam", "lr": float(hp["lr"])} if a.teacher == "adam" else
               {"lr": float(hp["lr"]), "momentum": float(hp.get("momentum", 0.0))})
    gps = ConvolutionalGPS(P, cfg, FeatureConfig(grad_scale=a.grad_scale), PolicyConfig(), teacher)
    t0 = time.perf_counter()
    gps.initialize()
    t_init = time.perf_counter() - t0
    for _ in range(a.iterations):
        gps.iterate()
    out = {"problem": repr(P), "samples": cfg.num_samples, "horizon": cfg.horizon,
           "policy_steps": cfg.policy_steps, "policy_window": cfg.policy_window,
           "threads": a.threads, "grad_scale": a.grad_scale, "teacher": teacher,
           **summary(gps.history, t_init, target),
           "phases_s_last_iteration": {k: round(v, 2) for k, v in gps.history[-1]["times"].items()}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
