"""What ψ and π see, settled by experiment: GPS arms scored on validation seeds.

An *arm* is one way of setting up convolutional GPS on the training objective
(MNIST 48-48-10, batch 64): which state entries ψ's law may read (``psi_feedback``),
which gradient features Φ and Ψ use (the paper's ``|ḡ| + 1`` or a running RMS), and
which teacher ψ0 imitates. Each arm is meta-trained for a few GPS iterations; after every
iteration π (the policy that ships) and ψ's mean are scored on validation seeds that
neither meta-training nor the held-out comparison uses, on common initial iterates and
minibatch streams. The arm whose π scores best becomes the package default.

    python -m l2o.gps_study arms --out results/gps_arms [--arms paper,paper_full_feedback]
                                 [--iterations 4] [--samples 6]

Each arm checkpoints every iteration and resumes; scores are written after every
iteration to ``OUT/ARM/scores.json``, and the table of all arms to ``OUT/arms.json``.
These files write a diverged run's meta-loss as ``Infinity`` (``nonfinite="keep"`` of
:mod:`l2o.record`): the chapters read them as floats.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from l2o import experiments, parallel, record
from l2o.features import FeatureConfig
from l2o.gps import ConvolutionalGPS, GPSConfig, TeacherConfig
from l2o.learned import evaluate_psd, evaluate_psi, meta_losses
from l2o.policy import PolicyConfig
from l2o.problems import MLPProblem

log = logging.getLogger(__name__)

#: Seeds of the initial iterates and minibatch streams that choose between arms and
#: iterations; distinct from the tuning seeds (1000–1002) and the held-out seeds (0–9).
VALIDATION_SEEDS = (2000, 2001, 2002, 2003, 2004)


@dataclass(frozen=True)
class Arm:
    """One GPS set-up: overrides of :class:`GPSConfig`, the features, the teacher."""

    name: str
    description: str
    config: dict = field(default_factory=dict)
    grad_scale: str = "offset"
    teacher: str = "momentum"


ARMS = {a.name: a for a in (
    Arm("paper", "ψ reads what π observes (no x_j); the paper's features; momentum teacher",
        {"psi_feedback": "observed"}),
    Arm("paper_full_feedback", "ψ may feed back on x_j; the paper's features; momentum teacher",
        {"psi_feedback": "full"}),
    Arm("rms_adam", "ψ reads what π observes; RMS-scaled gradient features; Adam teacher",
        {"psi_feedback": "observed"}, grad_scale="rms", teacher="adam"),
    Arm("rms_adam_full_feedback", "ψ may feed back on x_j; RMS-scaled features; Adam teacher",
        {"psi_feedback": "full"}, grad_scale="rms", teacher="adam"),
)}


def teacher_hparams(name: str) -> dict:
    """The teacher ψ0 imitates, at the tuned baseline's hyperparameters (the dict form of
    :meth:`l2o.gps.TeacherConfig.tuned`)."""
    return TeacherConfig.tuned(name).to_dict()


def psi_mean_losses(problem: MLPProblem, gps: ConvolutionalGPS, seeds: Sequence[int],
                    horizon: int) -> np.ndarray:
    """Meta-loss Σ_{t=1..T} f(x_t) of ψ's mean (noise off) on ``seeds``' streams: ``(n,)``."""
    return meta_losses(evaluate_psi(problem, [g.psi for g in gps.groups], gps.fcfg, seeds,
                                    horizon))


def pi_losses(problem: MLPProblem, gps: ConvolutionalGPS, seeds: Sequence[int],
              horizon: int) -> np.ndarray:
    """Meta-loss of π (Predicted Step Descent, mean step) on ``seeds``' streams: ``(n,)``."""
    return meta_losses(evaluate_psd(problem, gps.policy, seeds, horizon, gps.fcfg))


def run_arm(arm: Arm, problem: MLPProblem, out: Path, iterations: int, base: GPSConfig,
            seeds: Sequence[int] = VALIDATION_SEEDS) -> dict:
    """Meta-train one arm for ``iterations`` GPS iterations, scoring π and ψ after each."""
    cfg = dataclasses.replace(base, num_iterations=iterations, **arm.config)
    gps = ConvolutionalGPS(problem, cfg, FeatureConfig(grad_scale=arm.grad_scale),
                           PolicyConfig(), teacher_hparams(arm.teacher), out)
    scores_path = out / "scores.json"
    scores = json.loads(scores_path.read_text()) if scores_path.exists() else {"rows": []}
    if gps.resume():
        log.info("%s: resumed at iteration %d", arm.name, gps.iteration)
    else:
        scores = {"rows": []}
    if not gps.groups:
        gps.init_info = gps.initialize()
    H = cfg.horizon
    if not scores["rows"]:
        pi0 = pi_losses(problem, gps, seeds, H)
        scores["rows"].append({"iteration": gps.iteration, "pi": pi0.tolist(),
                               "psi_mean": psi_mean_losses(problem, gps, seeds, H).tolist()})
    while gps.iteration < iterations:
        d = gps.iterate()
        row = {"iteration": gps.iteration, "pi": pi_losses(problem, gps, seeds, H).tolist(),
               "psi_mean": psi_mean_losses(problem, gps, seeds, H).tolist(),
               "psi_samples": d["psi_cost"], "wall": d["wall"]}
        scores["rows"].append(row)
        log.info("%s iteration %d: π %.2f, ψ mean %.2f (validation)", arm.name, gps.iteration,
                 np.mean(row["pi"]), np.mean(row["psi_mean"]))
        _write_scores(scores_path, scores, arm, cfg, seeds)
    _write_scores(scores_path, scores, arm, cfg, seeds)
    return scores


