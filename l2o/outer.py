"""Meta-training π without GPS: truncated BPTT and antithetic evolution strategies.

Predicted Step Descent is two things at once: a policy class (per group, one LSTM of
128 cells reading the three features Ψ of every coordinate) and the way it is
meta-trained (convolutional GPS, :mod:`l2o.gps`).  This module meta-trains *the same*
π — same :class:`~l2o.policy.LSTMPolicy`, same features, same output scale, same
objective and initial-iterate distribution — by two estimators that need no local
models, so that a chapter can ask which of the two limits the learned optimizer:

* **bptt**, truncated backpropagation through the unrolled optimization (the trainer
  of Andrychowicz et al. applied to π): along a trajectory of ``T`` steps, every
  ``unroll`` steps the meta-loss of those steps, ``Σ_t f(x_{t+1})``, is
  differentiated with respect to π's weights through the steps ``x_{t+1} = x_t + μ^π``,
  π's memory and the features Ψ (which need second derivatives of ``f̂`` for the
  gradient feature); the trajectory, the memory and the feature history carry over to
  the next window (detached).  ``through_features=False`` holds Ψ constant instead, as
  L2L treats its gradient input; on this π that approximation made π worse (the
  chapter shows the first run).
* **es**, antithetic evolution strategies over full ``T``-step unrolls: for ``P`` pairs
  ``θ ± σ ε_k`` with ``ε_k ~ N(0, I)`` over every trainable weight of π, the meta-loss of
  both members is measured on one trajectory (common random numbers: the same initial
  iterate and minibatch stream within a pair), and Adam follows
  ``ĝ = (1 / P σ) Σ_k (d_k / s) ε_k`` with ``d_k = (F(θ + σε_k) − F(θ − σε_k)) / 2`` and
  ``s`` the spread of the ``d_k`` (baseline normalisation, clipped at 3).

Both meta-train on ``f`` restricted to the same 10,000 training examples GPS uses as
its cost (``cost_subset``), start from the π that GPS itself starts from (π imitating
the linear fit ψ0 of the teacher, :meth:`l2o.gps.ConvolutionalGPS.initialize`, with the
same seed), and stop when their training clock reaches the wall-time budget.  Scoring
on the validation seeds (2000–2004) is not counted in the budget; each scoring
snapshots π, and the best snapshot is the trained optimizer.

    python -m l2o.outer train --method bptt --out results/outer/bptt [--budget-min 60] [--resume]
    python -m l2o.outer train --method es   --out results/outer/es   [--budget-min 60] [--resume]

Every update is checkpointed (``OUT/checkpoint.pt``): an interrupted run resumes where
it stopped with ``--resume``; ``OUT/history.json`` logs validation meta-loss against
the training clock.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from l2o import record
from l2o import rollout as loop
from l2o.features import FeatureConfig, ObservationTracker
from l2o.gps import (ConvolutionalGPS, CostProblem, GPSConfig, load_policy, pi_actor, rollout,
                     safe_load, save_policy)
from l2o.policy import LSTMPolicy, PolicyConfig
from l2o.problems import MLPProblem

log = logging.getLogger(__name__)

METHODS = ("bptt", "es")
#: Adam's step on π's weights per method.  BPTT: of 1e-4 and 3e-5, tried for two epochs
#: before the runs, the smaller moved π less far from its start; ES: each update moves
#: every weight by about the step, and 2e-3 is a fifth of the perturbation scale σ = 0.01.
DEFAULT_LR = {"bptt": 3e-5, "es": 2e-3}
CHECKPOINT_FORMAT = "l2o-outer-1"
#: Seeds that choose the snapshot (the same as GPS's, :data:`l2o.gps_study.VALIDATION_SEEDS`).
VALIDATION_SEEDS = (2000, 2001, 2002, 2003, 2004)
#: Training streams are drawn from generators seeded apart from every evaluation seed.
TRAIN_SEED_OFFSET = 7_000_000


class OuterCheckpointError(ValueError):
    """A checkpoint that cannot be resumed with the requested configuration."""


@dataclass(frozen=True)
class OuterConfig:
    """Hyperparameters of the two outer trainers (fields of the other method are ignored).

    Attributes:
        method: ``"bptt"`` or ``"es"``.
        budget_s: training wall-time budget in seconds (warm start included, validation
            scoring excluded).
        horizon: ``T``, steps of a meta-training trajectory (paper: 400).
        cost_subset: training examples of ``f`` during meta-training (GPS: 10,000).
        seed: seeds the warm start (as GPS's ``seed``) and the training streams.
        lr: Adam's step on π's weights (``None``: :data:`DEFAULT_LR` of the method).
        trajectories: BPTT, trajectories unrolled together.
        unroll: BPTT, steps per truncation window.
        max_grad_norm: BPTT, clipping of the meta-gradient.
        through_features: BPTT, differentiate through the features Ψ as well (the exact
            gradient of the window's meta-loss, with second derivatives of ``f̂`` for the
            gradient feature); ``False`` holds Ψ constant, L2L's approximation.
        curriculum: BPTT, unroll lengths over equal shares of the budget (e.g. ``(20, 50,
            100)``: 20 steps in the first third, ...); empty: ``unroll`` throughout.
        pairs: ES, antithetic pairs per update.
        sigma: ES, perturbation scale.
        eval_every_s: training seconds between validation scorings.
    """

    method: str = "bptt"
    budget_s: float = 3600.0
    horizon: int = 400
    cost_subset: int = 10_000
    seed: int = 0
    lr: float | None = None           # None: the method's default, DEFAULT_LR
    trajectories: int = 4
    unroll: int = 20
    max_grad_norm: float = 1.0
    through_features: bool = True
    curriculum: tuple[int, ...] = ()
    pairs: int = 8
    sigma: float = 0.01
    eval_every_s: float = 300.0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"Invalid method: {self.method!r} (expected one of {METHODS})")
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR[self.method])
        for name in ("budget_s", "lr", "sigma", "eval_every_s", "max_grad_norm"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"Invalid {name}: {v!r} (must be a finite number > 0)")
        for name in ("horizon", "trajectories", "unroll", "pairs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Invalid {name}: {v!r} (must be an integer ≥ 1)")
        object.__setattr__(self, "curriculum", tuple(self.curriculum))
        if any(isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in self.curriculum):
            raise ValueError(f"Invalid curriculum: {self.curriculum!r} (unroll lengths ≥ 1)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"Invalid seed: {self.seed!r} (must be an integer ≥ 0)")
        if isinstance(self.cost_subset, bool) or not isinstance(self.cost_subset, int) \
                or self.cost_subset < 0:
            raise ValueError(f"Invalid cost_subset: {self.cost_subset!r} (integer ≥ 0; 0 = all)")


# ----------------------------------------------------------------------- warm start
def warm_start(problem: MLPProblem, feature_config: FeatureConfig, teacher: dict,
               gps_config: GPSConfig = GPSConfig(),
               policy_config: PolicyConfig = PolicyConfig()) -> LSTMPolicy:
    """GPS's own starting π: trained to imitate ψ0, the linear fit of the teacher.

    Runs :meth:`l2o.gps.ConvolutionalGPS.initialize` (teacher rollouts, input
    standardisation, output scales, ψ0, π pre-trained on ψ0's means) and returns π, so
    that every meta-trainer starts where GPS started.
    """
    gps = ConvolutionalGPS(problem, gps_config, feature_config, policy_config, teacher, None)
    gps.initialize()
    return gps.policy


# ----------------------------------------------------------------------- meta-losses
def validation_losses(problem: MLPProblem, policy: LSTMPolicy, seeds: Sequence[int] = VALIDATION_SEEDS,
                      horizon: int = 400) -> np.ndarray:
    """Meta-loss ``Σ_{t=1}^T f(x_t)`` (whole training set) of π's mean step per seed."""
    from l2o.learned import evaluate_psd, meta_losses

    return meta_losses(evaluate_psd(problem, policy, seeds, horizon, policy.feature_config))


def _flat_params(policy: LSTMPolicy) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in policy.parameters()])


