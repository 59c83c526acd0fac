"""One rollout loop for every optimizer of the package: ``x_{t+1} = x_t + Δ_t``.

The seven baselines (through their ``torch.optim`` optimizers), GPS's teachers, ψ and π,
the L2L optimizer, and the meta-training unrolls of L2L and of π by truncated BPTT all
run through :func:`rollout`: ``n`` trajectories, the rows of
one ``(n, dim)`` tensor, advance together for ``T`` steps.  At step ``t`` the loop takes
the minibatch indices of the step, hands the *actor* (the optimizer) the iterate ``x_t``
and a :class:`Minibatch` that evaluates the minibatch loss and gradient, and receives
``x_{t+1}``.  It records

* ``minibatch_loss[:, t] = f̂(x_t)``, the first evaluation of step ``t``'s minibatch (at
  ``x_t``; line searches and curvature pairs evaluate it again elsewhere, and each
  evaluation is counted),
* ``true_loss[:, t] = f(x_t)`` with the ``objective`` (the full training loss by default,
  GPS's cost subset during meta-training) at ``t = 0`` and every ``eval_every`` steps,

and, with ``watch=True``, applies the runner's divergence rule as it goes: a trajectory
diverges at step ``t`` when its minibatch loss or gradient at ``x_t`` is not finite, and
at iterate ``t`` when ``f(x_t)`` is not finite or exceeds ``divergence_factor · |f(x_0)|``
(between evaluations: when ``x_t`` is not finite).  Its curves are ``NaN`` from there,
and it is not evaluated any more.  Without ``watch`` every value is recorded as computed
(GPS's samples, whose actors handle non-finite steps themselves; the learned optimizers'
evaluations, cut afterwards by :func:`l2o.experiments.divergence_point`, the same rule
applied to recorded curves).

Actors (:class:`Actor`): :class:`OptimizerActor` wraps a ``torch.optim`` optimizer (the
baselines); :class:`StepActor` turns a function ``Δ = f(t, x, loss, grad)`` into one
(the L2L optimizer, and the meta-training unrolls, whose steps carry an autograd graph:
``evaluate`` then supplies a differentiable minibatch gradient where the meta-gradient
flows through the features, and ``on_step`` adds each step's meta-loss term); GPS's
recording actor (:class:`l2o.gps_rollout.FeatureActor`) computes the features Φ and Ψ
and records states, actions and observations for the fits.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)


class Minibatch:
    """Step ``t``'s minibatch: loss and gradient at any point, every call counted.

    The first call (the actor's evaluation at ``x_t``) is kept: :attr:`loss` and
    :attr:`grad` are the values the loop records.
    """

    def __init__(self, problem, idx: torch.Tensor, evaluate: Callable | None = None):
        self.problem, self.idx, self.evaluate = problem, idx, evaluate
        self.loss: torch.Tensor | None = None
        self.grad: torch.Tensor | None = None
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f̂(x) (n,), ∇f̂(x) (n, dim))`` on this step's minibatch: without autograd, or
        as the loop's ``evaluate(x, idx)`` computes them (differentiably, for
        meta-gradients through the features)."""
        if self.evaluate is not None:
            loss, grad = self.evaluate(x, self.idx)
        else:
            with torch.no_grad():
                loss, grad = self.problem.minibatch_loss_and_grad(x, self.idx)
        self.calls += 1
        if self.loss is None:
            self.loss, self.grad = loss, grad
        return loss, grad


class Actor(Protocol):
    """An optimizer as the loop sees it."""

    def start(self, x0: torch.Tensor) -> None:
        """Reset the optimizer's state for trajectories starting at ``x0 (n, dim)``."""

    def step(self, t: int, x: torch.Tensor, batch: Minibatch) -> torch.Tensor:
        """``x_{t+1} (n, dim)`` from ``x_t`` and step ``t``'s minibatch."""


class OptimizerActor:
    """A ``torch.optim`` optimizer over the rows of ``x``, one parameter per row.

    ``build(params) -> Optimizer`` receives the list of ``(dim,)`` rows.  The step's
    closure evaluates the minibatch at the rows' current values and sets their
    ``.grad`` (no autograd); optimizers may call it several times per step.
    """

    def __init__(self, build: Callable[[list[torch.Tensor]], torch.optim.Optimizer]):
        self.build = build

    def start(self, x0: torch.Tensor) -> None:
        self.rows = [r.clone().requires_grad_(True) for r in x0]
        self.opt = self.build(self.rows)

    def _stacked(self) -> torch.Tensor:
        return torch.stack([r.detach() for r in self.rows])

    def step(self, t: int, x: torch.Tensor, batch: Minibatch) -> torch.Tensor:
        def closure():
            loss, grad = batch(self._stacked())
            for i, r in enumerate(self.rows):
                r.grad = grad[i]
            return loss.sum()

        self.opt.step(closure)
        return self._stacked()


class StepActor:
    """An actor from ``delta(t, x, loss, grad) -> Δ (n, dim)``: ``x_{t+1} = x_t + Δ``
    (``Δ`` cast to ``x``'s dtype); ``start(x0)`` is passed on to ``on_start``."""

    def __init__(self, delta: Callable, on_start: Callable | None = None):
        self.delta, self.on_start = delta, on_start

    def start(self, x0: torch.Tensor) -> None:
        if self.on_start is not None:
            self.on_start(x0)

    def step(self, t: int, x: torch.Tensor, batch: Minibatch) -> torch.Tensor:
        loss, grad = batch(x)
        return x + self.delta(t, x, loss, grad).to(x.dtype)


@dataclass
class Trajectories:
    """The record of one :func:`rollout` of ``n`` trajectories over ``T`` steps."""

    true_loss: np.ndarray          # (n, T + 1) f(x_t); NaN where not evaluated or diverged
    minibatch_loss: np.ndarray     # (n, T) f̂(x_t) on step t's minibatch
    diverged_at: list[int | None]  # with watch: the iterate each trajectory diverged at
    grad_evals: np.ndarray         # (n,) minibatch evaluations while alive
    x: torch.Tensor                # (n, dim) the last iterates
    wall_time: float               # seconds of the loop


def rollout(problem, actor: Actor, x0: torch.Tensor,
            batches: torch.Tensor | Callable[[int], torch.Tensor], horizon: int | None = None,
            objective: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
            eval_every: int = 1, watch: bool = False, divergence_factor: float | None = None,
            callback: Callable | None = None, labels: Sequence | None = None,
            evaluate: Callable | None = None,
            on_step: Callable[[int, torch.Tensor], None] | None = None) -> Trajectories:
    """Run ``actor`` from ``x0 (n, dim)`` for ``horizon`` steps (module docstring).

    Args:
        batches: minibatch indices ``(T, n, B)``, or ``batches(t) -> (n, B)`` drawn when
            step ``t`` starts (GPS draws them from the generator of its noise).
        horizon: ``T`` (default: ``batches.shape[0]``).
        objective: ``objective(x, t) -> f (n,)`` at iterate ``t`` (default
            ``problem.true_loss(x)``); None with ``eval_every=0`` evaluates nothing
            (``true_loss`` all NaN).
        eval_every: evaluate the objective every this many iterates (and at ``T``).
        watch: apply the divergence rule online (module docstring).
        divergence_factor: its threshold factor (None: non-finite values only).
        callback: ``callback(t, x_t, f)`` after ``x_0`` and every step; ``x_t`` is
            ``(n, dim)`` (``(dim,)`` when ``n = 1``) and ``f (n,)`` or None where the
            objective was not evaluated.
        labels: names of the trajectories for the debug log (default their rows).
        evaluate: ``evaluate(x, idx) -> (f̂, ∇f̂)`` instead of the problem's minibatch
            loss and gradient without autograd (:class:`Minibatch`).
        on_step: ``on_step(t, x_{t+1})`` after every step, with ``x_{t+1}`` as the actor
            returned it: a meta-training unroll adds its differentiable meta-loss term
            here (the loop never detaches ``x``; an actor that computes its step with
            autograd makes the rollout differentiable).
    """
    T = int(batches.shape[0] if horizon is None else horizon)
    n = x0.shape[0]
    if objective is None and eval_every:
        def objective(x, t):
            return problem.true_loss(x)
    true = np.full((n, T + 1), np.nan)
    mb = np.full((n, T), np.nan)
    alive = np.ones(n, dtype=bool)
    diverged_at: list[int | None] = [None] * n
    evals = np.zeros(n, dtype=np.int64)
    labels = list(range(n)) if labels is None else list(labels)

    def diverge(i: int, t: int) -> None:
        alive[i] = False
        diverged_at[i] = t
        true[i, t:] = np.nan
        mb[i, t:] = np.nan
        logger.debug("trajectory %s diverged at iterate %d", labels[i], t)

    def evaluate_objective(x: torch.Tensor, t: int) -> np.ndarray:
        if not watch:
            return objective(x, t).double().cpu().numpy()
        live = np.flatnonzero(alive)   # diverged rows are not evaluated any more
        f = np.full(n, np.nan)
        if live.size:
            f[live] = objective(x[torch.from_numpy(live)], t).double().cpu().numpy()
        return f

    start = time.perf_counter()
    actor.start(x0)
    x = x0
    f = None
    if eval_every:
        with torch.no_grad():
            f = objective(x, 0).double().cpu().numpy()
        true[:, 0] = f
        if watch:
            thresholds = (np.abs(f) * divergence_factor if divergence_factor is not None
                          else np.full(n, np.inf))
            for i in np.flatnonzero(~np.isfinite(f)):
                diverge(i, 0)
    if callback is not None:
        callback(0, x if n > 1 else x[0], f)
    for t in range(T):
        if watch and not alive.any():
            break
        idx = batches(t) if callable(batches) else batches[t]
        batch = Minibatch(problem, idx.to(problem.device) if hasattr(problem, "device")
                          else idx, evaluate)
        x_next = actor.step(t, x, batch)
        if not isinstance(x_next, torch.Tensor) or x_next.shape != x.shape:
            raise TypeError(f"{type(actor).__name__}.step must return x_{{t+1}}, a tensor of "
                            f"shape {tuple(x.shape)}; got {type(x_next).__name__}")
        if batch.loss is None:
            raise RuntimeError(f"{type(actor).__name__}.step never evaluated the minibatch; "
                               "the record needs f̂(x_t): call batch(x) at x_t")
        x = x_next
        if on_step is not None:
            on_step(t, x)
        evals[alive] += batch.calls
        loss = batch.loss.detach().double().cpu().numpy()
        if watch:
            grad_ok = torch.isfinite(batch.grad).all(dim=-1).cpu().numpy()
            for i in np.flatnonzero(alive):
                mb[i, t] = loss[i]
                if not (np.isfinite(loss[i]) and grad_ok[i]):
                    diverge(i, t)
        else:
            mb[:, t] = loss
        f = None
        if eval_every and ((t + 1) % eval_every == 0 or t + 1 == T):
            with torch.no_grad():
                f = evaluate_objective(x, t + 1)
            if watch:
                for i in np.flatnonzero(alive):
                    true[i, t + 1] = f[i]
                    if not np.isfinite(f[i]) or f[i] > thresholds[i]:
                        diverge(i, t + 1)
            else:
                true[:, t + 1] = f
        elif watch:
            finite = torch.isfinite(x).all(dim=-1).cpu().numpy()
            for i in np.flatnonzero(alive & ~finite):
                diverge(i, t + 1)
        if callback is not None:
            callback(t + 1, x if n > 1 else x[0], f)
    return Trajectories(true, mb, diverged_at, evals, x, time.perf_counter() - start)
