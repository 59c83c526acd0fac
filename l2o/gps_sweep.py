"""Chapter 5's studies on a small objective: the GPS sweep, the linear ceiling, transfer.

Chapter 5 asks whether convolutional GPS learns at all, on an objective small enough to
meta-train many variants (MNIST projected to 8 inputs, an 8-8-10 net, batch 64,
T = 100).  Three studies, each a subcommand of ``python -m l2o.gps_sweep``:

``sweep``
    Meta-trains π from one teacher under each of several variants of
    :class:`~l2o.gps.GPSConfig` (one process per variant, each within a time budget).
    After every GPS iteration π and ψ's mean are scored on *validation* seeds; the π
    that scores best there is then scored on *held-out* seeds, against the teacher and
    references (fixed hyperparameters, or learning rates tuned here on *tuning* seeds).
    The three seed sets are disjoint, and every method sees the same initial iterates
    and minibatch streams of a seed (:func:`l2o.experiments.train`).
``ceiling``
    How far an optimizer linear in the gradient features can go on this objective: the
    baselines' learning-rate grids, momentum with one step size per coordinate group,
    and the spread of the minibatch gradients.
``transfer``
    A learned π against Adam, RMSprop and AdaGrad (steps tuned on the training
    objective) on objectives it never saw: another projection, twice the horizon,
    minibatch 10, two other datasets.

Results are typed (:class:`SweepResult`, :class:`CeilingResult`, :class:`TransferRow`);
their ``to_dict`` is the JSON that chapter 5 reads (``sweep.json``, ``ceiling.json``,
``transfer.json``), with a ``provenance.json`` of :mod:`l2o.record` beside it.  The
scripts ``scripts/gps_sweep.py``, ``gps_ceiling.py`` and ``gps_transfer.py`` are these
commands under their earlier names.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from l2o import experiments, parallel, record
from l2o import rollout as loop
from l2o.problems import MLPProblem

log = logging.getLogger(__name__)

#: The GPS configuration every variant starts from (a short run on the small objective).
BASE = dict(horizon=100, num_samples=5, num_iterations=8, inner_iterations=4,
            coords_per_group=256, cost_subset=10000, policy_steps=100, policy_batch=64,
            pretrain_steps=300, eval_samples=3, seed=0)
#: The first sweep's variants: name -> overrides of :data:`BASE` (a ``"features"`` key
#: overrides the :class:`~l2o.features.FeatureConfig` too).
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
EVAL_SEEDS = tuple(range(5))
#: π (and ψ's mean) are scored on these after every iteration and the best π is chosen
#: on them (GPS's own diagnostics use fresh streams each iteration, which adds
#: stream-to-stream noise to a comparison over iterations).
VAL_SEEDS = (2000, 2001, 2002, 2003, 2004)
#: Seeds on which a reference's step is tuned (disjoint from the other two sets).
TUNE_SEEDS = (1000, 1001, 1002)


@dataclass(frozen=True)
class SweepSetting:
    """The objective, the seeds and the budget shared by every variant of a sweep."""

    sizes: tuple[int, int] = SIZES
    dataset: str = "mnist"
    batch_size: int = 64
    base: Mapping[str, Any] = field(default_factory=lambda: dict(BASE))
    teacher: Mapping[str, Any] = field(default_factory=lambda: dict(TEACHER))
    features: Mapping[str, Any] = field(default_factory=dict)
    eval_seeds: tuple[int, ...] = EVAL_SEEDS
    val_seeds: tuple[int, ...] = VAL_SEEDS
    tune_seeds: tuple[int, ...] = TUNE_SEEDS
    budget: float = 420.0           # seconds of GPS per variant
    data_dir: str | None = None

    def __post_init__(self):
        for name in ("eval_seeds", "val_seeds", "tune_seeds"):
            object.__setattr__(self, name, tuple(int(s) for s in getattr(self, name)))
        sets = [set(self.eval_seeds), set(self.val_seeds), set(self.tune_seeds)]
        if not all(sets[:2]):
            raise ValueError("eval_seeds and val_seeds must not be empty")
        if sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]:
            raise ValueError("the held-out, validation and tuning seeds must be disjoint")
        if not self.budget > 0:
            raise ValueError(f"Invalid budget: {self.budget} (seconds, > 0)")

    @property
    def horizon(self) -> int:
        return int(self.base.get("horizon", BASE["horizon"]))

    def problem(self) -> MLPProblem:
        from l2o.data import make_problem

        return make_problem(self.dataset, self.sizes[0], self.sizes[1],
                            batch_size=self.batch_size, data_dir=self.data_dir)


def pi_meta_losses(problem: MLPProblem, policy, horizon: int, feature_config,
                   seeds: Sequence[int]) -> list[float]:
    """π's meta-loss on each seed, from the baselines' initial iterates and streams."""
    from l2o.learned import evaluate_psd, meta_losses

    return meta_losses(evaluate_psd(problem, policy, list(seeds), horizon,
                                    feature_config)).tolist()


def psi_mean_score(problem: MLPProblem, gps, seeds: Sequence[int]) -> float:
    """ψ's mean policy (no noise) on the baselines' streams of ``seeds``: mean meta-loss."""
    from l2o.gps_study import psi_mean_losses

    return float(np.mean(psi_mean_losses(problem, gps, list(seeds), gps.cfg.horizon)))


def optimizer_meta_losses(problem: MLPProblem, name: str, hparams: Mapping, horizon: int,
                          seeds: Sequence[int]) -> list[float]:
    """A registered optimizer's meta-loss on each seed (:func:`l2o.experiments.train_many`)."""
    runs = experiments.train_many(problem, name, horizon, list(seeds), hparams=dict(hparams))
    return [float(experiments.meta_loss(r.true_loss)) for r in runs]