def _set_params(policy: LSTMPolicy, flat: torch.Tensor) -> None:
    """Copy ``flat`` into π's trainable weights in place (refreshes the fused cache)."""
    with torch.no_grad():
        i = 0
        for p in policy.parameters():
            n = p.numel()
            p.copy_(flat[i:i + n].view_as(p))
            i += n


def es_meta_loss(problem: MLPProblem, cost: CostProblem, policy: LSTMPolicy, x0: torch.Tensor,
                 streams: torch.Tensor) -> np.ndarray:
    """``Σ_{t=1}^T f_cost(x_t)`` of π's mean step from ``x0 (n, D)`` on ``streams (T, n, B)``.

    Non-finite when a trajectory diverged.  Uses the package's rollout loop
    (:func:`l2o.gps.rollout`), as every evaluation of π does.
    """
    T, n = streams.shape[0], streams.shape[1]
    s = rollout(problem, cost, T, n, pi_actor(problem, policy), policy.feature_config,
                torch.Generator(), None, need_states=False, x0=x0, streams=streams)
    out = s.true_loss[:, 1:].sum(1)
    out[~np.isfinite(s.true_loss).all(1)] = np.inf
    return out


def _draw_streams(problem: MLPProblem, gen: torch.Generator, n: int, horizon: int):
    x0 = problem.init(gen, n)
    idx = torch.stack([problem.sample_indices(gen, n) for _ in range(horizon)])
    return x0, idx


