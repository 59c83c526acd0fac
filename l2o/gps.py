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

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from l2o import badmm, dynamics, lqg
from l2o.features import GRAD_SCALES, FeatureConfig, StateTracker
from l2o.policy import LSTMPolicy, PolicyConfig
from l2o.problems import MLPProblem

log = logging.getLogger(__name__)


class GPSNumericalError(RuntimeError):
    """A GPS phase produced non-finite numbers that a retry could not repair."""


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
    max_step_mult: float = 10.0       # ceiling of the step multiplier
    init_eta: float = 1.0             # first η of the dual descent (then the previous one)
    init_nu: float = 0.01             # initial ν_t (GPS "init_pol_wt")
    dual_rate: float = 0.1            # α in the λ update
    nu_lower: float = 1.0             # ν ← ν/2 when KL_t < mean − nu_lower·std
    nu_upper: float = 0.5             # ν ← 2ν when KL_t ≥ mean + nu_upper·std
    dynamics_regularization: float = 1e-3  # ridge on the (s, a) block, relative to each variance
    prior: str = "window"             # dynamics prior: "window" (neighbouring steps) or "gmm"
    prior_strength: float = 150.0     # pseudo-points of the NIW prior (≈ dim of [s, a, s'])
    prior_window: int = 3             # half-width of the "window" prior, in steps
    prior_clusters: int = 8           # "gmm": components (≤ 10 as in the 2016 paper)
    prior_points: int = 20_000        # "gmm": EM subsample
    cost_ridge: float = 1e-6          # ridge of the gradient-matching cost fit (D6)
    policy_steps: int = 200           # Adam steps on π per inner iteration (per group)
    policy_batch: int = 64            # coordinate sequences per Adam step
    policy_lr: float = 1e-3           # Adam step of the θ-step
    policy_clip: float = 1.0          # gradient-norm clip of the θ-step
    policy_window: int = 0            # truncated BPTT window for π (0: whole sequences)
    pretrain_steps: int = 500         # imitation of ψ0 before BADMM (book/design.md, D7)
    init_var_floor: float = 0.3       # G0 ≥ (init_var_floor · RMS teacher action)^2
    min_action_var: float = 1e-12     # floor of ψ's action variance
    eval_samples: int = 4             # π-only rollouts per iteration (diagnostics)
    seed: int = 0                     # samples, stored coordinates, π's initialisation

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
        if self.cost_subset < 0:
            raise ValueError(f"Invalid cost_subset: {self.cost_subset}")


# ----------------------------------------------------------------------------- samples
@dataclass
class GroupSamples:
    """Stored samples of one coordinate group, pooled over trajectories and coordinates.

    ``M = N · J`` sequences (N trajectories, J stored coordinates).
    """

    X: np.ndarray       # (M, T, dX) states s_t^j
    U: np.ndarray       # (M, T, 1) actions a_t^j
    O: torch.Tensor     # (T, M, 3) observations Ψ_t^j
    grad: np.ndarray    # (M, T) true-objective gradient ∂f/∂x_j at x_t


@dataclass
class Samples:
    groups: list[GroupSamples]
    true_loss: np.ndarray       # (N, T+1) f(x_t) on the cost subset
    minibatch_loss: np.ndarray  # (N, T)
    diverged: int = 0


def _coord_choice(problem: MLPProblem, J: int, gen: np.random.Generator) -> list[np.ndarray]:
    """Indices (into the flat vector) of the coordinates stored for each group."""
    out = []
    for g in problem.groups:
        idx = np.arange(g.start, g.stop)
        if g.size > J:
            idx = np.sort(gen.choice(idx, size=J, replace=False))
        out.append(idx)
    return out


class CostProblem:
    """The true objective restricted to a fixed subset of the training set (cost during GPS)."""

    def __init__(self, problem: MLPProblem, subset: int, seed: int):
        self.problem = problem
        M = problem.x.shape[0]
        if subset and subset < M:
            g = torch.Generator().manual_seed(seed)
            self.rows = torch.randperm(M, generator=g)[:subset]
            self.sub = MLPProblem(problem.x[self.rows], problem.y[self.rows], problem.n_hidden,
                                  problem.n_classes, problem.batch_size, problem.init_std,
                                  name=problem.name, chunk=problem.chunk)
        else:
            self.rows, self.sub = None, problem

    def __call__(self, theta, with_grad=False):
        return self.sub.true_loss(theta, with_grad=with_grad)