def run_variant(setting: SweepSetting, name: str, overrides: Mapping[str, Any],
                out_dir: str | Path | None = None) -> dict:
    """Meta-train one variant within ``setting.budget`` seconds and score its best π.

    Returns the variant's record (the keys chapter 5 reads): ``iters`` (per iteration
    ψ's and π's costs, their validation scores, the groups' diagnostics), ``best_iter``
    (−1: the pre-trained π), ``best_test_per_seed`` and ``best_test`` on the held-out
    seeds, ``last_test``, ``best_test_2T`` (twice the horizon), or ``error`` when the
    variant failed (the sweep goes on).  With ``out_dir``, ``NAME.partial.json`` after
    every iteration (an interrupted sweep keeps it) and ``NAME.best_policy.pt``.
    """
    from l2o.features import FeatureConfig
    from l2o.gps import ConvolutionalGPS, GPSConfig, save_policy
    from l2o.policy import PolicyConfig

    t0 = time.time()
    features = {**setting.features, **overrides.get("features", {})}
    out: dict[str, Any] = {"name": name, "overrides": dict(overrides), "features": features,
                           "iters": []}
    try:
        P = setting.problem()
        cfg = GPSConfig(**{**setting.base,
                           **{k: v for k, v in overrides.items() if k != "features"}})
        fcfg = FeatureConfig(**features)
        gps = ConvolutionalGPS(P, cfg, fcfg, PolicyConfig(), dict(setting.teacher))
        val = setting.val_seeds

        def snapshot():
            return {k: v.clone() for k, v in gps.policy.state_dict().items()}

        out["init"] = gps.initialize()
        out["pi0_val"] = gps.evaluate_pi(cfg.eval_samples)[0]
        out["pi0_fixed_val"] = float(np.mean(pi_meta_losses(P, gps.policy, cfg.horizon, fcfg,
                                                            val)))
        out["psi0_fixed_val"] = psi_mean_score(P, gps, val)
        best = (out["pi0_fixed_val"], snapshot(), -1)
        while gps.iteration < cfg.num_iterations and time.time() - t0 < setting.budget:
            d = gps.iterate()
            pi_val = float(np.mean(pi_meta_losses(P, gps.policy, cfg.horizon, fcfg, val)))
            out["iters"].append({"psi": d["psi_cost"], "psi_mean": d.get("psi_mean_cost"),
                                 "pi": d["pi_cost"], "wall": d["wall"],
                                 "pi_fixed_val": pi_val,
                                 "psi_mean_fixed_val": psi_mean_score(P, gps, val),
                                 "groups": {g: dict(gd) for g, gd in d["groups"].items()}})
            if out_dir:
                record.atomic_write_json(Path(out_dir) / f"{name}.partial.json", out,
                                         nonfinite="keep")
            if pi_val < best[0]:
                best = (pi_val, snapshot(), d["iteration"])
        out["last_test"] = float(np.mean(pi_meta_losses(P, gps.policy, cfg.horizon, fcfg,
                                                        setting.eval_seeds)))
        gps.policy.load_state_dict(best[1])
        out["best_iter"] = best[2]
        out["best_test_per_seed"] = pi_meta_losses(P, gps.policy, cfg.horizon, fcfg,
                                                   setting.eval_seeds)
        out["best_test"] = float(np.mean(out["best_test_per_seed"]))
        if out_dir:
            save_policy(Path(out_dir) / f"{name}.best_policy.pt", gps.policy, fcfg,
                        {"variant": name, "best_iter": best[2],
                         "teacher": dict(setting.teacher)})
        out["best_test_2T"] = float(np.mean(pi_meta_losses(
            P, gps.policy, 2 * cfg.horizon, fcfg, setting.eval_seeds)))
    except Exception as e:  # noqa: BLE001 - a sweep records failures and goes on
        log.warning("variant %s failed: %r", name, e)
        out["error"] = repr(e)
    out["wall"] = time.time() - t0
    log.info("%s", json.dumps({k: out.get(k) for k in ("name", "pi0_val", "best_iter",
                                                         "best_test", "last_test", "error",
                                                         "wall")}, default=float))
    return out


