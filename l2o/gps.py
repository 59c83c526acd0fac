"""Convolutional guided policy search with Bregman ADMM (paper sections 3.4 and 3.5).

One GPS iteration, for each coordinate group ``g`` (W1, b1, W2, b2) independently:

1. **sample**: roll out the time-varying linear-Gaussian policy ψ on the training
   objective N times; record per-coordinate states ``s_t^j`` (features Φ), actions,
   observations Ψ, and the true objective and its gradient (:func:`sample_psi`);
2. **fit**: the linear-Gaussian dynamics ``p~(s'|s,a)``, the quadratic cost ``c~(s)``
   and the linearisation ``π~(a|s)`` of the LSTM policy, all pooled over the
   coordinates of the group (block-diagonal, tied parameters);
3. **step adjust**: rescale the KL step from predicted vs. actual improvement;
4. **BADMM inner loop**: alternate the θ-step (weighted regression of π onto ψ's shifted
   means), the dual step on λ (and ν on the last inner iteration), and the η-step (LQG
   with the BADMM-augmented cost under the KL trust region, dual gradient descent on η).

Rollouts, fits and policy training are batched over trajectories and coordinates; the
only Python loops are over time steps, groups and iterations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from l2o import badmm, dynamics, lqg, parallel, record
from l2o.features import GRAD_SCALES, FeatureConfig
from l2o.policy import LSTMPolicy, PolicyConfig
from l2o.problems import MLPProblem
from l2o.gps_rollout import (  # noqa: F401 - re-exported: the names of l2o.gps before the split
    ALL_DIVERGED,
    CostProblem,
    FeatureActor,
    GPSNumericalError,
    GroupSamples,
    Samples,
    TEACHERS,
    TeacherConfig,
    Trace,
    _coord_choice,
    _psi_tables,
    adam_teacher_actor,
    effective_step_size,
    make_teacher,
    merge_samples,
    pi_actor,
    psi_actor,
    rollout,
    sample_trajectories,
    teacher_actor,
    trace_rollout,
    trajectory_seeds)

log = logging.getLogger(__name__)


#: Choices of the string fields of :class:`GPSConfig`.
NU_UNITS = ("eta", "absolute")
PSI_FEEDBACK = ("observed", "full")
STEP_RULES = ("reference", "model")
COST_FEATURES = ("all", "x_grad")
SAMPLE_STREAMS = ("shared", "per_trajectory")


@dataclass(frozen=True)
class GPSConfig:
    """Hyperparameters of convolutional GPS-BADMM (defaults: the GPS code's where it has
    one; the table and the reasons are in book/design.md)."""

    horizon: int = 400                # T, paper: 400
    num_samples: int = 20             # trajectories of ψ per iteration, N
    num_iterations: int = 15          # GPS iterations
    inner_iterations: int = 4         # BADMM inner iterations
    coords_per_group: int = 128       # coordinates of a group stored per trajectory for fitting
    cost_subset: int = 10_000         # training examples used for the true cost during GPS (0 = all)
    kl_step: float = 0.2              # ε = kl_step · step_mult · T
    min_step_mult: float = 0.01       # floor of the trust region's step multiplier
    max_step_mult: float = 2.0         # GPS: 10; see chapter 6 (multipliers ≥ 4 blew up ψ)
    init_eta: float = 1.0             # first η of the dual descent (then the previous one)
    init_nu: float = 0.1              # initial ν_t, in the units of nu_units
    nu_units: str = "eta"             # "eta": init_nu × the η an uncoupled ψ-step needs
                                      # (ν in the cost's units); "absolute": GPS's
                                      # "init_pol_wt" as is (robotics units, 0.01)
    nu_range: float = 10.0            # ν_t stays in [ν0 / nu_range, ν0 · nu_range]
    dual_rate: float = 0.1            # α in the λ update
    nu_lower: float = 1.0             # ν ← ν/2 when KL_t < mean − nu_lower·std
    nu_upper: float = 0.5             # ν ← 2ν when KL_t ≥ mean + nu_upper·std
    psi_feedback: str = "observed"    # "observed": ψ's law reads only what π observes (no
                                      # feedback on x_j); "full": every state entry
    step_rule: str = "reference"      # "reference": GPS's step adjust (sampled cost and
                                      # ν·KL terms); "model": the earlier model-only rule
    policy_prior: bool = True         # sliding-window prior for the fits of ψ0 and π̃
    cost_window: int = 10             # the cost fit pools steps t ± cost_window
    cost_features: str = "all"        # regressors of the cost fit: "all" or "x_grad"
                                      # (x_j and its gradient features)
    dynamics_regularization: float = 1e-3  # ridge on the (s, a) block, relative to each variance
    prior: str = "window"             # dynamics prior: "window" (neighbouring steps) or "gmm"
    prior_strength: float = 150.0     # pseudo-points of the NIW prior (≈ dim of [s, a, s'])
    prior_window: int = 3             # half-width of the "window" prior, in steps
    prior_clusters: int = 8           # "gmm": components (≤ 10 as in the 2016 paper)
    prior_points: int = 20_000        # "gmm": EM subsample
    cost_ridge: float = 0.1            # ridge of the cost fit, in correlation units
    policy_steps: int = 200           # Adam steps on π per inner iteration (per group)
    policy_batch: int = 64            # coordinate sequences per Adam step
    policy_lr: float = 1e-3           # Adam step of the θ-step
    policy_clip: float = 1.0          # gradient-norm clip of the θ-step
    policy_window: int = 50           # truncated BPTT window for π (0: whole sequences)
    pretrain_steps: int = 500         # imitation of ψ0 before BADMM (book/design.md, D7)
    init_var_floor: float = 0.3       # G0 ≥ (init_var_floor · RMS teacher action)^2
    min_action_var: float = 1e-12     # floor of ψ's action variance
    eval_samples: int = 4             # π-only rollouts per iteration (diagnostics)
    seed: int = 0                     # samples, stored coordinates, π's initialisation
    sample_streams: str = "shared"    # "shared": one generator draws every sampled
                                      # trajectory's x0, minibatches and noise (the shipped
                                      # runs); "per_trajectory": each its own, so that the
                                      # N rollouts can be split among workers with identical
                                      # results (ConvolutionalGPS(executor=...), --executor)

    def __post_init__(self):
        if self.policy_window < 0:
            raise ValueError(f"Invalid policy_window: {self.policy_window} (0 or a window length)")
        for name in ("horizon", "num_samples", "num_iterations", "inner_iterations",
                     "coords_per_group", "policy_steps", "policy_batch", "eval_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"Invalid {name}: {getattr(self, name)} (must be ≥ 1)")
        for name in ("kl_step", "init_eta", "init_nu", "dual_rate", "policy_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Invalid {name}: {getattr(self, name)} (must be > 0)")
        if not 0 < self.min_step_mult <= self.max_step_mult:
            raise ValueError("Need 0 < min_step_mult ≤ max_step_mult")
        if self.prior not in ("window", "gmm"):
            raise ValueError(f"Invalid prior: {self.prior!r} (use 'window' or 'gmm')")
        choices = {"nu_units": NU_UNITS, "psi_feedback": PSI_FEEDBACK,
                   "step_rule": STEP_RULES, "cost_features": COST_FEATURES,
                   "sample_streams": SAMPLE_STREAMS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"Invalid {name}: {getattr(self, name)!r} "
                                 f"(expected one of {allowed})")
        if not self.nu_range >= 1:
            raise ValueError(f"Invalid nu_range: {self.nu_range} (must be ≥ 1)")
        if self.cost_window < 0:
            raise ValueError(f"Invalid cost_window: {self.cost_window} (must be ≥ 0)")
        if self.cost_subset < 0:
            raise ValueError(f"Invalid cost_subset: {self.cost_subset}")


# ---------------------------------------------------------------------- per-group state
@dataclass
class GroupVars:
    """BADMM variables of one coordinate group (all tied within the group)."""

    psi: lqg.LinearGaussianPolicy
    eta: float
    nu: np.ndarray          # (T,)
    lam: np.ndarray         # (T, 1)
    step_mult: float = 1.0
    pi_cov: float = 0.0     # Σ^π (scalar action)
    prev: dict = field(default_factory=dict)  # last iteration's models and ψ, for step adjust
    nu_ref: float = 0.0     # ν0, the centre of ν's allowed range (0: not set yet)


@dataclass
class GroupModels:
    """What one iteration fits for one group from ψ's samples."""

    dyn: lqg.LinearGaussianDynamics
    cost: lqg.QuadraticCost
    restrict: lqg.StateProjection | None   # the law ψ may use (None: any)
    pi_lin: lqg.LinearGaussianPolicy | None = None   # π̃, refitted after each θ-step
    mu_pi: np.ndarray | None = None                  # π's own means along the samples
    memory: tuple | None = None                      # π's window memories (θ-step BPTT)


