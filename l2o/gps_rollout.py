"""GPS's rollouts: the cost, the per-coordinate actors, and the samples the fits read.

Split from :mod:`l2o.gps` (which re-exports every name): what runs a policy on the
objective, as opposed to what GPS does with the samples.

* :class:`CostProblem`: the true objective on a fixed subset of the training set (the
  cost during meta-training).
* Actors ``act(t, s, o, g, state) -> (a, state)`` of one step per coordinate: the
  teachers ψ0 imitates (:class:`TeacherConfig`: momentum or Adam), ψ's time-varying
  linear-Gaussian controllers (:func:`psi_actor`) and π's mean (:func:`pi_actor`).
* :func:`rollout`: such an actor on ``n`` trajectories through the package's one loop
  (:func:`l2o.rollout.rollout`, the actor wrapped in :class:`FeatureActor`, which
  computes the features Φ and Ψ and records what the fits need); :class:`Samples`.
* Sampling split among workers: :func:`trajectory_seeds`, :func:`sample_trajectories`,
  :func:`merge_samples` (``GPSConfig.sample_streams="per_trajectory"``).
* What a policy does: :func:`trace_rollout`, :func:`effective_step_size`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from l2o import lqg, parallel
from l2o import rollout as loop
from l2o.features import FeatureConfig, StateTracker
from l2o.policy import LSTMPolicy
from l2o.problems import MLPProblem


class GPSNumericalError(RuntimeError):
    """A GPS phase produced non-finite numbers that a retry could not repair."""


ALL_DIVERGED = ("every sampled trajectory produced non-finite values; lower kl_step or the "
                "teacher's step size")



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
            x0: torch.Tensor | None = None, streams: torch.Tensor | None = None,
            require_alive: bool = True):
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
        require_alive: with ``stored``, raise :class:`GPSNumericalError` when every
            trajectory diverged (False: return empty samples; a part of a split sample).

    Returns:
        :class:`Samples` (``groups`` empty when ``stored`` is None).
    """
    x = problem.init(gen, n) if x0 is None else x0.clone()
    actor = FeatureActor(problem, cost, act, feature_config, horizon, stored, need_states)
    batches = streams if streams is not None else (lambda t: problem.sample_indices(gen, n))
    traj = loop.rollout(problem, actor, x, batches, horizon, objective=actor.objective)
    true_loss = traj.true_loss
    alive = actor.alive & torch.as_tensor(np.isfinite(true_loss).all(1))
    diverged = int((~alive).sum())
    if stored is not None and diverged == n and require_alive:
        raise GPSNumericalError(ALL_DIVERGED)
    groups = [] if stored is None else actor.samples(alive.numpy())
    return Samples(groups, true_loss, traj.minibatch_loss, diverged)


class FeatureActor:
    """A per-coordinate ``act`` (ψ, π, a teacher) as an actor of :func:`l2o.rollout.rollout`.

    Each step computes the features Φ (``need_states``) and Ψ from the minibatch loss and
    gradient at ``x_t``, asks ``act`` for the step, zeroes the step of a trajectory whose
    step or minibatch loss is not finite (and marks it in :attr:`alive`), and with
    ``stored`` records the states, actions, observations and true-objective gradients of
    the stored coordinates (:meth:`samples`).  :meth:`objective` is the loop's objective:
    the cost, with its gradient at the steps whose gradients are recorded.
    """

    def __init__(self, problem: MLPProblem, cost: CostProblem, act: Callable,
                 feature_config: FeatureConfig, horizon: int,
                 stored: list[np.ndarray] | None, need_states: bool):
        self.problem, self.cost, self.act = problem, cost, act
        self.fcfg, self.T, self.stored, self.need_states = (feature_config, horizon, stored,
                                                            need_states)

    def start(self, x0: torch.Tensor) -> None:
        n, D, T = x0.shape[0], self.problem.dim, self.T
        self.tracker = StateTracker(n, D, self.fcfg, dtype=self.problem.dtype)
        self.pstate = None
        self.alive = torch.ones(n, dtype=torch.bool)
        self.g_true = None
        if self.stored is not None:
            self.cols = torch.as_tensor(np.concatenate(self.stored))
            m, dX = len(self.cols), self.tracker.state_dim
            self.Xs = np.zeros((n, T, m, dX), dtype=np.float32)
            self.Us = np.zeros((n, T, m), dtype=np.float32)
            self.Os = torch.zeros((T, n, m, 3), dtype=torch.float32)
            self.Gs = np.zeros((n, T, m), dtype=np.float32)

    def objective(self, x: torch.Tensor, t: int) -> torch.Tensor:
        if self.stored is not None and t < self.T:
            f, self.g_true = self.cost(x, with_grad=True)
            return f
        return self.cost(x)

    def step(self, t: int, x: torch.Tensor, batch) -> torch.Tensor:
        f_hat, g_hat = batch(x)
        rec = self.stored is not None
        if rec:
            self.Gs[:, t] = self.g_true[:, self.cols].numpy()
        self.tracker.update(x, f_hat, g_hat)
        s = self.tracker.state() if self.need_states else None
        o = self.tracker.observation()
        a, self.pstate = self.act(t, s, o, g_hat, self.pstate)
        bad = ~torch.isfinite(a).all(-1) | ~torch.isfinite(f_hat)
        if bad.any():
            self.alive &= ~bad
            a = torch.where(bad[:, None], torch.zeros_like(a), a)
        if rec:
            self.Xs[:, t] = s[:, self.cols].numpy()
            self.Us[:, t] = a[:, self.cols].numpy()
            self.Os[t] = o[:, self.cols].float()
        return x + a

    def samples(self, keep: np.ndarray) -> list[GroupSamples]:
        """Per group, the recorded sequences of the trajectories in ``keep`` (the others
        diverged: their states would poison every fit)."""
        T = self.T
        Xs, Us, Gs = self.Xs[keep], self.Us[keep], self.Gs[keep]
        Os = self.Os[:, torch.as_tensor(keep)]
        n = int(keep.sum())
        groups, start = [], 0
        for m in (len(c) for c in self.stored):
            sl = slice(start, start + m)
            # (n, T, m, dX) -> (n*m, T, dX): one sequence per (trajectory, coordinate)
            X = np.ascontiguousarray(Xs[:, :, sl].transpose(0, 2, 1, 3)
                                     .reshape(n * m, T, Xs.shape[-1]))
            U = np.ascontiguousarray(Us[:, :, sl].transpose(0, 2, 1).reshape(n * m, T, 1))
            O = Os[:, :, sl].reshape(T, n * m, 3)
            G = np.ascontiguousarray(Gs[:, :, sl].transpose(0, 2, 1).reshape(n * m, T))
            groups.append(GroupSamples(X.astype(np.float64), U.astype(np.float64), O,
                                       G.astype(np.float64)))
            start += m
        return groups