def _run_variant_task(args) -> dict:
    return run_variant(*args)


@dataclass
class SweepResult:
    """What ``sweep.json`` holds: the references' scores and every variant's record."""

    setting: SweepSetting
    references: dict[str, tuple[str, dict]]     # label -> (optimizer, hyperparameters)
    reference: dict[str, float]                 # label and label_fixed_val -> mean meta-loss
    reference_per_seed: dict[str, list[float]]
    tuning: dict[str, dict]
    results: list[dict]

    def best_variant(self) -> dict | None:
        """The variant whose chosen π scores best on the held-out seeds (None: all failed)."""
        ok = [r for r in self.results if "error" not in r]
        return min(ok, key=lambda r: r["best_test"]) if ok else None

    def to_dict(self) -> dict:
        s = self.setting
        return {"reference": self.reference, "reference_per_seed": self.reference_per_seed,
                "eval_seeds": list(s.eval_seeds), "val_seeds": list(s.val_seeds),
                "tuning": self.tuning, "tune_seeds": list(s.tune_seeds), "base": dict(s.base),
                "teacher": dict(s.teacher), "features": dict(s.features),
                "references": {k: v[1] for k, v in self.references.items()},
                "sizes": list(s.sizes), "results": self.results}


def tune_reference(problem: MLPProblem, name: str, lrs: Sequence[float], horizon: int,
                   seeds: Sequence[int]) -> dict:
    """Mean meta-loss of ``name`` at each learning rate on ``seeds``: ``{"grid", "best_lr"}``
    (a diverged setting scores ``inf``, never best unless all diverge)."""
    scores = [(float(np.mean(optimizer_meta_losses(problem, name, {"lr": lr}, horizon, seeds))),
               lr) for lr in lrs]
    best = min(scores, key=lambda sl: sl[0] if np.isfinite(sl[0]) else np.inf)
    return {"grid": [{"lr": lr, "meta_loss": m} for m, lr in scores], "best_lr": best[1]}


def run_sweep(setting: SweepSetting, variants: Mapping[str, Mapping[str, Any]],
              references: Mapping[str, Mapping] = REFERENCES,
              tune: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
              out_dir: str | Path | None = None, workers: int = 1) -> SweepResult:
    """The references (the teacher, ``references``, and each of ``tune`` tuned on the
    tuning seeds), then every variant (:func:`run_variant`) on ``workers`` processes."""
    P = setting.problem()
    teacher = dict(setting.teacher)
    refs = {"teacher": (teacher.get("name", "momentum"),
                        {k: v for k, v in teacher.items() if k != "name"}),
            **{k: (k, dict(v)) for k, v in references.items()}}
    tuning = {}
    for name, grid in (tune or {}).items():
        tuning[name] = tune_reference(P, name, grid["lr"], setting.horizon, setting.tune_seeds)
        refs[f"{name}_tuned"] = (name, {"lr": tuning[name]["best_lr"]})
        log.info("tuned %s: %s", name, json.dumps(tuning[name], default=float))
    reference, per_seed = {}, {}
    for label, (name, hp) in refs.items():
        per_seed[label] = optimizer_meta_losses(P, name, hp, setting.horizon, setting.eval_seeds)
        reference[label] = float(np.mean(per_seed[label]))
        reference[f"{label}_fixed_val"] = float(np.mean(optimizer_meta_losses(
            P, name, hp, setting.horizon, setting.val_seeds)))
    log.info("references: %s", json.dumps(reference, default=float))
    jobs = [(setting, n, dict(o), out_dir) for n, o in variants.items()]
    if workers > 1 and len(jobs) > 1:
        with parallel.process_pool(min(workers, len(jobs))) as pool:
            results = list(pool.map(_run_variant_task, jobs))
    else:
        with parallel.one_thread():
            results = [_run_variant_task(j) for j in jobs]
    return SweepResult(setting, refs, reference, per_seed, tuning, results)


