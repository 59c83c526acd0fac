"""Sweep GPS hyperparameters on a small MNIST objective, one process per variant.

Used to find settings under which convolutional GPS improves on its teacher (issue
"Convolutional GPS-BADMM ... shown to learn").  Each variant meta-trains π from the same
momentum teacher and reports, per GPS iteration, the meta-loss of π-only rollouts on
validation streams; the best π is then scored on held-out seeds against the teacher and
Adam (fixed hyperparameters tuned on this objective).

    python scripts/gps_sweep.py --out DIR --workers 14 [--variants JSON]
"""

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np
import torch

BASE = dict(horizon=100, num_samples=5, num_iterations=8, inner_iterations=4,
            coords_per_group=256, cost_subset=10000, policy_steps=100, policy_batch=64,
            pretrain_steps=300, eval_samples=3, seed=0)
VARIANTS = {
    "base": {},
    "kl0.05": {"kl_step": 0.05},
    "kl0.5": {"kl_step": 0.5},
    "var0.1": {"init_var_floor": 0.1},
    "var0.1_kl0.05": {"init_var_floor": 0.1, "kl_step": 0.05},
    "N10": {"num_samples": 10},
    "gmm": {"prior": "gmm"},
    "nu0.1": {"init_nu": 0.1},
    "dual0.3": {"dual_rate": 0.3},
    "inner2_steps200": {"inner_iterations": 2, "policy_steps": 200},
    "strength20": {"prior_strength": 20.0},
    "reg1e-2": {"dynamics_regularization": 1e-2},
    "var0.05_N10": {"init_var_floor": 0.05, "num_samples": 10},
    "kl0.1_N10_it12": {"kl_step": 0.1, "num_samples": 10, "num_iterations": 12},
}
TEACHER = {"lr": 0.3, "momentum": 0.9}
#: Hand-engineered references scored on the held-out seeds (tuned on this objective).
REFERENCES = {"adam": {"lr": 0.03}}
SIZES = (8, 8)
EVAL_SEEDS = list(range(5))


def problem():
    from l2o.data import make_problem
    return make_problem("mnist", SIZES[0], SIZES[1], batch_size=64)


def score_pi(P, policy, horizon, fcfg):
    """π's mean meta-loss on EVAL_SEEDS, from the baselines' exact initial iterates and streams."""
    from l2o import experiments as ex
    from l2o.learned import evaluate_psd
    runs = evaluate_psd(P, policy, EVAL_SEEDS, horizon, fcfg)
    return float(np.mean([ex.meta_loss(r.true_loss) for r in runs]))


def run_variant(args):
    name, overrides, budget, teacher, out_dir, features = args
    torch.set_num_threads(1)
    from l2o.features import FeatureConfig
    from l2o.gps import ConvolutionalGPS, GPSConfig
    from l2o.policy import PolicyConfig
    P = problem()
    # a variant may also override the features: {"features": {"grad_offset": 1e-3}, ...}
    features = {**features, **overrides.get("features", {})}
    cfg = GPSConfig(**{**BASE, **{k: v for k, v in overrides.items() if k != "features"}})
    fcfg = FeatureConfig(**features)
    gps = ConvolutionalGPS(P, cfg, fcfg, PolicyConfig(), teacher)
    t0 = time.time()
    out = {"name": name, "overrides": overrides, "features": features, "iters": []}
    try:
        out["init"] = gps.initialize()
        out["pi0_val"] = gps.evaluate_pi(cfg.eval_samples)[0]
        best = (out["pi0_val"], {k: v.clone() for k, v in gps.policy.state_dict().items()}, -1)
        while gps.iteration < cfg.num_iterations and time.time() - t0 < budget:
            d = gps.iterate()
            out["iters"].append({"psi": d["psi_cost"], "psi_mean": d.get("psi_mean_cost"),
                                 "pi": d["pi_cost"], "wall": d["wall"],
                                 "groups": {g: {k: v for k, v in gd.items()}
                                            for g, gd in d["groups"].items()}})
            with open(os.path.join(out_dir, f"{name}.partial.json"), "w") as f:
                json.dump(out, f, indent=1, default=float)  # survives an interrupted sweep
            if d["pi_cost"] < best[0]:
                best = (d["pi_cost"], {k: v.clone() for k, v in gps.policy.state_dict().items()},
                        d["iteration"])
        out["last_test"] = score_pi(P, gps.policy, cfg.horizon, fcfg)
        gps.policy.load_state_dict(best[1])
        out["best_iter"] = best[2]
        out["best_test"] = score_pi(P, gps.policy, cfg.horizon, fcfg)
        out["best_test_2T"] = score_pi(P, gps.policy, 2 * cfg.horizon, fcfg)
    except Exception as e:  # noqa: BLE001 - a sweep records failures and goes on
        out["error"] = repr(e)
    out["wall"] = time.time() - t0
    print(json.dumps({k: out.get(k) for k in ("name", "pi0_val", "best_iter", "best_test",
                                              "last_test", "error", "wall")}), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--budget", type=float, default=420.0, help="seconds of GPS per variant")
    ap.add_argument("--variants", default=None, help="JSON object name -> overrides")
    ap.add_argument("--teacher", default=json.dumps(TEACHER),
                    help="momentum teacher hyperparameters as JSON")
    ap.add_argument("--references", default=json.dumps(REFERENCES),
                    help="JSON object optimizer -> hyperparameters scored on EVAL_SEEDS")
    ap.add_argument("--features", default="{}",
                    help="FeatureConfig overrides as JSON, for every variant (e.g. grad_offset)")
    a = ap.parse_args()
    features = json.loads(a.features)
    teacher = json.loads(a.teacher)
    refs = {"teacher": ("momentum", teacher), **{k: (k, v) for k, v in json.loads(a.references).items()}}
    variants = json.loads(a.variants) if a.variants else VARIANTS
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)
    from l2o import experiments as ex
    P = problem()
    ref = {}
    for label, (name, hp) in refs.items():
        rs = ex.train_many(P, name, BASE["horizon"], EVAL_SEEDS, hparams=hp)
        ref[label] = float(np.mean([ex.meta_loss(r.true_loss) for r in rs]))
    print("reference", json.dumps(ref), flush=True)
    with mp.get_context("spawn").Pool(a.workers) as pool:
        results = pool.map(run_variant, [(n, o, a.budget, teacher, a.out, features) for n, o in variants.items()])
    with open(os.path.join(a.out, "sweep.json"), "w") as f:
        json.dump({"reference": ref, "base": BASE, "teacher": teacher, "features": features,
                   "references": {k: v[1] for k, v in refs.items()},
                   "sizes": SIZES, "results": results}, f, indent=1, default=float)


if __name__ == "__main__":
    sys.exit(main())