def _psi_tables(problem: MLPProblem, psis: list[lqg.LinearGaussianPolicy], dtype):
    """Stack per-group ψ parameters into per-coordinate lookup tables.

    Returns ``K (T, G, dX)``, ``k (T, G)``, ``std (T, G)`` as torch tensors.
    """
    K = torch.as_tensor(np.stack([p.K[:, 0, :] for p in psis], 1), dtype=dtype)
    k = torch.as_tensor(np.stack([p.k[:, 0] for p in psis], 1), dtype=dtype)
    std = torch.as_tensor(np.sqrt(np.stack([p.cov[:, 0, 0] for p in psis], 1)), dtype=dtype)
    return K, k, std


def rollout(problem: MLPProblem, cost: CostProblem, horizon: int, n: int,
            act: Callable, feature_config: FeatureConfig, gen: torch.Generator,
            stored: list[np.ndarray] | None = None, need_states: bool = True,
            x0: torch.Tensor | None = None, streams: torch.Tensor | None = None):
    """Roll out a per-coordinate policy for ``horizon`` steps on ``n`` trajectories.

    Args:
        act: ``act(t, s (N, D, dX) or None, o (N, D, 3), g (N, D), state) -> (a (N, D), state)``
            where ``g`` is the minibatch gradient at ``x_t``.
        stored: per group, the coordinates whose states, actions, observations and
            true-objective gradients are recorded.
        need_states: compute Φ (ψ needs it; π only needs Ψ).
        x0: initial iterates ``(n, dim)`` (default: drawn from ``D`` with ``gen``).
        streams: minibatch indices ``(horizon, n, B)`` (default: drawn with ``gen``);
            with ``x0`` this replays exactly the runs of :func:`l2o.experiments.train`.

    Returns:
        :class:`Samples` (``groups`` empty when ``stored`` is None).
    """
    D = problem.dim
    x = problem.init(gen, n) if x0 is None else x0.clone()
    tracker = StateTracker(n, D, feature_config, dtype=problem.dtype)
    T = horizon
    rec = stored is not None
    if rec:
        cols = np.concatenate(stored)
        Ms = [len(s) for s in stored]
        Xs = np.zeros((n, T, len(cols), tracker.state_dim), dtype=np.float32)
        Us = np.zeros((n, T, len(cols)), dtype=np.float32)
        Os = torch.zeros((T, n, len(cols), 3), dtype=torch.float32)
        Gs = np.zeros((n, T, len(cols)), dtype=np.float32)
        cols_t = torch.as_tensor(cols)
    true_loss = np.full((n, T + 1), np.nan)
    mb_loss = np.full((n, T), np.nan)
    pstate = None
    alive = torch.ones(n, dtype=torch.bool)
    for t in range(T):
        idx = problem.sample_indices(gen, n) if streams is None else streams[t]
        f_hat, g_hat = problem.minibatch_loss_and_grad(x, idx)
        if rec:
            f_true, g_true = cost(x, with_grad=True)
            Gs[:, t] = g_true[:, cols_t].numpy()
        else:
            f_true = cost(x)
        true_loss[:, t] = f_true.numpy()
        mb_loss[:, t] = f_hat.numpy()
        tracker.update(x, f_hat, g_hat)
        s = tracker.state() if need_states else None
        o = tracker.observation()
        a, pstate = act(t, s, o, g_hat, pstate)
        bad = ~torch.isfinite(a).all(-1) | ~torch.isfinite(f_hat)
        if bad.any():
            alive &= ~bad
            a = torch.where(bad[:, None], torch.zeros_like(a), a)
        if rec:
            Xs[:, t] = s[:, cols_t].numpy()
            Us[:, t] = a[:, cols_t].numpy()
            Os[t] = o[:, cols_t].float()
        x = x + a
    true_loss[:, T] = cost(x).numpy()
    alive &= torch.as_tensor(np.isfinite(true_loss).all(1))
    diverged = int((~alive).sum())
    groups = []
    if rec:
        if diverged == n:
            raise GPSNumericalError("every sampled trajectory produced non-finite values; "
                                    "lower kl_step or the teacher's step size")
        # drop diverged trajectories: their states would poison every fit
        keep = alive.numpy()
        Xs, Us, Gs, Os = Xs[keep], Us[keep], Gs[keep], Os[:, torch.as_tensor(keep)]
        n = int(keep.sum())
        start = 0
        for m in Ms:
            sl = slice(start, start + m)
            # (n, T, m, dX) -> (n*m, T, dX): one sequence per (trajectory, coordinate)
            X = np.ascontiguousarray(Xs[:, :, sl].transpose(0, 2, 1, 3).reshape(n * m, T, -1))
            U = np.ascontiguousarray(Us[:, :, sl].transpose(0, 2, 1).reshape(n * m, T, 1))
            O = Os[:, :, sl].reshape(T, n * m, 3)
            G = np.ascontiguousarray(Gs[:, :, sl].transpose(0, 2, 1).reshape(n * m, T))
            groups.append(GroupSamples(X.astype(np.float64), U.astype(np.float64), O,
                                       G.astype(np.float64)))
            start += m
    return Samples(groups, true_loss, mb_loss, diverged)