# ----------------------------------------------------------------------- ceiling
#: The baselines' grids of the ceiling study.
CEILING_GRIDS = {
    "momentum": [{"lr": lr, "momentum": b} for lr in (0.1, 0.3, 1.0, 3.0)
                 for b in (0.5, 0.9, 0.95)],
    "adam": [{"lr": lr} for lr in (0.003, 0.01, 0.03, 0.1)],
    "adagrad": [{"lr": lr} for lr in (0.03, 0.1, 0.3, 1.0)],
    "rmsprop": [{"lr": lr} for lr in (0.01, 0.03, 0.1, 0.3)],
    "sgd": [{"lr": lr} for lr in (0.3, 1.0, 3.0, 10.0)],
}
#: Step sizes tried per coordinate group (W1, b1, W2, b2) for per-group momentum.
GROUP_LRS = ((0.3, 1.0, 3.0), (0.3, 1.0, 3.0, 10.0), (0.3, 1.0, 3.0), (0.3, 1.0, 3.0, 10.0))
CEILING_HORIZON = 100


def per_group_momentum(problem: MLPProblem, x0: torch.Tensor, idx: torch.Tensor,
                       lrs: Sequence[float], beta: float) -> float:
    """Meta-loss (mean over the rows of ``x0``) of momentum SGD with one step per group:
    ``v ← β v − g``, ``x ← x + lr_group v`` (torch's heavy ball); ``inf`` on divergence."""
    lr = torch.tensor(list(lrs), dtype=x0.dtype)[problem.group_index]
    v = torch.zeros_like(x0)

    def delta(t, x, loss, g):
        nonlocal v
        v = beta * v - g
        return lr * v

    traj = loop.rollout(problem, loop.StepActor(delta), x0, idx)
    f = torch.from_numpy(traj.true_loss[:, 1:]).to(x0.dtype)   # f(x_t) as computed
    if not torch.isfinite(f).all():
        return float("inf")
    total = 0.0
    for t in range(f.shape[1]):
        total += float(f[:, t].mean())
    return total


@dataclass
class CeilingResult:
    """What ``ceiling.json`` holds."""

    objective: str
    seeds: list[int]
    baselines: dict[str, list[dict]]        # name -> rows sorted by meta-loss
    per_group_momentum: dict[str, Any]      # groups, the best 10 rows, n_tried
    gradient_abs_quantiles_t0: dict[str, float]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def ceiling(problem: MLPProblem, seeds: Sequence[int] = TUNE_SEEDS,
            horizon: int = CEILING_HORIZON, grids: Mapping[str, Sequence[Mapping]] = CEILING_GRIDS,
            group_lrs: Sequence[Sequence[float]] = GROUP_LRS) -> CeilingResult:
    """The ceiling study on ``problem`` (the momentum grid is needed: its best β is used
    for per-group momentum)."""
    if "momentum" not in grids:
        raise ValueError("grids must include 'momentum' (per-group momentum uses its best β)")
    seeds = [int(s) for s in seeds]
    baselines = {}
    for name, grid in grids.items():
        rows = [{"hparams": dict(hp),
                 "meta_loss": float(np.mean(optimizer_meta_losses(problem, name, hp, horizon,
                                                                  seeds)))}
                for hp in grid]
        baselines[name] = sorted(rows, key=lambda r: r["meta_loss"])
    x0, idx = experiments.streams_of(problem, seeds, horizon)
    beta = baselines["momentum"][0]["hparams"]["momentum"]
    rows = [{"lrs": list(lrs), "momentum": beta,
             "meta_loss": per_group_momentum(problem, x0, idx, lrs, beta)}
            for lrs in itertools.product(*group_lrs)]
    rows.sort(key=lambda r: r["meta_loss"])
    _, g = problem.minibatch_loss_and_grad(x0, idx[0])
    q = np.quantile(g.abs().double().numpy(), [0.1, 0.5, 0.9, 0.99])
    n_in = problem.x.shape[1]
    return CeilingResult(
        objective=f"{problem.name}, {n_in}-{problem.n_hidden}-{problem.n_classes} net, "
                  f"batch {problem.batch_size}, T={horizon}",
        seeds=seeds, baselines=baselines,
        per_group_momentum={"groups": [gr.name for gr in problem.groups], "best": rows[:10],
                            "n_tried": len(rows)},
        gradient_abs_quantiles_t0=dict(zip(["q10", "q50", "q90", "q99"], map(float, q))))