# ----------------------------------------------------------------------- features
class DifferentiableObservation:
    """Ψ as :class:`~l2o.features.ObservationTracker` computes it, but out of place, so
    that the meta-gradient flows through ``x``, ``f̂`` and ``∇f̂`` into the features.

    Same formulas and the same zero rule at ``t = 0`` (both ``grad_scale`` options);
    :meth:`detach` cuts the history from the graph at a truncation boundary.
    """

    def __init__(self, config: FeatureConfig):
        self.config = config
        self.t = -1
        self.x_prev = self.step_ = self.prev_step = self.g = self.g_prev_abs = None
        self.sq = self.rms = self.f = self.f_prev = None

    def update(self, x: torch.Tensor, f_hat: torch.Tensor, grad: torch.Tensor) -> None:
        t = self.t + 1
        if t == 0:
            self.step_ = torch.zeros_like(x)
            self.prev_step = torch.zeros_like(x)
            self.g_prev_abs = grad.abs()
        elif t == 1:
            self.step_ = (x - self.x_prev).abs()
            self.prev_step = self.step_
            self.g_prev_abs = self.g.abs()
        else:
            self.prev_step, self.step_ = self.step_, (x - self.x_prev).abs()
            self.g_prev_abs = self.g.abs()
        if self.config.grad_scale == "rms":
            beta = self.config.rms_decay
            sq = (grad * (1.0 - beta)) * grad
            self.sq = sq if t == 0 else self.sq * beta + sq
            v = self.sq / (1.0 - beta ** (t + 1))
            # sqrt'(0) is infinite: a coordinate whose gradient has been exactly zero so
            # far (a dead ReLU unit) would turn the meta-gradient into NaN; same values
            pos = v > 0
            self.rms = torch.where(pos, torch.where(pos, v, 1.0).sqrt(), 0.0) + self.config.rms_eps
        self.f_prev, self.f = self.f, f_hat
        self.x_prev, self.g = x, grad
        self.t = t

    def observation(self) -> torch.Tensor:
        cfg = self.config
        if self.t >= 1:
            o0 = ((self.f - self.f_prev) / self.f_prev)[:, None].expand_as(self.g)
            o2 = self.prev_step / (self.step_ + cfg.iterate_offset)
        else:
            o0 = o2 = torch.zeros_like(self.g)
        if cfg.grad_scale == "rms":
            o1 = self.g / self.rms
        else:
            o1 = self.g / (self.g_prev_abs + cfg.grad_offset)
        return torch.stack([o0, o1, o2], -1)

    def detach(self) -> None:
        for k in ("x_prev", "step_", "prev_step", "g", "g_prev_abs", "sq", "rms", "f", "f_prev"):
            v = getattr(self, k)
            if isinstance(v, torch.Tensor):
                setattr(self, k, v.detach())