def _hidden(cfg: GPSConfig) -> tuple[int, ...]:
    """State entries ψ's law may not read: the iterate x_j unless ``psi_feedback="full"``."""
    return () if cfg.psi_feedback == "full" else (0,)


def fit_policy(X: np.ndarray, U: np.ndarray, cfg: GPSConfig, rng: np.random.Generator,
               pi_cov: float = 0.0) -> lqg.LinearGaussianPolicy:
    """Linear-Gaussian fit of actions ``U (M, T, 1)`` on states ``X (M, T, dX)``: ψ0 and π̃.

    Per step, pooled over the group's sequences, with (``cfg.policy_prior``) a sliding
    window prior over neighbouring steps: a bias group has ~60–200 points per step for 76
    regressors, and per-step fits without a prior are noise there. With
    ``cfg.psi_feedback="observed"`` the regression leaves out the iterate x_j, which π
    never observes, and the gain on x_j is zero.
    """
    hidden = _hidden(cfg)
    dX = X.shape[2]
    Xv = np.delete(X, hidden, axis=2) if hidden else X
    prior = None
    if cfg.policy_prior:
        prior = dynamics.SlidingWindowPrior(window=cfg.prior_window, strength=cfg.prior_strength)
        prior.update(Xv, U, rng, transitions=False)
    fit = dynamics.fit_linear_gaussian_policy(Xv, U, prior=prior,
                                              regularization=cfg.dynamics_regularization,
                                              pi_cov=pi_cov, relative_regularization=True)
    return dynamics.pad_hidden(fit, hidden, dX) if hidden else fit


def fit_cost(gs: "GroupSamples", cfg: GPSConfig, feature_config: FeatureConfig
             ) -> lqg.QuadraticCost:
    """The group's quadratic cost c̃ by gradient matching, pooled over ``cfg.cost_window``."""
    features = None
    if cfg.cost_features == "x_grad":
        features = list(range(feature_config.layout["gradient"].start,
                              feature_config.layout["gradient"].stop))
    return dynamics.fit_cost_gradient_matching(gs.X, gs.grad, ridge=cfg.cost_ridge,
                                               window=cfg.cost_window, relative_ridge=True,
                                               features=features)


def _fit_group(gs: GroupSamples, cfg: GPSConfig, rng: np.random.Generator,
               feature_config: FeatureConfig = FeatureConfig()) -> GroupModels:
    if cfg.prior == "gmm":
        prior = dynamics.GMMPrior(n_clusters=cfg.prior_clusters, max_points=cfg.prior_points,
                                  strength=cfg.prior_strength)
    else:
        prior = dynamics.SlidingWindowPrior(window=cfg.prior_window, strength=cfg.prior_strength)
    prior.update(gs.X, gs.U, rng)
    dyn = dynamics.fit_dynamics(gs.X, gs.U, prior=prior,
                                regularization=cfg.dynamics_regularization,
                                known_rows="increment", relative_regularization=True)
    hidden = _hidden(cfg)
    restrict = (dynamics.fit_state_projection(gs.X, hidden, window=cfg.prior_window)
                if hidden else None)
    return GroupModels(dyn, fit_cost(gs, cfg, feature_config), restrict)


def _pi_pass(policy: LSTMPolicy, O: torch.Tensor, group_id: int, window: int = 0,
             chunk: int = 4096):
    """One no-grad pass of π along ``O (T, M, 3)``: its means and its window memories.

    Returns ``(means (T, M), memory)``; ``memory`` is ``(h, c)`` each
    ``(n_windows, M, H)``, π's memory at the start of every window of ``window`` steps
    (window 0 starts from zero memory), or ``None`` when ``window`` is 0 or ≥ T.
    The θ-step's truncated BPTT starts its windows from this memory, so one pass serves
    both the linearisation π̃ and the next θ-step.
    """
    T, M, _ = O.shape
    windowed = 0 < window < T
    n_win = (T + window - 1) // window if windowed else 1
    w = window if windowed else T
    H = policy.config.hidden_size
    out = torch.empty(T, M)
    h_all = torch.zeros(n_win, M, H) if windowed else None
    c_all = torch.zeros(n_win, M, H) if windowed else None
    with torch.no_grad():
        for s in range(0, M, chunk):
            hidden = None
            for k in range(n_win):
                ts = slice(k * w, min(T, (k + 1) * w))
                out[ts, s:s + chunk], hidden = policy.forward_sequence(
                    O[ts, s:s + chunk], group_id, hidden, return_hidden=True)
                if windowed and k + 1 < n_win:
                    h_all[k + 1, s:s + chunk], c_all[k + 1, s:s + chunk] = hidden
    return out, ((h_all, c_all) if windowed else None)


def _pi_means(policy: LSTMPolicy, gs: GroupSamples, group_id: int, batch: int = 4096):
    """π's mean actions along ψ's samples: ``(M, T, 1)`` float64."""
    out, _ = _pi_pass(policy, gs.O, group_id, 0, batch)
    return out.T.double().numpy()[..., None]


def _fit_pi(policy, gs, group_id, pi_cov, cfg, rng):
    """π̃ and π's means along the samples; also returns π's window memories."""
    out, memory = _pi_pass(policy, gs.O, group_id, cfg.policy_window)
    mu = out.T.double().numpy()[..., None]
    return fit_policy(gs.X, mu, cfg, rng, pi_cov), mu, memory


def _window_memory(policy: LSTMPolicy, O: torch.Tensor, group_id: int, window: int,
                   chunk: int = 4096):
    """π's memory ``(h, c)`` at the start of every window of ``window`` steps (no grad).

    Returns ``h, c`` of shape ``(n_windows, M, H)``; window 0 starts from zero memory.
    """
    T = O.shape[0]
    if not 0 < window < T:
        raise ValueError(f"window must be in (0, {T}), got {window}")
    return _pi_pass(policy, O, group_id, window, chunk)[1]