# ---------------------------------------------------------------------- transfer
#: (label, dataset, n_in, n_hidden, batch, horizon, extra make_problem arguments)
OBJECTIVES = (
    ("MNIST-8 (training objective)", "mnist", 8, 8, 64, 100, {}),
    ("MNIST-8, another projection", "mnist", 8, 8, 64, 100, {"projection_seed": 1}),
    ("MNIST-8, 200 steps", "mnist", 8, 8, 64, 200, {}),
    ("MNIST-8, minibatch 10", "mnist", 8, 8, 10, 100, {}),
    ("faces-8 (FER2013)", "faces", 8, 8, 64, 100, {}),
    ("CIFAR-10-8", "cifar10", 8, 8, 64, 100, {}),
)
#: Steps tuned on the training objective (tuning seeds 1000-1002; chapter 5).
TRANSFER_REFERENCES = {"adam": {"lr": 0.05}, "rmsprop": {"lr": 0.03}, "adagrad": {"lr": 0.1}}


@dataclass
class TransferRow:
    """π against the references on one objective (a row of ``transfer.json``)."""

    objective: str
    dataset: str
    n_in: int
    n_hidden: int
    batch_size: int
    horizon: int
    problem_kwargs: dict
    per_seed: dict[str, list[float]]        # "psd" and each reference

    @property
    def mean(self) -> dict[str, float]:
        return {k: float(np.mean(v)) for k, v in self.per_seed.items()}

    @property
    def psd_minus_adam(self) -> np.ndarray:
        return np.asarray(self.per_seed["psd"]) - np.asarray(self.per_seed["adam"])

    @property
    def rank_of_psd(self) -> int:
        """1 + the number of references with a lower mean meta-loss than π."""
        m = self.mean
        return 1 + sum(v < m["psd"] for k, v in m.items() if k != "psd")

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("objective", "dataset", "n_in", "n_hidden",
                                             "batch_size", "horizon", "problem_kwargs",
                                             "per_seed")}
        diff = self.psd_minus_adam
        out.update(mean=self.mean, psd_minus_adam=float(np.mean(diff)),
                   psd_minus_adam_se=float(np.std(diff, ddof=1) / np.sqrt(len(diff)))
                   if len(diff) > 1 else float("nan"),
                   psd_wins_vs_adam=int(np.sum(diff < 0)), rank_of_psd=self.rank_of_psd)
        return out


def transfer(policy, feature_config, seeds: Sequence[int], objectives=OBJECTIVES,
             references: Mapping[str, Mapping] = TRANSFER_REFERENCES,
             data_dir=None) -> list[TransferRow]:
    """π and the references on each objective, on the same seeds (``references`` must
    include ``"adam"``, the comparison the rows report)."""
    from l2o.data import make_problem

    if "adam" not in references:
        raise ValueError("references must include 'adam'")
    seeds = [int(s) for s in seeds]
    rows = []
    for label, name, n_in, n_hidden, batch, horizon, kw in objectives:
        P = make_problem(name, n_in, n_hidden, batch_size=batch, data_dir=data_dir, **kw)
        per_seed = {"psd": pi_meta_losses(P, policy, horizon, feature_config, seeds)}
        for opt, hp in references.items():
            per_seed[opt] = optimizer_meta_losses(P, opt, hp, horizon, seeds)
        row = TransferRow(label, name, n_in, n_hidden, batch, horizon, dict(kw), per_seed)
        rows.append(row)
        d = row.to_dict()
        log.info("%-32s %s  PSD-Adam %+.2f ± %.2f  wins %d/%d", label,
                 "  ".join(f"{k} {v:8.2f}" for k, v in d["mean"].items()),
                 d["psd_minus_adam"], d["psd_minus_adam_se"], d["psd_wins_vs_adam"], len(seeds))
    return rows