def _loss_and_grad(problem: MLPProblem, x: torch.Tensor, idx: torch.Tensor):
    """``f̂(x; idx)`` per trajectory and its gradient, both differentiable in ``x``."""
    if not x.requires_grad:
        x = x.requires_grad_(True)
    f = problem.torch_loss(x, idx)
    (g,) = torch.autograd.grad(f.sum(), x, create_graph=True)
    return f, g


# ----------------------------------------------------------------------- the trainers
def unroll_at(cfg: OuterConfig, train_s: float) -> int:
    """The BPTT window length after ``train_s`` seconds of training (the curriculum's)."""
    if not cfg.curriculum:
        return cfg.unroll
    k = int(len(cfg.curriculum) * train_s / cfg.budget_s)
    return cfg.curriculum[min(max(k, 0), len(cfg.curriculum) - 1)]


def bptt_update_epoch(policy: LSTMPolicy, problem: MLPProblem, cost: CostProblem,
                      cfg: OuterConfig, opt: torch.optim.Optimizer, gen: torch.Generator,
                      stop=lambda: False, unroll: int | None = None) -> dict:
    """One trajectory batch of ``T`` steps, one Adam step on π per window of ``unroll`` steps.

    Returns the training meta-loss ``Σ_t f_cost(x_{t+1})`` (mean over trajectories), the
    number of updates made, the mean meta-gradient norm before clipping and whether the
    batch diverged (then the rest of it is abandoned).
    """
    n, D, T = cfg.trajectories, problem.dim, cfg.horizon
    U = cfg.unroll if unroll is None else int(unroll)
    x0, idx = _draw_streams(problem, gen, n, T)
    x = x0.to(problem.dtype)
    exact = cfg.through_features
    tracker = (DifferentiableObservation(policy.feature_config) if exact else
               ObservationTracker(n, D, policy.feature_config, dtype=problem.dtype))
    hidden = policy.initial_hidden(n, D)
    gi = problem.group_index
    params = [p for p in policy.parameters() if p.requires_grad]
    total, norms, updates, diverged = 0.0, [], 0, False
    for start in range(0, T, U):
        x = x.detach()
        hidden = (hidden[0].detach(), hidden[1].detach())
        if exact:
            tracker.detach()
        window = {"loss": x.new_zeros((), dtype=torch.float32), "hidden": hidden}

        def step(t, x, f_hat, g_hat):
            if exact:     # f̂ and ∇f̂ carry the graph (evaluate below)
                tracker.update(x, f_hat, g_hat)
                obs = tracker.observation()
            else:
                with torch.no_grad():
                    tracker.update(x.detach(), f_hat, g_hat)
                    obs = tracker.observation()
            a, window["hidden"] = policy.step(obs, gi, window["hidden"])
            return a

        def add_loss(t, x_next):
            window["loss"] = window["loss"] + cost.sub.torch_loss(x_next).mean()

        # the window through the package's one loop; its steps carry the graph
        x = loop.rollout(problem, loop.StepActor(step), x, idx[start:min(T, start + U)],
                         eval_every=0, on_step=add_loss,
                         evaluate=(lambda x, i: _loss_and_grad(problem, x, i)) if exact
                         else None).x
        loss, hidden = window["loss"], window["hidden"]
        if not torch.isfinite(loss):
            diverged = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        if not math.isfinite(norm):
            opt.zero_grad(set_to_none=True)
            diverged = True
            break
        norms.append(norm)
        opt.step()
        updates += 1
        total += float(loss.detach())
        if stop():
            break
    return {"train_meta_loss": float("nan") if diverged else total, "updates": updates,
            "unroll": U,
            "grad_norm": float(np.mean(norms)) if norms else float("nan"),
            "diverged": diverged}