def train_policy(policy: LSTMPolicy, group_id: int, O: torch.Tensor, target: np.ndarray,
                 weight: np.ndarray, steps: int, batch: int, lr: float, clip: float,
                 gen: torch.Generator, window: int = 0, memory=None) -> list[float]:
    """θ-step for one group: weighted regression of π's means onto the targets by BPTT.

    Minimises ``Σ_t w_t (μ^π(o^j_{≤t}) − target_t^j)^2 / 2`` over minibatches of coordinate
    sequences (the last term of the θ-subproblem; its other terms do not depend on ω).

    Args:
        O: observations ``(T, M, 3)``.
        target: ``(M, T)``; weight: ``(T,)`` (normalised ν_t/G_t).
        window: 0 back-propagates through whole sequences; ``W > 0`` trains on windows of
            ``W`` steps (truncated BPTT) that start from π's memory at the window's start,
            computed once per call with the weights at the start of the call (a
            cost-saving approximation: the memory goes slightly stale during the call).
        memory: π's window memories at the current weights, from :func:`_pi_pass`
            (computed here when ``None``).
    """
    params = policy.group_parameters(group_id)
    opt = torch.optim.Adam(params, lr=lr)
    # Regress in units of the group's output scale σ_g: raw steps are ~1e-3, so the raw
    # squared error (~1e-8) would give gradients at the size of Adam's ε and stall it.
    scale = float(policy.output_scale[group_id])
    tgt = torch.as_tensor(target.T / scale, dtype=torch.float32)  # (T, M)
    w = torch.as_tensor(weight, dtype=torch.float32)[:, None]
    T, M = O.shape[0], O.shape[1]
    windowed = 0 < window < T
    if windowed:
        h_all, c_all = memory if memory is not None else _window_memory(policy, O, group_id,
                                                                         window)
        n_win = h_all.shape[0]
    losses = []
    for _ in range(steps):
        sel = torch.randint(0, M, (min(batch, M),), generator=gen)
        if windowed:
            k = int(torch.randint(0, n_win, (1,), generator=gen))
            ts = slice(k * window, min(T, (k + 1) * window))
            pred = policy.forward_sequence(O[ts, sel], group_id,
                                           (h_all[k, sel], c_all[k, sel])) / scale
            loss = 0.5 * (w[ts] * (pred - tgt[ts][:, sel]) ** 2).mean()
        else:
            pred = policy.forward_sequence(O[:, sel], group_id) / scale
            loss = 0.5 * (w * (pred - tgt[:, sel]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        losses.append(loss.item())
    return losses


# ---------------------------------------------------------------------------- the loop
class ConvolutionalGPS:
    """Meta-trains π on one objective with convolutional GPS-BADMM.

    Args:
        problem: the training objective (e.g. MNIST 48-48-10, batch 64).
        config: :class:`GPSConfig`.
        feature_config: :class:`~l2o.features.FeatureConfig` (Φ and Ψ).
        policy_config: :class:`~l2o.policy.PolicyConfig` (π).
        teacher_hparams: the teacher ψ0 starts from, ``{"lr": ..., "momentum": ...}`` for
            momentum (default) or ``{"name": "adam", "lr": ...}`` (:class:`TeacherConfig`).
        checkpoint_dir: where every iteration is checkpointed (resumable).
        executor: where the ``N`` sampled rollouts of an iteration (and the teacher's)
            run: a ``concurrent.futures``-style executor (:func:`l2o.parallel.executor`:
            local processes or Dask), in ``chunks`` parts; None runs them here.  Needs
            ``config.sample_streams="per_trajectory"``, under which the samples do not
            depend on the executor or the number of parts.
        chunks: parts the sampled rollouts are split into (default: 1 without an
            executor, else 2); at most ``N``.

    Raises:
        ValueError: an executor or ``chunks > 1`` with ``sample_streams="shared"`` (one
            generator for all trajectories cannot be split), or ``chunks < 1``.
    """

    def __init__(self, problem: MLPProblem, config: GPSConfig = GPSConfig(),
                 feature_config: FeatureConfig = FeatureConfig(),
                 policy_config: PolicyConfig = PolicyConfig(),
                 teacher_hparams: dict | None = None, checkpoint_dir: str | Path | None = None,
                 executor=None, chunks: int | None = None):
        chunks = (1 if executor is None else 2) if chunks is None else chunks
        if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
            raise ValueError(f"Invalid chunks: {chunks!r} (a positive integer)")
        if (executor is not None or chunks > 1) and config.sample_streams != "per_trajectory":
            raise ValueError(
                "splitting GPS's sampled rollouts among workers needs a random stream per "
                "trajectory: GPSConfig(sample_streams='per_trajectory') "
                "(python -m l2o.gps train --sample-streams per_trajectory)")
        self.executor, self.chunks = executor, min(chunks, config.num_samples)
        self.problem, self.cfg = problem, config
        self.fcfg, self.pcfg = feature_config, policy_config
        # a wrong name or step fails here, not later; the dict form is what is stored
        self.teacher = (TeacherConfig() if teacher_hparams is None
                        else TeacherConfig.from_dict(teacher_hparams))
        self.teacher_hparams = self.teacher.to_dict()
        self.ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.cost = CostProblem(problem, config.cost_subset, config.seed)
        self.policy = LSTMPolicy(policy_config, generator=torch.Generator().manual_seed(config.seed))
        self.policy.feature_config = feature_config  # π carries the features it reads
        self.torch_gen = torch.Generator().manual_seed(config.seed)
        self.np_rng = np.random.default_rng(config.seed)
        self.groups: list[GroupVars] = []
        self.iteration = 0
        self.history: list[dict] = []

    # --------------------------------------------------------------- initialisation
    def initialize(self) -> dict:
        """ψ0 from the teacher's rollouts and π pre-trained to imitate it (book/design.md, D7)."""
        cfg, T = self.cfg, self.cfg.horizon
        t0 = time.perf_counter()
        stored = _coord_choice(self.problem, cfg.coords_per_group, self.np_rng)
        samples = self._draw(0, stored, teacher=self.teacher)
        self.policy.fit_normalization_groups([gs.O.reshape(-1, 3) for gs in samples.groups])
        self.groups = []
        for gid, gs in enumerate(samples.groups):
            psi = fit_policy(gs.X, gs.U, cfg, self.np_rng)
            rms = float(np.sqrt(np.mean(gs.U ** 2)))
            floor = max((cfg.init_var_floor * rms) ** 2, cfg.min_action_var)
            cov = np.maximum(psi.cov, floor)
            psi = lqg.LinearGaussianPolicy(psi.K, psi.k, cov)
            self.policy.set_output_scale(gid, max(rms, 1e-8))
            self.groups.append(GroupVars(psi=psi, eta=cfg.init_eta,
                                         nu=np.full(T, cfg.init_nu), lam=np.zeros((T, 1)),
                                         pi_cov=float(np.mean(cov))))
        # pre-train π on ψ0's means along the teacher's states
        pre = {}
        for gid, gs in enumerate(samples.groups):
            target = self.groups[gid].psi.mean(gs.X)  # ψ0's mean actions (M, T, 1)
            losses = train_policy(self.policy, gid, gs.O, target[..., 0], np.ones(T),
                                  cfg.pretrain_steps, cfg.policy_batch, cfg.policy_lr,
                                  cfg.policy_clip, self.torch_gen, cfg.policy_window)
            pre[self.problem.groups[gid].name] = losses[-1] if losses else float("nan")
        info = {"teacher_cost": float(np.nanmean(samples.true_loss[:, 1:].sum(1))),
                "pretrain_loss": pre, "wall_init": time.perf_counter() - t0}
        self._save()
        return info

    # ------------------------------------------------------------------- iteration
    def iterate(self) -> dict:
        """One GPS iteration as a list of named phases; returns its diagnostics.

        sample ψ → fit the local models → adjust the step → per group, the BADMM inner
        loop (θ-step, dual step, ψ-step) → evaluate π and ψ's mean.
        """
        cfg = self.cfg
        times = {}
        t0 = time.perf_counter()
        samples = self._sample()
        times["sample"] = time.perf_counter() - t0
        diag = {"iteration": self.iteration,
                "psi_cost": float(np.nanmean(samples.true_loss[:, 1:].sum(1))),
                "psi_final": float(np.nanmean(samples.true_loss[:, -1])), "groups": {}}
        models = []
        for gid, gs in enumerate(samples.groups):
            t1 = time.perf_counter()
            models.append(self._fit(gid, gs))
            times[f"fit_{self.problem.groups[gid].name}"] = time.perf_counter() - t1
        if self.iteration == 0 and cfg.nu_units == "eta":
            self._init_nu(models)
        if self.iteration > 0:
            diag["step_adjust"] = self._adjust_step(samples, models, diag["psi_cost"])
        for gid, (gs, m) in enumerate(zip(samples.groups, models)):
            diag["groups"][self.problem.groups[gid].name] = self._badmm(gid, gs, m, times)
        t2 = time.perf_counter()
        diag["pi_cost"], diag["pi_final"] = self.evaluate_pi(cfg.eval_samples)
        # ψ's mean (noise off) on the same validation streams: does ψ improve, and
        # how far behind is π?
        diag["psi_mean_cost"], diag["psi_mean_final"] = self.evaluate_psi_mean(cfg.eval_samples)
        times["eval_pi"] = time.perf_counter() - t2
        diag["times"] = times
        diag["wall"] = time.perf_counter() - t0
        self.iteration += 1
        self.history.append(diag)
        self._save()
        return diag

    def _sample(self) -> Samples:
        """N rollouts of ψ (with its exploration noise) on the training objective."""
        cfg, P = self.cfg, self.problem
        stored = _coord_choice(P, cfg.coords_per_group, self.np_rng)
        samples = self._draw(1, stored, psis=[g.psi for g in self.groups])
        if samples.diverged:
            log.warning("%d of %d ψ samples produced non-finite values", samples.diverged,
                        cfg.num_samples)
        return samples

    def _draw(self, phase: int, stored: list[np.ndarray], **actor) -> Samples:
        """The ``N`` rollouts of the teacher (phase 0, ``teacher=``) or of ψ with its noise
        (phase 1, ``psis=``).  Shared streams: in one call, from :attr:`torch_gen`.
        Per-trajectory streams (:func:`trajectory_seeds`): in :attr:`chunks` parts
        (:func:`sample_trajectories`), on :attr:`executor` when there is one."""
        cfg = self.cfg
        if cfg.sample_streams == "shared":
            act = (actor["teacher"].actor() if "teacher" in actor
                   else psi_actor(self.problem, actor["psis"], self.torch_gen))
            return rollout(self.problem, self.cost, cfg.horizon, cfg.num_samples, act,
                           self.fcfg, self.torch_gen, stored)
        seeds = trajectory_seeds(cfg.seed, phase, self.iteration, cfg.num_samples)
        parts = [list(map(int, c)) for c in np.array_split(seeds, self.chunks)]
        args = (self.problem, self.cost, cfg.horizon, self.fcfg)
        if self.executor is None:
            return merge_samples([sample_trajectories(*args, c, stored, **actor) for c in parts])
        futures = [self.executor.submit(sample_trajectories, *args, c, stored, **actor)
                   for c in parts]
        return merge_samples([f.result() for f in futures])

    def _fit(self, gid: int, gs: GroupSamples) -> GroupModels:
        """Dynamics, cost, ψ's allowed law, and π̃ at the current π, for one group."""
        m = _fit_group(gs, self.cfg, self.np_rng, self.fcfg)
        m.pi_lin, m.mu_pi, m.memory = _fit_pi(self.policy, gs, gid, self.groups[gid].pi_cov,
                                              self.cfg, self.np_rng)
        return m

    def _epsilon(self, gv: GroupVars) -> float:
        return self.cfg.kl_step * gv.step_mult * self.cfg.horizon

    def _init_nu(self, models: list[GroupModels]) -> None:
        """ν0 per group in the cost's units: ``init_nu`` × the η of an uncoupled ψ-step.

        The robotics default ν0 = 0.01 is in the units of a robot's cost; here the η that
        an uncoupled LQG step needs to meet the trust region is ~1e-3, so ν0 = 0.01 would
        spend the whole KL budget pulling ψ toward π̃ instead of lowering the cost.
        """
        for gv, m in zip(self.groups, models):
            _, eta, info = lqg.solve_kl_constrained(m.dyn, m.cost, gv.psi, None, None, None,
                                                    self._epsilon(gv), gv.eta,
                                                    restrict=m.restrict)
            gv.eta = float(eta)
            gv.nu_ref = self.cfg.init_nu * gv.eta
            gv.nu = np.full(self.cfg.horizon, gv.nu_ref)

    def _badmm(self, gid: int, gs: GroupSamples, m: GroupModels, times: dict) -> dict:
        """The BADMM inner loop of one group: θ-step, dual step, ψ-step."""
        cfg, gv = self.cfg, self.groups[gid]
        name = self.problem.groups[gid].name
        t_pol = t_lqg = 0.0
        rejected = 0
        prev_psi = gv.psi
        info = {}
        for inner in range(cfg.inner_iterations):
            if not (self.iteration == 0 and inner == 0):
                ts = time.perf_counter()
                self._theta_step(gid, gs, m)
                t_pol += time.perf_counter() - ts
                self._dual_step(gv, gs, m, last=inner == cfg.inner_iterations - 1)
            ts = time.perf_counter()
            ok, info = self._psi_step(gv, m, prev_psi, name)
            rejected += not ok
            t_lqg += time.perf_counter() - ts
        times[f"policy_{name}"] = t_pol
        times[f"lqg_{name}"] = t_lqg
        mc_kl = badmm.kl_psi_pi_per_t(gv.psi, m.mu_pi, gv.pi_cov, gs.X)
        gv.prev = {"dyn": m.dyn, "cost": m.cost, "psi_old": prev_psi, "psi_new": gv.psi,
                   "pi_lin": m.pi_lin,
                   "mc_kl_old": badmm.kl_psi_pi_per_t(prev_psi, m.mu_pi, gv.pi_cov, gs.X),
                   "kl_reached": float(info.get("kl", np.nan))}
        return dict(eta=gv.eta, nu_mean=float(np.mean(gv.nu)), nu_ref=gv.nu_ref,
                    step_mult=gv.step_mult, kl_psi_pi=float(np.mean(mc_kl)),
                    kl_pi_psi=float(np.mean(badmm.kl_pi_psi_per_t(m.pi_lin, gv.psi, gs.X))),
                    kl_reached=float(info.get("kl", np.nan)), kl_target=self._epsilon(gv),
                    dgd_iters=int(info.get("iterations", 0)),
                    pd_failures=int(info.get("pd_failures", 0)), rejected=rejected,
                    dyn_residual=float(np.mean(np.trace(m.dyn.dyn_covar[:, 1:, 1:],
                                                        axis1=1, axis2=2))),
                    pi_cov=gv.pi_cov,
                    model_improvement=_lqg_cost(m.dyn, m.cost, prev_psi)
                    - _lqg_cost(m.dyn, m.cost, gv.psi))

    def _theta_step(self, gid: int, gs: GroupSamples, m: GroupModels) -> None:
        """Supervised step on π toward ψ's shifted means, then refit π̃ and Σ^π."""
        cfg, gv = self.cfg, self.groups[gid]
        tg = badmm.pi_targets(gv.psi, gs.X, gv.lam, gv.nu)
        # weight of step t in the regression: ν_t G_t⁻¹, normalised as in GPS
        w_t = badmm.normalize_weights(tg.weight * tg.precision[:, 0, 0])
        train_policy(self.policy, gid, gs.O, tg.mean[..., 0], w_t, cfg.policy_steps,
                     cfg.policy_batch, cfg.policy_lr, cfg.policy_clip, self.torch_gen,
                     cfg.policy_window, m.memory)
        gv.pi_cov = badmm.closed_form_pi_cov(gv.psi, gv.nu).item()
        m.pi_lin, m.mu_pi, m.memory = _fit_pi(self.policy, gs, gid, gv.pi_cov, cfg,
                                              self.np_rng)

    def _dual_step(self, gv: GroupVars, gs: GroupSamples, m: GroupModels, last: bool) -> None:
        """λ toward agreement of the means; ν on the last inner iteration (GPS mode 3)."""
        cfg = self.cfg
        gv.lam = badmm.dual_update_lambda(gv.lam, gv.nu, gv.psi, gs.X, m.mu_pi, cfg.dual_rate)
        if last:
            # E_ψ[KL(ψ‖π)] with π's own means, as the reference computes it
            kl_t = badmm.kl_psi_pi_per_t(gv.psi, m.mu_pi, gv.pi_cov, gs.X)
            lo, hi = 0.0, np.inf
            if gv.nu_ref > 0:
                lo, hi = gv.nu_ref / cfg.nu_range, gv.nu_ref * cfg.nu_range
            gv.nu = badmm.update_nu(gv.nu, kl_t, lower=cfg.nu_lower, upper=cfg.nu_upper,
                                    min_nu=lo, max_nu=hi)

    def _psi_step(self, gv: GroupVars, m: GroupModels, prev_psi, name: str):
        """LQG on the BADMM-augmented cost under the KL trust region (DGD on η)."""
        cfg = self.cfg
        eps = self._epsilon(gv)
        psi, eta, info = lqg.solve_kl_constrained(m.dyn, m.cost, prev_psi, gv.lam, gv.nu,
                                                  m.pi_lin, eps, gv.eta, restrict=m.restrict)
        if not np.isfinite(info["kl"]) or info["kl"] > 2.0 * eps:
            # The fitted model could not honour the trust region even at the largest η
            # (typically an unstable dynamics fit): keep the current ψ rather than take an
            # unbounded step, and shrink the step (the next solve uses the new ε).
            log.warning("group %s: rejected ψ update (KL %.3g > 2ε = %.3g)", name,
                        info["kl"], 2.0 * eps)
            gv.step_mult = max(cfg.min_step_mult, 0.5 * gv.step_mult)
            return False, info
        gv.psi, gv.eta = psi, eta
        return True, info

    def _adjust_step(self, samples: Samples, models: list[GroupModels], psi_cost: float
                     ) -> dict:
        """Trust-region size from predicted vs. actual improvement of the last ψ-step."""
        if self.cfg.step_rule == "model":
            for gv, m in zip(self.groups, models):
                if gv.prev and "dyn" in gv.prev:
                    gv.step_mult = self._step_adjust(gv, m.dyn, m.cost)
            return {}
        return self._reference_step_adjust(samples, models, psi_cost)

    def _reference_step_adjust(self, samples: Samples, models: list[GroupModels],
                               psi_cost: float) -> dict:
        """GPS's step adjust (``_stepadjust`` of the BADMM reference), for tied groups.

        Predicted improvement: the LQG objective (fitted cost + Σ_t ν_t KL(ψ‖π̃)) of the
        previous ψ minus that of the new ψ, both under the dynamics and cost the last
        ψ-step optimised, per coordinate, × the group's size, summed over groups. Actual
        improvement: the same objective measured on samples, the meta-loss of the
        previous iteration's samples minus this iteration's, with the sampled ν·KL terms.
        (Our fitted costs carry no constant, so costs fitted at two iterations cannot be
        compared: the sampled true loss is the actual cost.) One factor for all groups,
        since all groups move one trajectory. A trust region that was not used up
        shrinks the multiplier to the step actually taken.
        """
        cfg, T = self.cfg, self.cfg.horizon
        predicted, kl_old_mc, kl_new_mc = 0.0, 0.0, 0.0
        for gid, (gv, m, gs) in enumerate(zip(self.groups, models, samples.groups)):
            p = gv.prev
            if not p or "dyn" not in p:
                return {}
            size = self.problem.groups[gid].size
            nu = gv.nu
            old = _lqg_objective(p["dyn"], p["cost"], p["psi_old"], p["pi_lin"], nu)
            new = _lqg_objective(p["dyn"], p["cost"], p["psi_new"], m.pi_lin, nu)
            predicted += size * (old - new)
            kl_old_mc += size * float(np.sum(nu * p["mc_kl_old"]))
            kl_new_mc += size * float(np.sum(
                nu * badmm.kl_psi_pi_per_t(gv.psi, m.mu_pi, gv.pi_cov, gs.X)))
        prev_cost = self.history[-1]["psi_cost"]
        actual = (prev_cost + kl_old_mc) - (psi_cost + kl_new_mc)
        out = {"predicted": predicted, "actual": actual, "groups": {}}
        for gid, gv in enumerate(self.groups):
            before = gv.step_mult
            used = gv.prev["kl_reached"] / (cfg.kl_step * T)
            if np.isfinite(used) and used < gv.step_mult:
                gv.step_mult = max(used, cfg.min_step_mult)
            gv.step_mult = badmm.step_adjust(0.0, -predicted, -actual, gv.step_mult,
                                             min_mult=cfg.min_step_mult,
                                             max_mult=cfg.max_step_mult)
            out["groups"][self.problem.groups[gid].name] = {"before": before,
                                                            "after": gv.step_mult}
        log.info("step adjust: predicted %.3f, actual %.3f", predicted, actual)
        return out

    def _step_adjust(self, gv: GroupVars, dyn, cost) -> float:
        """The model-only rule (``step_rule="model"``, before the reference rule)."""
        p = gv.prev
        # All three under the newly fitted cost (it has no constant term)
        old_pred = _lqg_cost(p["dyn"], cost, p["psi_old"])
        new_pred = _lqg_cost(p["dyn"], cost, p["psi_new"])
        new_act = _lqg_cost(dyn, cost, p["psi_new"])
        return badmm.step_adjust(old_pred, new_pred, new_act, gv.step_mult,
                                 min_mult=self.cfg.min_step_mult, max_mult=self.cfg.max_step_mult)

    def evaluate_pi(self, n: int, seed: int | None = None) -> tuple[float, float]:
        """Meta-loss Σ_t f(x_t) and final f of π-only rollouts (deterministic, no noise)."""
        gen = torch.Generator().manual_seed(10_000 + self.iteration if seed is None else seed)
        s = rollout(self.problem, self.cost, self.cfg.horizon, n,
                    pi_actor(self.problem, self.policy), self.fcfg, gen, None, need_states=False)
        return float(np.nanmean(s.true_loss[:, 1:].sum(1))), float(np.nanmean(s.true_loss[:, -1]))

    def evaluate_psi_mean(self, n: int, seed: int | None = None) -> tuple[float, float]:
        """As :meth:`evaluate_pi` for ψ's mean actions ``K_t s_t + k_t`` (no exploration noise)."""
        gen = torch.Generator().manual_seed(10_000 + self.iteration if seed is None else seed)
        act = psi_actor(self.problem, [g.psi for g in self.groups], gen, noise=False)
        s = rollout(self.problem, self.cost, self.cfg.horizon, n, act, self.fcfg, gen, None)
        return float(np.nanmean(s.true_loss[:, 1:].sum(1))), float(np.nanmean(s.true_loss[:, -1]))

    # ----------------------------------------------------------------- run, save, load
    def run(self, num_iterations: int | None = None, callback=None, progress: bool = False):
        """Initialise if needed, then iterate to ``num_iterations`` (resumes after a stop)."""
        total = self.cfg.num_iterations if num_iterations is None else num_iterations
        if not self.groups:
            self.init_info = self.initialize()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.iteration, desc="GPS iterations")
        while self.iteration < total:
            d = self.iterate()
            if callback:
                callback(d)
            if bar:
                bar.update(1)
                bar.set_postfix(psi=f"{d['psi_cost']:.1f}", pi=f"{d['pi_cost']:.1f}")
        if bar:
            bar.close()
        return self.history

    def state_dict(self) -> dict:
        return {
            "config": dataclasses.asdict(self.cfg),
            "feature_config": dataclasses.asdict(self.fcfg),
            "policy_config": dataclasses.asdict(self.pcfg),
            "teacher_hparams": self.teacher_hparams,
            "iteration": self.iteration,
            "history": self.history,
            "policy": self.policy.state_dict(),
            "groups": [_group_to_dict(g) for g in self.groups],
            "torch_gen": self.torch_gen.get_state(),
            "np_rng": self.np_rng.bit_generator.state,
            "init_info": getattr(self, "init_info", None),
        }

    def load_state_dict(self, sd: dict):
        # The number of iterations is a target, not part of the algorithm: a run may be
        # continued past it (``--resume --num-iterations N``).
        ours = {**dataclasses.asdict(self.cfg), "num_iterations": None}
        theirs = {**sd["config"], "num_iterations": None}
        if theirs != ours:
            diff = {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}
            raise ValueError(f"checkpoint was made with another GPS configuration: {diff} "
                             "(checkpoint value, requested value)")
        saved_f = FeatureConfig(**sd.get("feature_config", {}))
        if saved_f != self.fcfg:
            raise ValueError(f"checkpoint was made with other features: {saved_f} "
                             f"(requested {self.fcfg})")
        self.iteration = sd["iteration"]
        self.history = sd["history"]
        self.policy.load_state_dict(sd["policy"])
        self.groups = [_group_from_dict(d) for d in sd["groups"]]
        self.torch_gen.set_state(sd["torch_gen"])
        self.np_rng.bit_generator.state = sd["np_rng"]
        self.init_info = sd.get("init_info")

    def _save(self):
        """``checkpoint.pt`` (a few MB: small enough to commit) and ``models.pt``.

        The last iteration's fitted dynamics and costs, which only the next step adjust
        reads, are ~50 MB per group at the paper's scale; they go to ``models.pt``. A run
        resumed without that file (e.g. in a fresh clone) skips one step adjust.
        """
        if self.ckpt_dir is None:
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        sd = self.state_dict()
        models = []
        for g in sd["groups"]:
            prev = dict(g["prev"] or {})
            models.append({k: prev.pop(k) for k in _LARGE_PREV if k in prev})
            g["prev"] = prev
        # tensors and plain values only, so that reading it back runs no code
        for name, obj in (("models.pt", {"format": CHECKPOINT_FORMAT,
                                         "iteration": self.iteration, "groups": models}),
                          ("checkpoint.pt", {"format": CHECKPOINT_FORMAT, **sd})):
            record.atomic_torch_save(self.ckpt_dir / name, to_safe(obj))  # interruption-safe

    def resume(self) -> bool:
        """Load ``checkpoint_dir/checkpoint.pt`` if present; returns whether it did.

        The file is read with ``torch.load(weights_only=True)``; a checkpoint written
        before the safe format (numpy arrays and LQG containers pickled as objects) is
        read with exactly those types allowed, and rewritten safely at the next save.

        Raises:
            ValueError: the file is unreadable, holds other objects, or was made with
                another configuration.
        """
        path = None if self.ckpt_dir is None else self.ckpt_dir / "checkpoint.pt"
        if path is None or not path.exists():
            return False
        try:
            sd = safe_load(path)
        except UnsafeFileError as e:
            raise ValueError(f"refusing to read GPS checkpoint {path}: {e}. Delete it to start "
                             "afresh.") from e
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
            raise ValueError(f"cannot read GPS checkpoint {path}: {e}. "
                             "Delete it to start afresh.") from e
        if not isinstance(sd, dict):
            raise ValueError(f"{path} holds a {type(sd).__name__}, not a GPS checkpoint. "
                             "Delete it to start afresh.")
        sd = from_safe(sd)
        sd.pop("format", None)
        models = self._read_models(sd["iteration"])
        for g, m in zip(sd["groups"], models or []):
            if g.get("prev"):
                g["prev"] = {**g["prev"], **m}
        if models is None and any(g.get("prev") and "dyn" not in g["prev"]
                                  for g in sd["groups"]):
            log.warning("%s: the last iteration's fitted models (models.pt) are missing; "
                        "the next step adjust is skipped", self.ckpt_dir)
            for g in sd["groups"]:
                g["prev"] = {}
        self.load_state_dict(sd)
        return True

    def _read_models(self, iteration: int):
        path = self.ckpt_dir / "models.pt"
        if not path.exists():
            return None
        try:
            blob = from_safe(safe_load(path))
        except Exception as e:  # noqa: BLE001 - an unreadable cache is only a lost step adjust
            log.warning("cannot read %s (%s); the next step adjust is skipped", path, e)
            return None
        if not isinstance(blob, dict) or blob.get("iteration") != iteration:
            log.warning("%s is from another iteration; the next step adjust is skipped", path)
            return None
        return blob["groups"]


#: The parts of a group's ``prev`` that are large (saved to ``models.pt``).
_LARGE_PREV = ("dyn", "cost")


def _lqg_cost(dyn, cost, psi) -> float:
    mu, sigma = lqg.forward_pass(dyn, psi)
    return float(np.sum(lqg.expected_cost(cost, mu, sigma)))


def _lqg_objective(dyn, cost, psi, pi_lin, nu) -> float:
    """Σ_t E[c̃_t] + ν_t E[KL(ψ‖π̃)] along ψ's trajectory distribution under ``dyn``
    (one forward pass for both terms)."""
    mu, sigma = lqg.forward_pass(dyn, psi)
    total = float(np.sum(lqg.expected_cost(cost, mu, sigma)))
    if pi_lin is not None:
        total += float(np.sum(nu * lqg.traj_kl(psi, pi_lin, mu, sigma)[1]))
    return total


def _group_to_dict(g: GroupVars) -> dict:
    return {"K": g.psi.K, "k": g.psi.k, "cov": g.psi.cov, "eta": g.eta, "nu": g.nu,
            "lam": g.lam, "step_mult": g.step_mult, "pi_cov": g.pi_cov, "prev": g.prev,
            "nu_ref": g.nu_ref}


def _group_from_dict(d: dict) -> GroupVars:
    return GroupVars(psi=lqg.LinearGaussianPolicy(d["K"], d["k"], d["cov"]), eta=d["eta"],
                     nu=d["nu"], lam=d["lam"], step_mult=d["step_mult"], pi_cov=d["pi_cov"],
                     prev=d["prev"], nu_ref=d.get("nu_ref", 0.0))


# ------------------------------------------------------------------------------- files
#: Format tag of the policy files written by :func:`save_policy`.
POLICY_FORMAT = "l2o-psd-v1"
#: Format tag of GPS checkpoints in the safe layout (tensors and plain values only);
#: older checkpoints have no tag.
CHECKPOINT_FORMAT = "l2o.gps.checkpoint/2"


class PolicyFileError(ValueError):
    """A saved policy file is unreadable or does not match the requested configuration."""


class UnsafeFileError(ValueError):
    """A file holds Python objects that reading it would have to construct or call."""


#: Containers of a GPS checkpoint written before the safe layout, by class name.
_DATACLASSES = {cls.__name__: cls for cls in
                (lqg.LinearGaussianPolicy, lqg.LinearGaussianDynamics, lqg.QuadraticCost)}


def to_safe(obj):
    """``obj`` with numpy arrays and LQG containers replaced by tensors and plain dicts.

    The result holds only tensors, numbers, strings, ``None`` and dicts, lists and
    tuples of them, which ``torch.load(weights_only=True)`` reads; :func:`from_safe`
    inverts it exactly (arrays keep their dtype and values bit for bit).
    """
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.array(obj))}  # a writable copy
    if isinstance(obj, np.generic):
        return obj.item()
    if dataclasses.is_dataclass(obj) and type(obj).__name__ in _DATACLASSES:
        return {"__dataclass__": type(obj).__name__,
                "fields": {f.name: to_safe(getattr(obj, f.name))
                           for f in dataclasses.fields(obj) if f.init}}
    if isinstance(obj, dict):
        return {k: to_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_safe(v) for v in obj)
    return obj