def psi_actor(problem: MLPProblem, psis, gen: torch.Generator | None, noise: bool = True,
              row_generators: Sequence[torch.Generator] | None = None):
    """``act`` for :func:`rollout` drawing ``a ~ N(K_t s + k_t, G_t)`` per coordinate.

    The noise of all trajectories comes from ``gen``, or with ``row_generators`` that of
    trajectory ``i`` from ``row_generators[i]`` (``GPSConfig.sample_streams``).
    """
    K, k, std = _psi_tables(problem, psis, problem.dtype)
    gi = problem.group_index

    def act(t, s, o, g, state):
        mean = (s * K[t][gi]).sum(-1) + k[t][gi]
        if not noise:
            return mean, state
        if row_generators is None:
            eps = torch.randn(mean.shape, generator=gen, dtype=mean.dtype)
        else:
            eps = torch.stack([torch.randn(mean.shape[1:], generator=r, dtype=mean.dtype)
                               for r in row_generators])
        return mean + std[t][gi] * eps, state

    return act


def trajectory_seeds(seed: int, phase: int, iteration: int, n: int) -> list[int]:
    """Seeds of the ``n`` trajectories GPS samples in ``phase`` (0: the teacher's rollouts,
    1: ψ's) of ``iteration`` when ``sample_streams="per_trajectory"``: 63-bit, one
    :class:`numpy.random.SeedSequence` child each, so that no two draws share a stream."""
    return [int(np.random.SeedSequence(int(seed), spawn_key=(phase, iteration, i))
                .generate_state(1, np.uint64)[0] >> 1) for i in range(n)]


def sample_trajectories(problem: MLPProblem, cost: CostProblem, horizon: int,
                        feature_config: FeatureConfig, seeds: Sequence[int],
                        stored: list[np.ndarray], teacher: "TeacherConfig | None" = None,
                        psis: Sequence | None = None) -> Samples:
    """One trajectory per seed of the teacher (``teacher``) or of ψ with its noise (``psis``).

    Trajectory ``i`` draws its ``x_0``, then its ``horizon`` minibatches, then its
    exploration noise from a generator seeded with ``seeds[i]`` alone, and the rollout
    runs with one torch thread: the samples of a trajectory do not depend on which other
    trajectories share the call, or on the machine's worker that runs it.  A task of its
    own (picklable arguments), so that GPS can split its ``N`` rollouts among workers;
    :func:`merge_samples` puts the parts back together.
    """
    if (teacher is None) == (psis is None):
        raise ValueError("give exactly one of teacher and psis")
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    x0 = torch.stack([problem.init(g) for g in gens])
    streams = torch.stack([torch.stack([problem.sample_indices(g) for _ in range(horizon)])
                           for g in gens], 1)
    act = (teacher.actor() if teacher is not None
           else psi_actor(problem, list(psis), None, row_generators=gens))
    with parallel.one_thread():
        return rollout(problem, cost, horizon, len(seeds), act, feature_config,
                       torch.Generator(), stored, x0=x0, streams=streams, require_alive=False)