def es_gradient(diffs: np.ndarray) -> np.ndarray:
    """Normalised antithetic differences ``d_k / s`` (clipped to ±3) with non-finite handled.

    ``d_k = (F(θ + σε_k) − F(θ − σε_k)) / 2``.  A pair with exactly one diverged member
    counts as the largest difference toward the finite one (±3); a pair with both
    diverged counts 0.  ``s`` is the root-mean-square of the finite ``d_k``.
    """
    d = np.asarray(diffs, dtype=float)
    finite = np.isfinite(d)
    s = float(np.sqrt(np.mean(d[finite] ** 2))) if finite.any() else 0.0
    out = np.zeros_like(d)
    if s > 0:
        out[finite] = np.clip(d[finite] / s, -3.0, 3.0)
    out[~finite & (d > 0)] = 3.0     # F(θ + σε) diverged: ε is a bad direction
    out[~finite & (d < 0)] = -3.0
    return out


def es_update(policy: LSTMPolicy, problem: MLPProblem, cost: CostProblem, cfg: OuterConfig,
              opt: torch.optim.Optimizer, theta: torch.Tensor, gen: torch.Generator,
              stop=lambda: False) -> dict:
    """One antithetic-ES update of ``theta`` (π's flat weights, a leaf ``opt`` steps)."""
    P = cfg.pairs
    seeds = torch.randint(0, 2**62, (P,), generator=gen).tolist()
    F = np.full((P, 2), np.nan)
    base = theta.detach().clone()
    eps_all = []
    for k in range(P):
        eps = torch.randn(base.shape, generator=torch.Generator().manual_seed(int(seeds[k])),
                          dtype=base.dtype)
        x0, idx = _draw_streams(problem, gen, 1, cfg.horizon)   # common to both members
        for j, sign in enumerate((1.0, -1.0)):
            _set_params(policy, base + sign * cfg.sigma * eps)
            F[k, j] = es_meta_loss(problem, cost, policy, x0, idx)[0]
        eps_all.append(eps)
        if stop():
            break
    done = len(eps_all)
    _set_params(policy, base)
    diffs = (F[:done, 0] - F[:done, 1]) / 2
    w = es_gradient(diffs)
    grad = sum(float(wk) * e for wk, e in zip(w, eps_all)) / (done * cfg.sigma)
    opt.zero_grad(set_to_none=True)
    theta.grad = grad.to(theta.dtype)
    opt.step()
    _set_params(policy, theta.detach())
    both = F[:done][np.isfinite(F[:done]).all(1)]
    return {"train_meta_loss": float(both.mean()) if len(both) else float("nan"),
            "pairs": done, "diverged_members": int((~np.isfinite(F[:done])).sum()),
            "grad_norm": float(grad.norm())}