def psi_actor(problem: MLPProblem, psis, gen: torch.Generator, noise: bool = True):
    """``act`` for :func:`rollout` drawing ``a ~ N(K_t s + k_t, G_t)`` per coordinate."""
    K, k, std = _psi_tables(problem, psis, problem.dtype)
    gi = problem.group_index

    def act(t, s, o, g, state):
        mean = (s * K[t][gi]).sum(-1) + k[t][gi]
        if not noise:
            return mean, state
        eps = torch.randn(mean.shape, generator=gen, dtype=mean.dtype)
        return mean + std[t][gi] * eps, state

    return act


def pi_actor(problem: MLPProblem, policy: LSTMPolicy):
    """``act`` for :func:`rollout` taking π's mean action (noise off, as at test time)."""
    gi = problem.group_index

    def act(t, s, o, g, state):
        if state is None:
            state = policy.initial_hidden(o.shape[0], o.shape[1])
        with torch.no_grad():
            a, state = policy.step(o.float(), gi, state)
        return a.to(o.dtype), state

    return act


def teacher_actor(lr: float, momentum: float):
    """``act`` for :func:`rollout` following momentum SGD, the teacher ψ0 (book/design.md, D7)."""

    def act(t, s, o, g, state):
        v = -g if state is None else momentum * state - g
        return lr * v, v

    return act