def from_safe(obj):
    """The inverse of :func:`to_safe` (a no-op on values :func:`to_safe` leaves alone)."""
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__"}:
            return obj["__ndarray__"].numpy()
        if set(obj) == {"__dataclass__", "fields"}:
            name = obj["__dataclass__"]
            if name not in _DATACLASSES:
                raise ValueError(f"unknown container {name!r} (known: {sorted(_DATACLASSES)})")
            return _DATACLASSES[name](**from_safe(obj["fields"]))
        return {k: from_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_safe(v) for v in obj)
    return obj


def _legacy_globals() -> dict[str, object]:
    """What files written before the safe layout may hold, by pickled name: numpy arrays,
    dtypes and scalars, and the LQG containers.  Constructing them runs no code of the file."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    allowed: dict[str, object] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[f"{mod}._reconstruct"] = multiarray._reconstruct
        allowed[f"{mod}.scalar"] = multiarray.scalar
    for name in dir(getattr(np, "dtypes", None)):
        if name.endswith("DType"):
            allowed[f"numpy.dtypes.{name}"] = getattr(np.dtypes, name)
    for cls in _DATACLASSES.values():
        allowed[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return allowed


def safe_load(path: str | Path):
    """``torch.load`` that cannot run code from the file.

    Reads with ``weights_only=True``.  A file written by an earlier version of this
    package may also hold numpy arrays and LQG containers: those types alone are then
    allowed (:func:`_legacy_globals`), so old checkpoints stay readable.

    Raises:
        UnsafeFileError: the file holds any other Python object (its name is given).
        Exception: whatever ``torch.load`` raises for a corrupt or truncated file.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - classified below
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - not a zip checkpoint: a raw pickle, or damaged
            if "Unsupported global" in str(first) or "GLOBAL" in str(first):
                raise UnsafeFileError(f"{path} holds Python objects other than tensors "
                                      "(a raw pickle)") from first
            raise first
        allowed = _legacy_globals()
        refused = sorted(g for g in unsafe if g not in allowed)
        if refused:
            raise UnsafeFileError(
                f"{path} holds Python objects that loading would have to construct or call "
                f"({', '.join(refused)}); l2o reads its files with "
                "torch.load(weights_only=True) so that a file cannot run code, and refuses "
                "it") from first
        if not unsafe:
            raise first
        # all of them: unpickling a dtype also builds its class (numpy.dtypes.*DType)
        with torch.serialization.safe_globals([(obj, g) for g, obj in allowed.items()]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
        log.info("%s: read a file written before the safe format (numpy arrays, LQG "
                 "containers); it is rewritten safely when saved again", path)
        return obj


def save_policy(path: str | Path, policy: LSTMPolicy, feature_config: FeatureConfig | None = None,
                meta: dict | None = None) -> None:
    """Write π (weights, frozen statistics, configurations) to ``path`` atomically.

    The file holds tensors and plain values only (``torch.load(weights_only=True)``
    reads it), including the :class:`~l2o.features.FeatureConfig` π reads.

    Args:
        path: the file (conventionally ``*.pt``).
        policy: the trained policy.
        feature_config: its features; default ``policy.feature_config``.
        meta: free-form JSON-like values stored with it.

    Raises:
        ValueError: the features are unknown, or differ from ``policy.feature_config``.
    """
    carried = getattr(policy, "feature_config", None)
    if feature_config is None:
        feature_config = carried
    if feature_config is None:
        raise ValueError("the features of the policy are unknown: pass feature_config")
    if carried is not None and carried != feature_config:
        raise ValueError(f"feature_config {feature_config} differs from the policy's own "
                         f"{carried}")
    blob = {"format": POLICY_FORMAT, "policy": policy.state_dict(),
            "policy_config": dataclasses.asdict(policy.config),
            "feature_config": dataclasses.asdict(feature_config),
            "meta": to_safe(meta or {})}
    record.atomic_torch_save(path, blob)


def load_policy(path: str | Path) -> tuple[LSTMPolicy, FeatureConfig, dict]:
    """Read a file written by :func:`save_policy` (or a GPS checkpoint), running no code.

    The file is read with ``torch.load(weights_only=True)``: a file that holds other
    Python objects is refused, not executed.  The weights must be finite and the input
    standardisation and output scales positive.

    Returns:
        ``(policy, feature_config, meta)``, with ``policy.feature_config`` set, so that
        ``PredictedStepDescent(model.parameters(), policy)`` computes the features the
        policy was trained with.

    Raises:
        PolicyFileError: the file is missing, corrupt, holds Python objects other than
            tensors and plain values, is not a Predicted Step Descent policy, or holds
            invalid weights.
    """
    path = Path(path)
    if not path.exists():
        raise PolicyFileError(f"no policy file at {path}")
    try:
        blob = safe_load(path)
    except UnsafeFileError as e:
        raise PolicyFileError(
            f"{e}. A policy file written by l2o.gps.save_policy holds only tensors and plain "
            "values; get the policy from its source again, or re-run the meta-training") from e
    except Exception as e:  # noqa: BLE001 - every unreadable file gets the same message
        raise PolicyFileError(f"{path} is corrupt or truncated ({e}); re-run the meta-training "
                              "or restore the file") from e
    if isinstance(blob, dict) and "config" in blob and "policy" in blob and (
            blob.get("format") in (None, CHECKPOINT_FORMAT)):
        blob = {"format": POLICY_FORMAT, "policy": blob["policy"],
                "policy_config": blob["policy_config"], "feature_config": blob["feature_config"],
                "meta": {"from_checkpoint": str(path), "iteration": blob.get("iteration")}}
    if not isinstance(blob, dict) or blob.get("format") != POLICY_FORMAT:
        raise PolicyFileError(f"{path} is not a Predicted Step Descent policy file "
                              f"(expected format {POLICY_FORMAT!r})")
    try:
        pcfg = PolicyConfig(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in blob["policy_config"].items()})
        fcfg = FeatureConfig(**blob["feature_config"])
        policy = LSTMPolicy(pcfg, feature_config=fcfg)
        policy.load_state_dict(blob["policy"])
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError) as e:
        raise PolicyFileError(f"{path}: the stored weights do not match the stored "
                              f"configuration: {e}") from e
    for name, value in policy.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise PolicyFileError(f"{path}: {name} holds non-finite values; the file is damaged "
                                  "or the meta-training diverged")
    for name in ("obs_std", "output_scale"):
        value = getattr(policy, name)
        if not bool((value > 0).all()):
            raise PolicyFileError(f"{path}: {name} must be positive, it holds "
                                  f"{value.min().item():g} (a step would divide by zero or "
                                  "flip sign); the file is damaged")
    return policy, fcfg, from_safe(blob.get("meta", {}))