def summarise(scores: dict) -> dict:
    """Best iteration of π by mean validation meta-loss, and ψ's best mean."""
    rows = scores["rows"]
    pi = np.array([np.mean(r["pi"]) for r in rows])
    psi = np.array([np.mean(r["psi_mean"]) for r in rows])
    best = int(np.nanargmin(pi))
    return {"pi_start": float(pi[0]), "pi_best": float(pi[best]), "pi_best_iteration": best,
            "pi_best_se": float(np.std(rows[best]["pi"], ddof=1) / np.sqrt(len(rows[best]["pi"]))),
            "psi_mean_best": float(np.nanmin(psi)), "pi_last": float(pi[-1]),
            "iterations": len(rows) - 1}


def _write_scores(path: Path, scores: dict, arm: Arm, cfg: GPSConfig, seeds) -> None:
    record.atomic_write_json(path, {**scores, "arm": dataclasses.asdict(arm),
                                    "config": dataclasses.asdict(cfg), "seeds": list(seeds)},
                             nonfinite="keep")


def _score_snapshot(problem: MLPProblem, path: Path, seeds: Sequence[int], horizon: int) -> dict:
    from l2o.gps import load_policy

    torch.set_num_threads(1)
    policy, fcfg, meta = load_policy(path)
    runs = evaluate_psd(problem, policy, list(seeds), horizon, fcfg)
    losses = [float(np.nansum(r.true_loss[1:])) if not r.diverged else float("inf")
              for r in runs]
    return {"file": path.name, "iteration": meta.get("iteration"), "pi": losses,
            "mean": float(np.mean(losses))}


def choose_snapshot(problem: MLPProblem, run_dir: Path, seeds: Sequence[int] = VALIDATION_SEEDS,
                    horizon: int = 400, name: str = "psd_mnist48.pt", workers: int = 1) -> dict:
    """Score every π snapshot of a GPS run on validation seeds; ship the best one.

    Reads ``run_dir/snapshots/pi_iterNN.pt`` (written after every GPS iteration by
    ``python -m l2o.gps train``), scores each as Predicted Step Descent on ``seeds``,
    copies the best to ``run_dir/NAME`` (default ``psd_mnist48.pt``) with the choice in
    its metadata, and writes ``run_dir/validation.json``.
    """
    from l2o.gps import load_policy, save_policy

    files = sorted((run_dir / "snapshots").glob("pi_iter*.pt"))
    if not files:
        raise FileNotFoundError(f"no snapshots in {run_dir / 'snapshots'}: run "
                                "`python -m l2o.gps train` first")
    jobs = [(problem, f, tuple(seeds), horizon) for f in files]
    if workers > 1 and len(jobs) > 1:
        with parallel.process_pool(min(workers, len(jobs))) as pool:
            rows = list(pool.map(_score_snapshot, *zip(*jobs)))
    else:
        rows = [_score_snapshot(*j) for j in jobs]
    for r in rows:
        log.info("%s: validation meta-loss %.2f", r["file"], r["mean"])
    best = min(rows, key=lambda r: r["mean"])
    policy, fcfg, meta = load_policy(run_dir / "snapshots" / best["file"])
    save_policy(run_dir / name, policy, fcfg,
                {**meta, "chosen_on_validation_seeds": list(seeds),
                 "validation_meta_loss": best["mean"], "snapshot": best["file"]})
    out = {"rows": rows, "best": best, "seeds": list(seeds), "horizon": horizon,
           "policy_file": name}
    record.atomic_write_json(run_dir / "validation.json", out, nonfinite="keep")
    return out