# --------------------------------------------------------------------------- CLI
def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{what} is not valid JSON: {e}") from None


def main(argv: Sequence[str] | None = None, prog: str = "python -m l2o.gps_sweep") -> int:
    """``sweep``, ``ceiling`` or ``transfer`` (module docstring); exit code 2 on bad input."""
    from l2o.cli import positive_float, positive_int

    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sw = sub.add_parser("sweep", help="meta-train GPS variants; score the best π of each")
    sw.add_argument("--out", required=True)
    sw.add_argument("--workers", type=positive_int, default=2)
    sw.add_argument("--budget", type=positive_float, default=420.0,
                    help="seconds of GPS per variant")
    sw.add_argument("--variants", type=lambda s: _json_arg(s, "--variants"), default=None,
                    help="JSON object name -> GPSConfig overrides (default: VARIANTS)")
    sw.add_argument("--teacher", type=lambda s: _json_arg(s, "--teacher"), default=TEACHER,
                    help='momentum {"lr", "momentum"} or {"name": "adam", "lr"} as JSON')
    sw.add_argument("--tune", type=lambda s: _json_arg(s, "--tune"), default={},
                    help='JSON optimizer -> {"lr": [grid]}: tuned on the tuning seeds, its best '
                         'setting scored on the held-out seeds as a reference')
    sw.add_argument("--references", type=lambda s: _json_arg(s, "--references"),
                    default=REFERENCES, help="JSON optimizer -> hyperparameters")
    sw.add_argument("--n-eval", type=positive_int, default=len(EVAL_SEEDS),
                    help="held-out seeds 0..N-1 on which π and the references are scored")
    sw.add_argument("--features", type=lambda s: _json_arg(s, "--features"), default={},
                    help="FeatureConfig overrides as JSON, for every variant")
    ce = sub.add_parser("ceiling", help="the linear ceiling on the small objective")
    ce.add_argument("--out", default="results/gps_ceiling")
    tr = sub.add_parser("transfer", help="a learned π on objectives it never saw")
    tr.add_argument("--policy", default="results/gps_sweep_rms_fixed/fixed1.best_policy.pt")
    tr.add_argument("--out", default="results/gps_transfer/transfer.json")
    tr.add_argument("--seeds", type=positive_int, default=10, help="seeds 0..N-1")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    # the command as this module runs it (the scripts under the earlier names pass argv)
    command = " ".join(["python -m l2o.gps_sweep", *(sys.argv[1:] if argv is None else argv)])
    git, t0 = record.git_state(), time.perf_counter()
    if a.cmd == "sweep":
        try:
            setting = SweepSetting(teacher=a.teacher, features=a.features, budget=a.budget,
                                   eval_seeds=tuple(range(a.n_eval)))
        except (TypeError, ValueError) as e:
            sw.error(str(e))
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        res = run_sweep(setting, a.variants or VARIANTS, a.references, a.tune, out, a.workers)
        record.atomic_write_json(out / "sweep.json", res.to_dict(), nonfinite="keep")
        dest = out / "sweep.json"
    elif a.cmd == "ceiling":
        setting = SweepSetting()
        res = ceiling(setting.problem())
        dest = Path(a.out) / "ceiling.json"
        record.atomic_write_json(dest, res.to_dict(), nonfinite="keep")
    else:
        from l2o.gps import load_policy

        policy, fcfg, meta = load_policy(a.policy)
        rows = transfer(policy, fcfg, range(a.seeds))
        dest = Path(a.out)
        record.atomic_write_json(dest, {
            "rows": [r.to_dict() for r in rows], "seeds": list(range(a.seeds)),
            "policy_file": a.policy, "policy_meta": meta, "references": TRANSFER_REFERENCES,
            # chapter 5 prints these three from this file
            "command": command, "git_commit": git.get("git_commit"),
            "wall_time_s": time.perf_counter() - t0}, nonfinite="keep")
    prov = record.provenance(command, round(time.perf_counter() - t0, 3), git)
    record.atomic_write_json(dest.parent / "provenance.json", prov)
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