def merge_samples(parts: Sequence[Samples]) -> Samples:
    """The samples of consecutive parts of one draw, as if drawn in one call.

    Raises:
        GPSNumericalError: every trajectory of every part diverged.
    """
    groups = []
    for g in range(len(parts[0].groups)):
        gs = [p.groups[g] for p in parts]
        groups.append(GroupSamples(np.concatenate([q.X for q in gs]),
                                   np.concatenate([q.U for q in gs]),
                                   torch.cat([q.O for q in gs], 1),
                                   np.concatenate([q.grad for q in gs])))
    out = Samples(groups, np.concatenate([p.true_loss for p in parts]),
                  np.concatenate([p.minibatch_loss for p in parts]),
                  sum(p.diverged for p in parts))
    if groups and out.diverged == out.true_loss.shape[0]:
        raise GPSNumericalError(ALL_DIVERGED)
    return out


def pi_actor(problem: MLPProblem, policy: LSTMPolicy):
    """``act`` for :func:`rollout` taking π's mean action (noise off, as at test time)."""
    gi = problem.group_index

    def act(t, s, o, g, state):
        if state is None:
            state = policy.initial_hidden(o.shape[0], o.shape[1])
        with torch.no_grad():
            a, state = policy.step(o.float(), gi, state, inplace=True)
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


@dataclass(frozen=True)
class TeacherConfig:
    """The hand-engineered optimizer ψ0 is fitted to (book/design.md, D7), validated.

    Attributes:
        name: ``"momentum"`` (momentum SGD) or ``"adam"`` (:data:`TEACHERS`).
        lr: step size, > 0.
        momentum: the momentum teacher's β, in [0, 1).
        betas, eps: Adam's, as in ``torch.optim.Adam``.

    Checkpoints and provenance keep the short dict of :meth:`to_dict`, which
    :meth:`from_dict` reads back (also the dicts of earlier runs).
    """

    name: str = "momentum"
    lr: float = 0.1
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self):
        if self.name not in TEACHERS:
            raise ValueError(f"Unknown teacher {self.name!r} (expected one of {TEACHERS})")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) \
                or not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"The teacher needs a positive 'lr', got {self.lr!r}")
        if not 0 <= float(self.momentum) < 1:
            raise ValueError(f"The teacher's momentum must lie in [0, 1), got {self.momentum!r}")
        betas = tuple(float(b) for b in self.betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Adam's betas must be two numbers in [0, 1), got {self.betas!r}")
        if not float(self.eps) > 0:
            raise ValueError(f"Adam's eps must be positive, got {self.eps!r}")
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "momentum", float(self.momentum))
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "eps", float(self.eps))

    @classmethod
    def from_dict(cls, hparams: Mapping | TeacherConfig) -> TeacherConfig:
        """From ``{"name": ..., "lr": ..., ...}``: ``name`` defaults to ``"momentum"``,
        and a momentum teacher without ``momentum`` has β = 0 (plain SGD), as the
        dicts of earlier runs meant; ``lr`` is required.

        Raises:
            ValueError: no ``lr``, an unknown key or name, a value out of range.
        """
        if isinstance(hparams, TeacherConfig):
            return hparams
        d = dict(hparams)
        name = d.pop("name", "momentum")
        if "lr" not in d:
            raise ValueError("The teacher needs a positive 'lr', got None")
        unknown = sorted(set(d) - {"lr", "momentum", "betas", "eps"})
        if unknown:
            raise ValueError(f"Unknown teacher setting(s) {unknown} (expected lr, momentum, "
                             "betas, eps)")
        if name == "momentum":
            d.setdefault("momentum", 0.0)
        return cls(name=name, **d)

    @classmethod
    def tuned(cls, name: str, **overrides) -> TeacherConfig:
        """The baseline ``name`` at its tuned hyperparameters
        (:func:`l2o.baselines.default_hparams`), with ``overrides``."""
        if name not in TEACHERS:
            raise ValueError(f"Unknown teacher {name!r} (expected one of {TEACHERS})")
        from l2o import baselines

        hp = baselines.default_hparams(name)
        keep = {"lr": hp["lr"]} if name == "adam" else \
            {"lr": hp["lr"], "momentum": hp.get("momentum", 0.0)}
        return cls.from_dict({"name": name, **keep, **overrides})

    def to_dict(self) -> dict:
        """The short form stored in checkpoints and provenance: what the teacher uses,
        Adam's ``betas``/``eps`` only when not the defaults (the form of earlier runs)."""
        if self.name == "adam":
            out: dict = {"name": "adam", "lr": self.lr}
            if self.betas != (0.9, 0.999):
                out["betas"] = list(self.betas)
            if self.eps != 1e-8:
                out["eps"] = self.eps
            return out
        return {"lr": self.lr, "momentum": self.momentum}

    def actor(self):
        """``act`` for :func:`rollout` (:func:`teacher_actor` or :func:`adam_teacher_actor`)."""
        if self.name == "adam":
            return adam_teacher_actor(self.lr, self.betas, self.eps)
        return teacher_actor(self.lr, self.momentum)


def make_teacher(hparams: Mapping | TeacherConfig):
    """The teacher's ``act`` from a :class:`TeacherConfig` or its dict form
    (:meth:`TeacherConfig.from_dict`)."""
    return TeacherConfig.from_dict(hparams).actor()


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