def reference_scores(seeds: Sequence[int] = VALIDATION_SEEDS, horizon: int = 400,
                     l2l_file: str | Path | None = None, workers: int = 1) -> dict:
    """Meta-loss of the tuned baselines (and L2L) on the validation seeds' streams.

    The yardstick of the arms: the same initial iterates and minibatches as the arms'
    π and ψ scores. Baseline runs come from (or go into) the experiment cache.
    """
    from l2o import l2l as l2l_mod
    from l2o.baselines import BASELINES
    from l2o.data import make_problem
    from l2o.learned import evaluate_l2l

    specs = [experiments.ExperimentSpec("mnist", 48, 48, 64, horizon, name, s)
             for name in BASELINES for s in seeds]
    runs = experiments.run_grid(specs, experiments.GRID_DIR, workers=workers, progress=False)
    if l2l_file is not None:
        problem = make_problem("mnist", 48, 48, batch_size=64)
        runs += evaluate_l2l(problem, l2l_mod.load_l2l(l2l_file), seeds, horizon)
    out = {}
    for r in runs:
        loss = float(np.nansum(r.true_loss[1:])) if not r.diverged else float("inf")
        out.setdefault(r.optimizer, []).append(loss)
    return {name: {"per_seed": v, "mean": float(np.mean(v))} for name, v in out.items()}


def main(argv=None) -> int:
    """``python -m l2o.gps_study arms``: meta-train and score each arm."""
    import argparse

    from l2o.data import make_problem

    ap = argparse.ArgumentParser(prog="python -m l2o.gps_study")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ar = sub.add_parser("arms", help="meta-train the GPS arms and score them on validation seeds")
    ar.add_argument("--out", default="results/gps_arms")
    ar.add_argument("--arms", default=",".join(ARMS),
                    help=f"comma-separated, from {', '.join(ARMS)}")
    ar.add_argument("--iterations", type=int, default=4)
    ar.add_argument("--samples", type=int, default=6)
    ar.add_argument("--pretrain-steps", type=int, default=200)
    ar.add_argument("--eval-samples", type=int, default=2)
    ar.add_argument("--horizon", type=int, default=400)
    ar.add_argument("--max-step-mult", type=float, default=GPSConfig().max_step_mult)
    ch = sub.add_parser("choose", help="score a GPS run's π snapshots on validation seeds "
                                       "and ship the best")
    ch.add_argument("--run", default="results/psd")
    ch.add_argument("--name", default="psd_mnist48.pt")
    ch.add_argument("--workers", type=int, default=1, help="processes scoring the snapshots")
    rf = sub.add_parser("references", help="the tuned baselines and L2L on the validation "
                                           "seeds (the arms' yardstick)")
    rf.add_argument("--out", default="results/gps_arms/references.json")
    rf.add_argument("--l2l", default="results/l2l/l2l_mnist48.pt")
    a = ap.parse_args(argv)
    if a.cmd == "references":
        torch.set_num_threads(1)
        refs = reference_scores(l2l_file=a.l2l)
        record.atomic_write_json(Path(a.out), {"references": refs, "seeds": list(VALIDATION_SEEDS),
                                               "horizon": 400}, nonfinite="keep")
        for name, r in sorted(refs.items(), key=lambda kv: kv[1]["mean"]):
            print(f"{name:10s} {r['mean']:.2f}")
        return 0
    if a.cmd == "choose":
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        torch.set_num_threads(1)
        try:
            res = choose_snapshot(make_problem("mnist", 48, 48, batch_size=64), Path(a.run),
                                  name=a.name, workers=max(1, a.workers))
        except FileNotFoundError as e:
            ap.exit(2, f"error: {e}\n")
        print(f"chose {res['best']['file']}: validation meta-loss {res['best']['mean']:.2f}")
        return 0
    names = [n.strip() for n in a.arms.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        ap.error(f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
    for name in ("iterations", "samples", "horizon"):
        if getattr(a, name) < 1:
            ap.error(f"--{name} must be ≥ 1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    problem = make_problem("mnist", 48, 48, batch_size=64)
    base = GPSConfig(horizon=a.horizon, num_samples=a.samples, pretrain_steps=a.pretrain_steps,
                     eval_samples=a.eval_samples, max_step_mult=a.max_step_mult)
    out = Path(a.out)
    t0 = time.perf_counter()
    git = record.git_state()
    command = "python -m l2o.gps_study " + " ".join(argv or [])
    table = {}
    if (out / "arms.json").exists():   # arms scored by an earlier invocation stay listed
        table = json.loads((out / "arms.json").read_text()).get("arms", {})
    for name in names:
        scores = run_arm(ARMS[name], problem, out / name, a.iterations, base)
        table[name] = {"description": ARMS[name].description, **summarise(scores)}
        record.atomic_write_json(out / "arms.json", {
            "arms": table, "seeds": list(VALIDATION_SEEDS),
            "base_config": dataclasses.asdict(base),
            **record.provenance(command, time.perf_counter() - t0, git)}, nonfinite="keep")
    for name, row in table.items():
        print(f"{name:24s} π {row['pi_start']:.2f} → best {row['pi_best']:.2f} "
              f"(iteration {row['pi_best_iteration']}), ψ mean best {row['psi_mean_best']:.2f}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