# ----------------------------------------------------------------------- the run
class OuterTrainer:
    """A resumable meta-training run of π by ``config.method`` (see the module docstring).

    Args:
        problem: the training objective (MNIST 48-48-10, batch 64, as GPS).
        config: :class:`OuterConfig`.
        feature_config: the features Ψ π reads (GPS's shipped policy's).
        teacher: the teacher of the warm start, as GPS's ``teacher_hparams``.
        out: the run's folder (checkpoint, history, snapshots, best π).
        gps_config: the GPS configuration whose initialisation is the warm start.
        policy_config: π's class (PSD's: one LSTM of 128 cells per group).
    """

    def __init__(self, problem: MLPProblem, config: OuterConfig, feature_config: FeatureConfig,
                 teacher: dict, out: str | Path, gps_config: GPSConfig = GPSConfig(),
                 policy_config: PolicyConfig = PolicyConfig()):
        self.problem, self.cfg, self.fcfg = problem, config, feature_config
        self.pcfg = policy_config
        self.teacher, self.gps_config = dict(teacher), gps_config
        self.out = Path(out)
        self.cost = CostProblem(problem, config.cost_subset, gps_config.seed)
        self.gen = torch.Generator().manual_seed(TRAIN_SEED_OFFSET + config.seed)
        self.policy: LSTMPolicy | None = None
        self.opt = None
        self.theta = None            # ES: the flat weights Adam steps
        self.train_s = 0.0           # the budget clock
        self.eval_s = 0.0
        self.updates = 0
        self.history = {"train": [], "eval": []}
        self.best = {"meta_loss": float("inf"), "updates": None, "train_s": None}
        self._next_eval = 0.0

    # -------------------------------------------------------------- state
    def _make_optimizer(self):
        if self.cfg.method == "bptt":
            self.opt = torch.optim.Adam(self.policy.parameters(), lr=self.cfg.lr)
        else:
            self.theta = _flat_params(self.policy).clone().requires_grad_(True)
            self.opt = torch.optim.Adam([self.theta], lr=self.cfg.lr)

    def _signature(self) -> dict:
        return {"config": dataclasses.asdict(self.cfg), "teacher": self.teacher,
                "policy_config": dataclasses.asdict(self.pcfg),
                "features": dataclasses.asdict(self.fcfg),
                "problem": repr(self.problem)}

    def save(self) -> None:
        if self.policy is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        payload = {"format": CHECKPOINT_FORMAT, **self._signature(),
                   "policy": self.policy.state_dict(), "optimizer": self.opt.state_dict(),
                   "theta": None if self.theta is None else self.theta.detach().clone(),
                   "rng_state": self.gen.get_state(), "train_s": self.train_s,
                   "eval_s": self.eval_s, "updates": self.updates,
                   "next_eval": self._next_eval,
                   "history": json.dumps(self.history), "best": json.dumps(self.best)}
        record.atomic_torch_save(self.out / "checkpoint.pt", payload)
        # non-finite numbers null, as before record.py: the comparison reads these curves
        record.atomic_write_json(
            self.out / "history.json",
            {**self._signature(), "history": self.history, "best": self.best,
             "train_s": self.train_s, "eval_s": self.eval_s, "updates": self.updates},
            nonfinite="null")

    def resume(self) -> bool:
        """Load ``OUT/checkpoint.pt`` if it exists; ``False`` when there is none."""
        path = self.out / "checkpoint.pt"
        if not path.exists():
            return False
        ck = safe_load(path)
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
            raise OuterCheckpointError(f"{path} is not an outer-trainer checkpoint")
        mine = self._signature()
        theirs = {k: ck.get(k) for k in mine}
        # fields added to OuterConfig after a checkpoint was written take their defaults
        defaults = {f.name: f.default for f in dataclasses.fields(OuterConfig)}
        defaults["curriculum"] = []
        a = {**mine, "config": {**mine["config"], "budget_s": None}}
        b = {**theirs, "config": {**defaults, "lr": None, **(theirs["config"] or {}),
                                  "budget_s": None}}
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            raise OuterCheckpointError(
                f"{path} was written with another configuration ({theirs['config']}); resume "
                "with the same arguments (only --budget-min may change) or choose another --out")
        self.policy = LSTMPolicy(self.pcfg, feature_config=self.fcfg)
        self.policy.load_state_dict(ck["policy"])
        self._make_optimizer()
        if ck["theta"] is not None:
            with torch.no_grad():
                self.theta.copy_(ck["theta"])
        self.opt.load_state_dict(ck["optimizer"])
        self.gen.set_state(ck["rng_state"])
        self.train_s, self.eval_s = float(ck["train_s"]), float(ck["eval_s"])
        self.updates, self._next_eval = int(ck["updates"]), float(ck["next_eval"])
        self.history, self.best = json.loads(ck["history"]), json.loads(ck["best"])
        return True

    # -------------------------------------------------------------- phases
    def start(self) -> None:
        """The warm start (counted in the budget), then the first validation."""
        t0 = time.perf_counter()
        self.policy = warm_start(self.problem, self.fcfg, self.teacher, self.gps_config,
                                 self.pcfg)
        self.train_s += time.perf_counter() - t0
        self.history["warm_start_s"] = self.train_s
        self._make_optimizer()
        self.validate()
        self.save()

    def validate(self) -> dict:
        t0 = time.perf_counter()
        losses = validation_losses(self.problem, self.policy, VALIDATION_SEEDS, self.cfg.horizon)
        mean = float(np.mean(losses))
        row = {"updates": self.updates, "train_s": self.train_s, "meta_loss": mean,
               "per_seed": losses.tolist()}
        self.history["eval"].append(row)
        snap = self.out / "snapshots" / f"pi_{len(self.history['eval']) - 1:03d}.pt"
        meta = {"method": self.cfg.method, "updates": self.updates, "train_s": self.train_s,
                "validation_meta_loss": mean, "teacher": self.teacher}
        save_policy(snap, self.policy, self.fcfg, meta)
        if math.isfinite(mean) and mean < self.best["meta_loss"]:
            self.best = {"meta_loss": mean, "updates": self.updates, "train_s": self.train_s,
                         "snapshot": snap.name}
            save_policy(self.out / f"pi_{self.cfg.method}.pt", self.policy, self.fcfg,
                        {**meta, "chosen_on": list(VALIDATION_SEEDS)})
        self._next_eval = self.train_s + self.cfg.eval_every_s
        self.eval_s += time.perf_counter() - t0
        log.info("%s: %d updates, %.0f s: validation meta-loss %.2f (best %.2f)",
                 self.cfg.method, self.updates, self.train_s, mean, self.best["meta_loss"])
        return row

    def step(self) -> dict:
        """One unit of work: a BPTT trajectory batch or an ES update."""
        deadline = self.cfg.budget_s
        t_start = time.perf_counter()
        clock0 = self.train_s

        def over() -> bool:
            return clock0 + time.perf_counter() - t_start >= deadline

        if self.cfg.method == "bptt":
            info = bptt_update_epoch(self.policy, self.problem, self.cost, self.cfg, self.opt,
                                     self.gen, over, unroll_at(self.cfg, self.train_s))
            self.updates += info["updates"]
        else:
            info = es_update(self.policy, self.problem, self.cost, self.cfg, self.opt,
                             self.theta, self.gen, over)
            self.updates += 1
        self.train_s += time.perf_counter() - t_start
        info = {"updates": self.updates, "train_s": self.train_s, **info}
        self.history["train"].append(info)
        return info

    def run(self, progress: bool = True) -> dict:
        """Train until the budget is spent; validate every ``eval_every_s`` and at the end."""
        if self.policy is None:
            self.start()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=round(self.cfg.budget_s), initial=min(round(self.train_s),
                                                                    round(self.cfg.budget_s)),
                       desc=f"{self.cfg.method} meta-training", unit="s")
        try:
            while self.train_s < self.cfg.budget_s:
                before = self.train_s
                info = self.step()
                if self.train_s >= self._next_eval or self.train_s >= self.cfg.budget_s:
                    self.validate()
                self.save()
                if bar is not None:
                    bar.update(min(round(self.train_s), round(self.cfg.budget_s)) - round(before))
                    bar.set_postfix(train=f"{info['train_meta_loss']:.1f}",
                                    best=f"{self.best['meta_loss']:.1f}")
                else:
                    log.info("%s: update %d, %.0f s, train meta-loss %.2f", self.cfg.method,
                             self.updates, self.train_s, info["train_meta_loss"])
        finally:
            if bar is not None:
                bar.close()
        if not self.history["eval"] or self.history["eval"][-1]["updates"] != self.updates:
            self.validate()
            self.save()
        return {"best": self.best, "train_s": self.train_s, "updates": self.updates}