def adam_teacher_actor(lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
    """``act`` for :func:`rollout` following Adam (the update of ``torch.optim.Adam``).

    A teacher for ψ0 when the gradient features are RMS-scaled (``grad_scale="rms"``):
    a ψ linear in those features can then represent the teacher closely.
    """
    b1, b2 = betas

    def act(t, s, o, g, state):
        m, v = (torch.zeros_like(g), torch.zeros_like(g)) if state is None else state
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = (v / (1 - b2 ** (t + 1))).sqrt() + eps
        return -lr / (1 - b1 ** (t + 1)) * m / denom, (m, v)

    return act


#: Teachers ψ0 can start from, by name (momentum by default: design decision D7,
#: book/design.md).
TEACHERS = ("momentum", "adam")


def make_teacher(hparams: dict):
    """The teacher's ``act`` from ``{"name": "momentum" | "adam", "lr": ..., ...}``.

    ``name`` defaults to ``"momentum"`` (with ``momentum``, default 0); Adam takes
    ``betas`` (default (0.9, 0.999)) and ``eps`` (1e-8).
    """
    name = hparams.get("name", "momentum")
    if name not in TEACHERS:
        raise ValueError(f"Unknown teacher {name!r} (expected one of {TEACHERS})")
    if not float(hparams.get("lr", 0)) > 0:
        raise ValueError(f"The teacher needs a positive 'lr', got {hparams.get('lr')!r}")
    if name == "adam":
        return adam_teacher_actor(float(hparams["lr"]), tuple(hparams.get("betas", (0.9, 0.999))),
                                  float(hparams.get("eps", 1e-8)))
    return teacher_actor(float(hparams["lr"]), float(hparams.get("momentum", 0.0)))


# ------------------------------------------------------------------- what a policy does
@dataclass
class Trace:
    """What a per-coordinate policy saw and did along ``N`` runs of ``T`` steps."""

    obs: torch.Tensor       # (T, N, D, 3) observations Ψ_t
    grad: torch.Tensor      # (T, N, D) minibatch gradients ∇f̂(x_t)
    step: torch.Tensor      # (T, N, D) steps Δx_t returned by the policy
    true_loss: np.ndarray   # (N, T+1) true objective f(x_t), t = 0..T


def trace_rollout(problem: MLPProblem, act: Callable, feature_config: FeatureConfig,
                  x0: torch.Tensor, streams: torch.Tensor,
                  cost: CostProblem | None = None) -> Trace:
    """:func:`rollout` from given iterates and minibatches, recording Ψ_t, ∇f̂(x_t) and Δx_t.

    Args:
        act: as for :func:`rollout` (:func:`pi_actor`, :func:`teacher_actor`, …); it is
            called without state features (``s`` is None).
        x0: initial iterates ``(N, D)`` (e.g. :func:`l2o.experiments.initial_iterate`).
        streams: minibatch indices ``(T, N, B)``, row ``t`` used at step ``t``.
        cost: the true objective ``f`` (default: the whole training set).

    Returns:
        :class:`Trace`; ``step`` holds the actions as ``act`` returned them (a
        non-finite step, which :func:`rollout` replaces by zero, stays non-finite here).
    """
    obs, grad, step = [], [], []

    def recording(t, s, o, g, state):
        a, state = act(t, s, o, g, state)
        obs.append(o.detach().clone())
        grad.append(g.detach().clone())
        step.append(a.detach().clone())
        return a, state

    cost = CostProblem(problem, 0, 0) if cost is None else cost
    s = rollout(problem, cost, streams.shape[0], x0.shape[0], recording, feature_config,
                torch.Generator(), None, need_states=False, x0=x0, streams=streams)
    return Trace(torch.stack(obs), torch.stack(grad), torch.stack(step), s.true_loss)


def effective_step_size(problem: MLPProblem, trace: Trace) -> np.ndarray:
    """``|Δx_g| / |∇f̂_g|`` per step, run and coordinate group ``g``: ``(T, N, G)``.

    The step length relative to the minibatch gradient: ``lr`` at every step for SGD
    with step size ``lr``; for momentum it grows with the agreement of past gradients.
    """
    out = []
    for g in problem.groups:
        step = trace.step[..., g.start:g.stop].double()
        grad = trace.grad[..., g.start:g.stop].double()
        out.append((step.norm(dim=-1) / grad.norm(dim=-1)).numpy())
    return np.stack(out, -1)


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
    prev: dict = field(default_factory=dict)  # previous dynamics/cost/ψ for step adjust


def _fit_group(gs: GroupSamples, cfg: GPSConfig, rng: np.random.Generator):
    if cfg.prior == "gmm":
        prior = dynamics.GMMPrior(n_clusters=cfg.prior_clusters, max_points=cfg.prior_points,
                                  strength=cfg.prior_strength)
    else:
        prior = dynamics.SlidingWindowPrior(window=cfg.prior_window, strength=cfg.prior_strength)
    prior.update(gs.X, gs.U, rng)
    dyn = dynamics.fit_dynamics(gs.X, gs.U, prior=prior,
                                regularization=cfg.dynamics_regularization,
                                known_rows="increment", relative_regularization=True)
    cost = dynamics.fit_cost_gradient_matching(gs.X, gs.grad, ridge=cfg.cost_ridge)
    return dyn, cost


def _pi_means(policy: LSTMPolicy, gs: GroupSamples, group_id: int, batch: int = 4096):
    """π's mean actions along ψ's samples: ``(M, T, 1)`` float64."""
    T, M, _ = gs.O.shape
    out = torch.empty(T, M)
    with torch.no_grad():
        for s in range(0, M, batch):
            out[:, s : s + batch] = policy.forward_sequence(gs.O[:, s : s + batch], group_id)
    return out.T.double().numpy()[..., None]


def _fit_pi(policy, gs, group_id, pi_cov, cfg, rng):
    mu = _pi_means(policy, gs, group_id)
    return dynamics.fit_linear_gaussian_policy(gs.X, mu, regularization=cfg.dynamics_regularization,
                                               pi_cov=pi_cov, relative_regularization=True), mu


def _window_memory(policy: LSTMPolicy, O: torch.Tensor, group_id: int, window: int,
                   chunk: int = 4096):
    """π's memory ``(h, c)`` at the start of every window of ``window`` steps (no grad).

    Returns ``h, c`` of shape ``(n_windows, M, H)``; window 0 starts from zero memory.
    """
    T, M, _ = O.shape
    n_win = (T + window - 1) // window
    H = policy.config.hidden_size
    h_all = torch.zeros(n_win, M, H)
    c_all = torch.zeros(n_win, M, H)
    with torch.no_grad():
        for s in range(0, M, chunk):
            hidden = None
            for w in range(n_win - 1):
                _, hidden = policy.forward_sequence(O[w * window:(w + 1) * window, s:s + chunk],
                                                    group_id, hidden, return_hidden=True)
                h_all[w + 1, s:s + chunk], c_all[w + 1, s:s + chunk] = hidden
    return h_all, c_all


def train_policy(policy: LSTMPolicy, group_id: int, O: torch.Tensor, target: np.ndarray,
                 weight: np.ndarray, steps: int, batch: int, lr: float, clip: float,
                 gen: torch.Generator, window: int = 0) -> list[float]:
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
        h_all, c_all = _window_memory(policy, O, group_id, window)
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
            momentum (default) or ``{"name": "adam", "lr": ...}`` (see :func:`make_teacher`).
        checkpoint_dir: where every iteration is checkpointed (resumable).
    """

    def __init__(self, problem: MLPProblem, config: GPSConfig = GPSConfig(),
                 feature_config: FeatureConfig = FeatureConfig(),
                 policy_config: PolicyConfig = PolicyConfig(),
                 teacher_hparams: dict | None = None, checkpoint_dir: str | Path | None = None):
        self.problem, self.cfg = problem, config
        self.fcfg, self.pcfg = feature_config, policy_config
        self.teacher_hparams = dict(teacher_hparams or {"lr": 0.1, "momentum": 0.9})
        make_teacher(self.teacher_hparams)   # a wrong name or step fails here, not later
        self.ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.cost = CostProblem(problem, config.cost_subset, config.seed)
        self.policy = LSTMPolicy(policy_config, generator=torch.Generator().manual_seed(config.seed))
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
        teacher = make_teacher(self.teacher_hparams)
        samples = rollout(self.problem, self.cost, T, cfg.num_samples, teacher, self.fcfg,
                          self.torch_gen, stored)
        self.policy.fit_normalization_groups([gs.O.reshape(-1, 3) for gs in samples.groups])
        self.groups = []
        for gid, gs in enumerate(samples.groups):
            psi = dynamics.fit_linear_gaussian_policy(gs.X, gs.U,
                                                      regularization=cfg.dynamics_regularization,
                                                      pi_cov=0.0, relative_regularization=True)
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
        """One GPS iteration; returns its diagnostics (also appended to ``history``)."""
        cfg, T, P = self.cfg, self.cfg.horizon, self.problem
        times = {}
        t0 = time.perf_counter()
        stored = _coord_choice(P, cfg.coords_per_group, self.np_rng)
        samples = rollout(P, self.cost, T, cfg.num_samples,
                          psi_actor(P, [g.psi for g in self.groups], self.torch_gen),
                          self.fcfg, self.torch_gen, stored)
        if samples.diverged:
            log.warning("%d of %d ψ samples produced non-finite values", samples.diverged,
                        cfg.num_samples)
        times["sample"] = time.perf_counter() - t0
        diag = {"iteration": self.iteration, "psi_cost": float(np.nanmean(samples.true_loss[:, 1:].sum(1))),
                "psi_final": float(np.nanmean(samples.true_loss[:, -1])), "groups": {}}

        for gid, (gv, gs) in enumerate(zip(self.groups, samples.groups)):
            name = P.groups[gid].name
            gd = {}
            t1 = time.perf_counter()
            dyn, cost = _fit_group(gs, cfg, self.np_rng)
            pi_lin, mu_pi = _fit_pi(self.policy, gs, gid, gv.pi_cov, cfg, self.np_rng)
            times[f"fit_{name}"] = time.perf_counter() - t1

            # step adjust: compare the LQG-predicted improvement of the last update with
            # the one measured under the newly fitted dynamics
            if self.iteration > 0 and gv.prev:
                gv.step_mult = self._step_adjust(gv, dyn, cost)
            eps = cfg.kl_step * gv.step_mult * T

            t_pol = t_lqg = 0.0
            rejected = 0
            prev_psi = gv.psi
            for inner in range(cfg.inner_iterations):
                first = self.iteration == 0 and inner == 0
                if not first:
                    ts = time.perf_counter()
                    tg = badmm.pi_targets(gv.psi, gs.X, gv.lam, gv.nu)
                    # weight of step t in the regression: ν_t G_t⁻¹, normalised as in GPS
                    w_t = badmm.normalize_weights(tg.weight * tg.precision[:, 0, 0])
                    train_policy(self.policy, gid, gs.O, tg.mean[..., 0], w_t, cfg.policy_steps,
                                 cfg.policy_batch, cfg.policy_lr, cfg.policy_clip, self.torch_gen,
                                 cfg.policy_window)
                    gv.pi_cov = badmm.closed_form_pi_cov(gv.psi, gv.nu).item()
                    pi_lin, mu_pi = _fit_pi(self.policy, gs, gid, gv.pi_cov, cfg, self.np_rng)
                    t_pol += time.perf_counter() - ts
                    gv.lam = badmm.dual_update_lambda(gv.lam, gv.nu, gv.psi, gs.X, mu_pi,
                                                      cfg.dual_rate)
                    if inner == cfg.inner_iterations - 1:
                        kl_t = badmm.kl_pi_psi_per_t(pi_lin, gv.psi, gs.X)
                        gv.nu = badmm.update_nu(gv.nu, kl_t, lower=cfg.nu_lower, upper=cfg.nu_upper)
                ts = time.perf_counter()
                psi, eta, info = lqg.solve_kl_constrained(dyn, cost, prev_psi, gv.lam, gv.nu,
                                                          pi_lin, eps, gv.eta)
                t_lqg += time.perf_counter() - ts
                if not np.isfinite(info["kl"]) or info["kl"] > 2.0 * eps:
                    # The fitted model could not honour the trust region even at the
                    # largest η (typically an unstable dynamics fit): keep the current ψ
                    # rather than take an unbounded step, and shrink the next step.
                    rejected += 1
                    log.warning("group %s: rejected ψ update (KL %.3g > 2ε = %.3g)", name,
                                info["kl"], 2.0 * eps)
                    gv.step_mult = max(cfg.min_step_mult, 0.5 * gv.step_mult)
                    continue
                gv.psi, gv.eta = psi, eta
            gv.prev = {"dyn": dyn, "cost": cost, "psi_old": prev_psi, "psi_new": gv.psi,
                       "pi_lin": pi_lin}
            times[f"policy_{name}"] = t_pol
            times[f"lqg_{name}"] = t_lqg
            kl_pi = badmm.kl_pi_psi_per_t(pi_lin, gv.psi, gs.X)
            gd.update(eta=gv.eta, nu_mean=float(np.mean(gv.nu)), step_mult=gv.step_mult,
                      kl_pi_psi=float(np.mean(kl_pi)), kl_reached=float(info.get("kl", np.nan)),
                      kl_target=eps, dgd_iters=int(info.get("iterations", 0)),
                      pd_failures=int(info.get("pd_failures", 0)), rejected=rejected,
                      dyn_residual=float(np.mean(np.trace(dyn.dyn_covar[:, 1:, 1:], axis1=1, axis2=2))),
                      pi_cov=gv.pi_cov)
            diag["groups"][name] = gd

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

    def _step_adjust(self, gv: GroupVars, dyn, cost) -> float:
        p = gv.prev
        # cost of the previous ψ and the new ψ under the previous dynamics (predicted) and
        # of the new ψ under the new dynamics (actual)
        # All three under the newly fitted cost: the gradient-matching cost has no
        # constant term (h_t = 0), so costs fitted at different iterations do not share
        # a baseline and cannot be compared.
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
        if sd["config"] != dataclasses.asdict(self.cfg):
            diff = {k: (sd["config"].get(k), v) for k, v in dataclasses.asdict(self.cfg).items()
                    if sd["config"].get(k) != v}
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
        if self.ckpt_dir is None:
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt_dir / "checkpoint.pt.part"
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, self.ckpt_dir / "checkpoint.pt")  # atomic: an interruption loses nothing

    def resume(self) -> bool:
        """Load ``checkpoint_dir/checkpoint.pt`` if present; returns whether it did."""
        if self.ckpt_dir is None or not (self.ckpt_dir / "checkpoint.pt").exists():
            return False
        try:
            sd = torch.load(self.ckpt_dir / "checkpoint.pt", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
            raise ValueError(f"cannot read GPS checkpoint {self.ckpt_dir / 'checkpoint.pt'}: {e}. "
                             "Delete it to start afresh.") from e
        self.load_state_dict(sd)
        return True


def _lqg_cost(dyn, cost, psi) -> float:
    mu, sigma = lqg.forward_pass(dyn, psi)
    return float(np.sum(lqg.expected_cost(cost, mu, sigma)))


def _group_to_dict(g: GroupVars) -> dict:
    return {"K": g.psi.K, "k": g.psi.k, "cov": g.psi.cov, "eta": g.eta, "nu": g.nu,
            "lam": g.lam, "step_mult": g.step_mult, "pi_cov": g.pi_cov, "prev": g.prev}


def _group_from_dict(d: dict) -> GroupVars:
    return GroupVars(psi=lqg.LinearGaussianPolicy(d["K"], d["k"], d["cov"]), eta=d["eta"],
                     nu=d["nu"], lam=d["lam"], step_mult=d["step_mult"], pi_cov=d["pi_cov"],
                     prev=d["prev"])


# ------------------------------------------------------------------------------- files
class PolicyFileError(ValueError):
    """A saved policy file is unreadable or does not match the requested configuration."""


def save_policy(path: str | Path, policy: LSTMPolicy, feature_config: FeatureConfig,
                meta: dict | None = None) -> None:
    """Write π (weights, frozen statistics, configurations) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": "l2o-psd-v1", "policy": policy.state_dict(),
            "policy_config": dataclasses.asdict(policy.config),
            "feature_config": dataclasses.asdict(feature_config), "meta": meta or {}}
    tmp = path.with_suffix(path.suffix + ".part")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def load_policy(path: str | Path) -> tuple[LSTMPolicy, FeatureConfig, dict]:
    """Read a file written by :func:`save_policy` (or a GPS checkpoint).

    Returns:
        ``(policy, feature_config, meta)``; use them as
        ``PredictedStepDescent(model.parameters(), policy, feature_config)``.

    Raises:
        PolicyFileError: the file is missing, corrupt, or not a Predicted Step Descent policy.
    """
    path = Path(path)
    if not path.exists():
        raise PolicyFileError(f"no policy file at {path}")
    try:
        blob = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - every unreadable file gets the same message
        raise PolicyFileError(f"{path} is corrupt or truncated ({e}); re-run the meta-training "
                              "or restore the file") from e
    if isinstance(blob, dict) and "config" in blob and "policy" in blob and "format" not in blob:
        blob = {"format": "l2o-psd-v1", "policy": blob["policy"],
                "policy_config": blob["policy_config"], "feature_config": blob["feature_config"],
                "meta": {"from_checkpoint": str(path), "iteration": blob.get("iteration")}}
    if not isinstance(blob, dict) or blob.get("format") != "l2o-psd-v1":
        raise PolicyFileError(f"{path} is not a Predicted Step Descent policy file "
                              "(expected format 'l2o-psd-v1')")
    try:
        pcfg = PolicyConfig(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in blob["policy_config"].items()})
        fcfg = FeatureConfig(**blob["feature_config"])
        policy = LSTMPolicy(pcfg)
        policy.load_state_dict(blob["policy"])
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        raise PolicyFileError(f"{path}: the stored weights do not match the stored "
                              f"configuration: {e}") from e
    return policy, fcfg, blob.get("meta", {})