# --------------------------------------------------------------------------------- CLI
def _write_history(out: Path, gps: ConvolutionalGPS) -> None:
    """``history.json``: initialisation and per-iteration diagnostics (atomic).

    Non-finite numbers stay Python's ``NaN``/``Infinity`` tokens (``nonfinite="keep"``):
    the meta-training chapter reads the costs as floats.
    """
    record.atomic_write_json(out / "history.json", {"init": gps.init_info,
                                                    "history": gps.history}, nonfinite="keep")


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    import argparse

    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def main(argv=None) -> int:
    """``python -m l2o.gps train``: meta-train Predicted Step Descent with convolutional GPS.

    Arguments are checked while parsing (exit code 2 and one ``error:`` line): ranges,
    the GPS configuration, and ``--resume`` without a checkpoint to resume.
    """
    import argparse

    from l2o.cli import check_run_folder, fraction, positive_float, positive_int
    from l2o.data import (_ALIASES, DATASETS, DatasetFormatError, DatasetNotFoundError,
                          make_problem)

    ap = argparse.ArgumentParser(prog="python -m l2o.gps")
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="meta-train π on one objective (resumable)")
    tr.add_argument("--dataset", default="mnist", choices=DATASETS + tuple(_ALIASES))
    tr.add_argument("--n-in", type=positive_int, default=48)
    tr.add_argument("--n-hidden", type=positive_int, default=48)
    tr.add_argument("--batch-size", type=positive_int, default=64)
    tr.add_argument("--out", default="results/psd", help="checkpoint and outputs folder")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument("--data-dir", default=None)
    tr.add_argument("--threads", type=positive_int, default=1)
    tr.add_argument("--no-progress", action="store_true")
    tr.add_argument("--executor", choices=parallel.EXECUTORS, default=None,
                    help="run the N sampled rollouts of each iteration on local processes "
                         "or Dask distributed (needs --sample-streams per_trajectory)")
    tr.add_argument("--workers", type=positive_int, default=2,
                    help="with --executor: processes, and parts the rollouts are split into")
    tr.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="with --executor dask: a running scheduler (default: a LocalCluster)")
    choices = {"nu_units": NU_UNITS, "psi_feedback": PSI_FEEDBACK, "step_rule": STEP_RULES,
               "sample_streams": SAMPLE_STREAMS,
               "cost_features": COST_FEATURES, "prior": ("window", "gmm")}
    for f in dataclasses.fields(GPSConfig):
        kind = type(f.default)
        tr.add_argument("--" + f.name.replace("_", "-"),
                        type=_parse_bool if kind is bool else kind, default=None,
                        choices=choices.get(f.name),
                        help=f"GPSConfig.{f.name} (default {f.default})")
    # The defaults are the arm whose π learned best on validation seeds (python -m
    # l2o.gps_study arms; chapter 5): an Adam teacher and RMS-scaled gradient features.
    # The paper's set-up is --teacher momentum --grad-scale offset.
    tr.add_argument("--teacher", default="adam", choices=TEACHERS,
                    help="the optimizer ψ0 imitates (default adam; momentum is the 2016 "
                         "paper's teacher)")
    tr.add_argument("--teacher-lr", type=positive_float, default=None,
                    help="teacher step (default: the tuned baseline's)")
    tr.add_argument("--teacher-momentum", type=fraction, default=None)
    tr.add_argument("--grad-scale", default="rms", choices=GRAD_SCALES,
                    help="FeatureConfig.grad_scale: 'rms' (default; a stated deviation) or "
                         "'offset' (the paper's |g| + 1)")
    a = ap.parse_args(argv)
    try:
        cfg = GPSConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(GPSConfig)
                           if getattr(a, f.name) is not None})
    except (TypeError, ValueError) as e:
        tr.error(str(e))
    out = Path(a.out)
    check_run_folder(tr, out, a.resume)
    if a.teacher == "adam" and a.teacher_momentum is not None:
        tr.error("--teacher-momentum applies to the momentum teacher only")
    if a.scheduler is not None and a.executor != "dask":
        tr.error("--scheduler needs --executor dask")
    if a.executor is not None and cfg.sample_streams != "per_trajectory":
        tr.error("--executor splits the sampled rollouts among workers, which needs a random "
                 "stream per trajectory: add --sample-streams per_trajectory")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(a.threads)
    overrides = {k: v for k, v in (("lr", a.teacher_lr), ("momentum", a.teacher_momentum))
                 if v is not None}
    teacher = TeacherConfig.tuned(a.teacher, **overrides).to_dict()
    try:
        problem = make_problem(a.dataset, a.n_in, a.n_hidden, batch_size=a.batch_size,
                               data_dir=a.data_dir)
    except (DatasetNotFoundError, DatasetFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with contextlib.ExitStack() as stack:
        ex = (None if a.executor is None
              else stack.enter_context(parallel.executor(a.executor, a.workers, a.scheduler)))
        chunks = None if a.executor is None else a.workers
        return _train(a, problem, cfg, teacher, out, ex, chunks)


def _train(a, problem, cfg, teacher, out, executor, chunks) -> int:
    """The body of ``python -m l2o.gps train`` once its arguments are checked."""
    gps = ConvolutionalGPS(problem, cfg, FeatureConfig(grad_scale=a.grad_scale), PolicyConfig(),
                           teacher, out, executor=executor, chunks=chunks)
    if a.resume:
        try:
            gps.resume()
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        log.info("resumed at GPS iteration %d", gps.iteration)
    t0 = time.perf_counter()
    git_state = record.git_state()   # the tree this session's part of the run executes
    started = gps.iteration
    progress = not (a.no_progress or os.environ.get("L2O_NO_PROGRESS"))

    def after_iteration(d):
        log.info("iteration %d: ψ %.2f, ψ-mean %.2f, π %.2f (%.0f s)", d["iteration"],
                 d["psi_cost"], d["psi_mean_cost"], d["pi_cost"], d["wall"])
        # π after every iteration, so that the shipped one can be chosen on validation seeds
        save_policy(out / "snapshots" / f"pi_iter{d['iteration']:02d}.pt", gps.policy, gps.fcfg,
                    {"iteration": d["iteration"] + 1, "teacher": teacher})
        _write_history(out, gps)

    gps.run(progress=progress, callback=after_iteration)
    wall = time.perf_counter() - t0
    name = f"psd_{a.dataset}{a.n_in}.pt"
    save_policy(out / name, gps.policy, gps.fcfg,
                {"iterations": gps.iteration, "teacher": teacher, "config": dataclasses.asdict(cfg)})
    _write_history(out, gps)
    prov = record.provenance(" ".join(["python -m l2o.gps", *sys.argv[1:]]), wall, git_state,
                             problem=repr(problem), config=dataclasses.asdict(cfg),
                             teacher=teacher, policy_file=name)
    # a run resumed across sessions lists every session's part, each with its own tree
    prov_path = out / "provenance.json"
    record.atomic_write_json(prov_path, record.add_segment(
        prov_path if a.resume else None, prov, iterations=[started, gps.iteration]))
    print(f"wrote {out / name} after {gps.iteration} GPS iterations ({wall:.0f} s this session)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