# ----------------------------------------------------------------------- command line
def main(argv=None) -> int:
    """``python -m l2o.outer train``: meta-train π by truncated BPTT or antithetic ES."""
    import argparse

    from l2o.cli import check_run_folder, positive_float, positive_int
    from l2o.data import DatasetFormatError, DatasetNotFoundError, make_problem
    from l2o.gps import PolicyFileError
    from l2o.learned import pretrained_file

    ap = argparse.ArgumentParser(prog="python -m l2o.outer")
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="meta-train π (resumable; stops at the budget)")
    tr.add_argument("--method", required=True, choices=METHODS)
    tr.add_argument("--out", required=True, help="checkpoint and outputs folder")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument("--budget-min", type=positive_float, default=60.0,
                    help="training wall-time budget in minutes (default 60)")
    tr.add_argument("--like", default=None,
                    help="the GPS policy file whose features and teacher to use "
                         "(default: the shipped PSD)")
    tr.add_argument("--horizon", type=positive_int, default=None)
    tr.add_argument("--lr", type=positive_float, default=None)
    tr.add_argument("--trajectories", type=positive_int, default=None)
    tr.add_argument("--unroll", type=positive_int, default=None)
    tr.add_argument("--pairs", type=positive_int, default=None)
    tr.add_argument("--sigma", type=positive_float, default=None)
    tr.add_argument("--eval-every-min", type=positive_float, default=None)
    tr.add_argument("--curriculum", default=None,
                    help="BPTT: unroll lengths over equal shares of the budget, e.g. 20,50,100")
    tr.add_argument("--constant-features", action="store_true",
                    help="BPTT: hold the features Ψ constant (L2L's approximation) instead "
                         "of differentiating through them")
    tr.add_argument("--data-dir", default=None)
    tr.add_argument("--threads", type=positive_int, default=1)
    tr.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    overrides = {k: getattr(a, k) for k in ("horizon", "lr", "trajectories", "unroll", "pairs",
                                            "sigma") if getattr(a, k) is not None}
    if a.eval_every_min is not None:
        overrides["eval_every_s"] = 60.0 * a.eval_every_min
    if a.constant_features:
        overrides["through_features"] = False
    if a.curriculum:
        try:
            overrides["curriculum"] = tuple(int(u) for u in a.curriculum.split(","))
        except ValueError:
            tr.error(f"--curriculum: expected comma-separated integers, got {a.curriculum!r}")
    try:
        cfg = OuterConfig(method=a.method, budget_s=60.0 * a.budget_min, **overrides)
    except (TypeError, ValueError) as e:
        tr.error(str(e))
    out = Path(a.out)
    check_run_folder(tr, out, a.resume)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(a.threads)
    try:
        like = pretrained_file("psd", a.like)
        _, fcfg, meta = load_policy(like)
        problem = make_problem("mnist", 48, 48, batch_size=64, data_dir=a.data_dir)
    except (PolicyFileError, DatasetNotFoundError, DatasetFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    teacher = meta.get("teacher") or {"name": "adam", "lr": 0.01}
    run_config = meta.get("config")
    if run_config is None and (like.parent / "provenance.json").exists():
        # a snapshot chosen on validation seeds: its run's configuration is beside it
        run_config = json.loads((like.parent / "provenance.json").read_text()).get("config")
    gps_cfg = GPSConfig(**{k: v for k, v in (run_config or {}).items()
                           if k in {f.name for f in dataclasses.fields(GPSConfig)}})
    if cfg.horizon != gps_cfg.horizon:
        gps_cfg = dataclasses.replace(gps_cfg, horizon=cfg.horizon)
    trainer = OuterTrainer(problem, cfg, fcfg, teacher, out, gps_cfg)
    git_state = record.git_state()
    if a.resume:
        try:
            trainer.resume()
        except OuterCheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        log.info("resumed at %d updates, %.0f s of %.0f", trainer.updates, trainer.train_s,
                 cfg.budget_s)
    t0 = time.perf_counter()
    progress = not (a.no_progress or os.environ.get("L2O_NO_PROGRESS"))
    result = trainer.run(progress=progress)
    wall = time.perf_counter() - t0
    prov_path = out / "provenance.json"
    prov = record.provenance(" ".join(["python -m l2o.outer", *sys.argv[1:]]), wall, git_state,
                             problem=repr(problem), config=dataclasses.asdict(cfg),
                             teacher=teacher, features=dataclasses.asdict(fcfg),
                             warm_start_from=str(like), policy_file=f"pi_{cfg.method}.pt")
    record.atomic_write_json(prov_path, record.add_segment(prov_path if a.resume else None, prov))
    print(f"{cfg.method}: best validation meta-loss {result['best']['meta_loss']:.2f} after "
          f"{result['best']['updates']} updates; {result['train_s']:.0f} s of training; "
          f"π in {out / f'pi_{cfg.method}.pt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