# --------------------------------------------------------------------------------- CLI
def _provenance(args, wall: float, problem: MLPProblem, extra: dict) -> dict:
    import platform
    import subprocess
    import sys

    def git(*a):
        try:
            return subprocess.run(["git", "--no-optional-locks", *a], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except Exception:  # noqa: BLE001 - provenance is best effort outside a checkout
            return ""

    return {"command": " ".join(["python -m l2o.gps", *sys.argv[1:]]),
            "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
            "problem": repr(problem), "wall_time_s": wall,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "torch": torch.__version__, "threads": torch.get_num_threads()},
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}


def main(argv=None) -> int:
    """``python -m l2o.gps train``: meta-train Predicted Step Descent with convolutional GPS."""
    import argparse

    from l2o import baselines
    from l2o.data import make_problem

    ap = argparse.ArgumentParser(prog="python -m l2o.gps")
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="meta-train π on one objective (resumable)")
    tr.add_argument("--dataset", default="mnist")
    tr.add_argument("--n-in", type=int, default=48)
    tr.add_argument("--n-hidden", type=int, default=48)
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--out", default="results/psd", help="checkpoint and outputs folder")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument("--data-dir", default=None)
    tr.add_argument("--threads", type=int, default=1)
    tr.add_argument("--no-progress", action="store_true")
    for f in dataclasses.fields(GPSConfig):
        tr.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None,
                        help=f"GPSConfig.{f.name} (default {f.default})")
    tr.add_argument("--teacher", default="momentum", choices=TEACHERS,
                    help="the optimizer ψ0 imitates (default momentum, book/design.md, D7)")
    tr.add_argument("--teacher-lr", type=float, default=None,
                    help="teacher step (default: the tuned baseline's)")
    tr.add_argument("--teacher-momentum", type=float, default=None)
    tr.add_argument("--grad-scale", default="offset", choices=GRAD_SCALES,
                    help="FeatureConfig.grad_scale: 'offset' (the paper) or 'rms' (chapter 5's "
                         "deviation)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(a.threads)
    cfg = GPSConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(GPSConfig)
                       if getattr(a, f.name) is not None})
    teacher = dict(baselines.default_hparams(a.teacher))
    if a.teacher_lr is not None:
        teacher["lr"] = a.teacher_lr
    if a.teacher == "adam":
        if a.teacher_momentum is not None:
            ap.error("--teacher-momentum applies to the momentum teacher only")
        teacher = {"name": "adam", "lr": float(teacher["lr"])}
    else:
        if a.teacher_momentum is not None:
            teacher["momentum"] = a.teacher_momentum
        teacher = {"lr": float(teacher["lr"]), "momentum": float(teacher.get("momentum", 0.0))}
    problem = make_problem(a.dataset, a.n_in, a.n_hidden, batch_size=a.batch_size,
                           data_dir=a.data_dir)
    out = Path(a.out)
    if (out / "checkpoint.pt").exists() and not a.resume:
        ap.error(f"{out / 'checkpoint.pt'} exists: pass --resume to continue it, or choose "
                 "another --out")
    gps = ConvolutionalGPS(problem, cfg, FeatureConfig(grad_scale=a.grad_scale), PolicyConfig(),
                           teacher, out)
    if a.resume and gps.resume():
        log.info("resumed at GPS iteration %d", gps.iteration)
    t0 = time.perf_counter()
    progress = not (a.no_progress or os.environ.get("L2O_NO_PROGRESS"))
    gps.run(progress=progress, callback=lambda d: log.info(
        "iteration %d: ψ %.2f, ψ-mean %.2f, π %.2f (%.0f s)", d["iteration"], d["psi_cost"],
        d["psi_mean_cost"], d["pi_cost"], d["wall"]))
    wall = time.perf_counter() - t0
    name = f"psd_{a.dataset}{a.n_in}.pt"
    save_policy(out / name, gps.policy, gps.fcfg,
                {"iterations": gps.iteration, "teacher": teacher, "config": dataclasses.asdict(cfg)})
    (out / "history.json").write_text(json.dumps(
        {"init": gps.init_info, "history": gps.history}, indent=1, default=float))
    (out / "provenance.json").write_text(json.dumps(_provenance(
        a, wall, problem, {"config": dataclasses.asdict(cfg), "teacher": teacher,
                           "policy_file": name}), indent=1, default=str))
    print(f"wrote {out / name} after {gps.iteration} GPS iterations ({wall:.0f} s this session)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
