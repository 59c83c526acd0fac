"""The seven hand-engineered optimizers of the paper's comparison (section 4).

The paper compares its learned optimizer with "stochastic gradient descent,
momentum, conjugate gradient, L-BFGS, ADAM, AdaGrad and RMSprop", each with
hyperparameters tuned on the training objective (MNIST, 48-48-10 net, minibatch 64,
400 iterations; book/design.md, D11).  Five of them are ``torch.optim`` classes used
as they are.  The two that torch does not provide in the paper's form are written
here, as :class:`torch.optim.Optimizer` subclasses that treat all parameters as one
flat vector ``x`` and follow the ``step(closure)`` contract (the closure
re-evaluates the minibatch loss and sets ``.grad``):

* :class:`ConjugateGradient`: nonlinear conjugate gradient with the
  Fletcher-Reeves coefficient and a **fixed step size, no line search** (the variant
  of the original LTO teacher and of Li & Malik 2016, book/design.md, D11).
* :class:`LBFGS`: stochastic L-BFGS, two-loop recursion over the last
  ``history_size`` curvature pairs, **fixed step** ``lr`` and no line search
  (design decision D11 in book/design.md: our inference; torch's own
  :class:`torch.optim.LBFGS` with a strong-Wolfe line search is *not* used).

Registry
--------
:data:`OPTIMIZERS` maps a name (``"sgd"``, ``"momentum"``, ``"cg"``, ``"lbfgs"``,
``"adam"``, ``"adagrad"``, ``"rmsprop"``) to an :class:`OptimizerEntry`: the factory,
the pre-tuning default hyperparameters and the tuning grid.  :func:`make_optimizer`
builds one by name.  Defaults come, in this order, from the registry, then from the
tuned values in ``results/tuning/chosen.json`` (written by
``python -m l2o.experiments tune``; path overridable with ``$L2O_TUNED_HPARAMS``),
then from the caller's keyword arguments.  Learned optimizers join the registry
through :func:`register_optimizer`.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.optim import Optimizer

logger = logging.getLogger(__name__)

__all__ = [
    "ConjugateGradient",
    "LBFGS",
    "OptimizerEntry",
    "OPTIMIZERS",
    "BASELINES",
    "TUNED_HPARAMS_PATH",
    "register_optimizer",
    "make_optimizer",
    "check_hparam",
    "default_hparams",
    "load_tuned_hparams",
    "is_elementwise",
]

ROOT = Path(__file__).resolve().parents[1]
#: Where the tuning command writes the chosen hyperparameters (``$L2O_TUNED_HPARAMS``
#: overrides it).
TUNED_HPARAMS_PATH = ROOT / "results" / "tuning" / "chosen.json"
ENV_TUNED = "L2O_TUNED_HPARAMS"


# ----------------------------------------------------------------- flat vectors
class _FlatOptimizer(Optimizer):
    """Shared plumbing: one parameter group seen as one flat vector ``x``."""

    def __init__(self, params, defaults):
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(
                f"{type(self).__name__} doesn't support per-parameter options (parameter groups)"
            )
        self._params = self.param_groups[0]["params"]
        self._numel = sum(p.numel() for p in self._params)

    def _flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self._params])

    def _flat_grad(self) -> torch.Tensor:
        parts = []
        for p in self._params:
            g = p.grad
            parts.append(torch.zeros_like(p).reshape(-1) if g is None else g.detach().reshape(-1))
        return torch.cat(parts)

    def _set_flat_params(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self._params:
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n

    def _add_flat(self, direction: torch.Tensor, alpha: float) -> None:
        offset = 0
        for p in self._params:
            n = p.numel()
            p.add_(direction[offset : offset + n].view_as(p), alpha=alpha)
            offset += n

    def _state(self) -> dict:
        # All state lives under the first parameter so that state_dict() round-trips.
        return self.state[self._params[0]]

    def _grad_at(self, x: torch.Tensor, closure) -> torch.Tensor:
        """Gradient of the closure's objective at ``x``; parameters are left at ``x``."""
        self._set_flat_params(x)
        with torch.enable_grad():
            closure()
        return self._flat_grad()


def _is_number(value) -> bool:
    """A real number (numpy scalars included), not a bool, a string or a tensor."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _finite(lo: float, hi: float | None = None, lo_open: bool = False):
    """A rule: a finite number with ``lo <= v`` (``lo < v``) and ``v < hi``."""
    def ok(v) -> bool:
        return (_is_number(v) and math.isfinite(v) and (v > lo if lo_open else v >= lo)
                and (hi is None or v < hi))

    rule = f"a finite number {'>' if lo_open else '>='} {lo:g}" + (
        f" and < {hi:g}" if hi is not None else "")
    return ok, rule


#: Every hyperparameter the registry's optimizers share, with torch.optim's wording of
#: its error ("Invalid learning rate: -1") and the values it admits.
HPARAM_RULES: dict[str, tuple[str, tuple]] = {
    "lr": ("learning rate", _finite(0.0)),
    "momentum": ("momentum value", _finite(0.0, 1.0)),
    "dampening": ("dampening value", _finite(0.0, None)),
    "weight_decay": ("weight_decay value", _finite(0.0)),
    "eps": ("epsilon value", _finite(0.0)),
    "alpha": ("alpha value", _finite(0.0)),
    "lr_decay": ("lr_decay value", _finite(0.0)),
    "initial_accumulator_value": ("initial_accumulator_value value", _finite(0.0)),
}


def check_hparam(key: str, value) -> None:
    """Raise ``ValueError("Invalid <what>: <value> (must be ...)")`` for a bad value.

    Numbers only (no strings, bools or tensors), finite, in the range of
    :data:`HPARAM_RULES`; ``betas`` is a pair in ``[0, 1)``; ``history_size`` an integer
    ``>= 1``.  Keys without a rule are left to the optimizer.
    """
    if key == "betas":
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ValueError(f"Invalid betas: {value!r} (must be a pair of numbers in [0, 1))")
        ok, rule = _finite(0.0, 1.0)
        for i, b in enumerate(value):
            if not ok(b):
                raise ValueError(f"Invalid beta parameter at index {i}: {b!r} (must be {rule})")
        return
    if key == "history_size":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"Invalid history_size: {value!r} (must be an integer >= 1)")
        return
    if key in HPARAM_RULES:
        what, (ok, rule) = HPARAM_RULES[key]
        if not ok(value):
            raise ValueError(f"Invalid {what}: {value!r} (must be {rule})")


def _check_lr(lr) -> None:
    check_hparam("lr", lr)


# --------------------------------------------------------- conjugate gradient
class ConjugateGradient(_FlatOptimizer):
    r"""Nonlinear conjugate gradient with a fixed step size (no line search).

    Iterates, with ``g_k`` the (minibatch) gradient at ``x_k`` and ``alpha = lr``::

        d_0 = -g_0
        d_k = -g_k + beta_k d_{k-1}
        x_{k+1} = x_k + alpha d_k

    with the Fletcher-Reeves coefficient ``beta_k = |g_k|^2 / |g_{k-1}|^2`` (default),
    or Polak-Ribiere ``beta_k = g_k^T (g_k - g_{k-1}) / |g_{k-1}|^2`` (``beta="pr"``),
    or its non-negative part (``beta="pr+"``).  This is the variant of the original
    LTO teacher and of Li & Malik (2016): a tuned **fixed** step, no line search
    (book/design.md, D11).  It is *not* the textbook CG: without exact line searches the
    directions are not conjugate, so the "n steps on an n-dim quadratic" property does
    not hold.  What does hold, and is tested: on ``f = a/2 |x - x*|^2`` the first step
    with ``lr = 1/a`` lands on ``x*``; and on a well-conditioned quadratic the
    fixed-step iteration converges for a small enough ``lr``.

    Unrolling the Fletcher-Reeves recursion gives the closed form
    ``d_k = -|g_k|^2 sum_{j<=k} g_j / |g_j|^2``.  With exact gradients near a minimum
    the sum settles; with minibatch gradients, whose norms do not shrink, it grows
    with ``k``, so the effective step grows too and fixed-step FR diverges unless
    ``lr`` is very small (on MNIST 48-48-10, batch 64: within 400 steps for every
    ``lr >= 3e-4``).  ``restart`` bounds the sum (``restart=10`` behaves like tuned
    SGD there); it is off by default because the paper's variant has none.

    ``line_search="exact_quadratic"`` switches to the textbook method *for quadratic
    objectives*: the step is ``alpha_k = -g_k^T d_k / (d_k^T A d_k)`` where
    ``A d_k = (grad(x_k + h d_k) - g_k) / h`` with ``h = lr``, one extra closure call
    per step (exact for quadratics, a secant estimate otherwise).  With it, FR-CG
    solves an n-dim strongly convex quadratic in n steps (up to rounding).  If the
    estimated curvature is not positive the fixed step ``lr`` is used instead.

    Args:
        params: parameters (one group; treated as one flat vector).
        lr: fixed step size ``alpha`` (``h`` of the secant in line-search mode).
        beta: ``"fr"`` (Fletcher-Reeves), ``"pr"`` (Polak-Ribiere) or ``"pr+"``
            (``max(beta_PR, 0)``).
        restart: if set, reset ``d_k = -g_k`` every ``restart`` steps.
        line_search: ``None`` (fixed step) or ``"exact_quadratic"``.
    """

    BETAS = ("fr", "pr", "pr+")
    LINE_SEARCHES = (None, "exact_quadratic")

    def __init__(self, params, lr: float = 1e-2, beta: str = "fr",
                 restart: int | None = None, line_search: str | None = None):
        _check_lr(lr)
        if beta not in self.BETAS:
            raise ValueError(f"Invalid beta: {beta!r} (valid: 'fr', 'pr', 'pr+')")
        if restart is not None and (isinstance(restart, bool) or not isinstance(restart, int)
                                    or restart < 1):
            raise ValueError(f"Invalid restart period: {restart}")
        if line_search not in self.LINE_SEARCHES:
            raise ValueError(
                f"Invalid line_search: {line_search!r} (valid: None, 'exact_quadratic')")
        if line_search is not None and lr == 0:
            raise ValueError(
                "Invalid learning rate: 0 (the exact line search uses lr as secant step)")
        super().__init__(params, dict(lr=lr, beta=beta, restart=restart, line_search=line_search))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One CG step.  ``closure`` re-evaluates the loss and sets ``.grad``.

        Without a closure the gradients already stored in ``.grad`` are used (not
        allowed with ``line_search="exact_quadratic"``, which needs a second
        evaluation).  Returns the closure's loss at the current point, or None.
        """
        group = self.param_groups[0]
        lr, beta_rule = group["lr"], group["beta"]
        restart, line_search = group["restart"], group["line_search"]
        if line_search is not None and closure is None:
            raise RuntimeError("ConjugateGradient with a line search requires a closure")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        g = self._flat_grad()
        gg = torch.dot(g, g)
        state = self._state()
        k = state.get("step", 0)
        if k == 0 or (restart is not None and k % restart == 0):
            d = -g
        else:
            gg_prev = state["gg_prev"]
            if gg_prev <= 0:  # previous gradient exactly zero: nothing to carry over
                beta = torch.zeros((), dtype=g.dtype, device=g.device)
            elif beta_rule == "fr":
                beta = gg / gg_prev
            else:
                beta = torch.dot(g, g - state["g_prev"]) / gg_prev
                if beta_rule == "pr+":
                    beta = beta.clamp_min(0.0)
            d = -g + beta * state["d"]
        alpha = lr
        if line_search == "exact_quadratic":
            x = self._flat_params()
            g_probe = self._grad_at(x + lr * d, closure)
            curvature = torch.dot(d, g_probe - g) / lr  # d^T A d
            self._set_flat_params(x)
            if curvature > 0:
                alpha = float(-torch.dot(g, d) / curvature)
            else:
                logger.debug("CG line search: non-positive curvature, using the fixed step")
        self._add_flat(d, alpha)
        state["d"] = d
        state["gg_prev"] = gg
        if beta_rule != "fr":
            state["g_prev"] = g
        state["step"] = k + 1
        state["last_alpha"] = alpha
        return loss


# ----------------------------------------------------------------------- L-BFGS
class LBFGS(_FlatOptimizer):
    r"""Stochastic L-BFGS with a fixed step size (no line search).

    At step ``k`` with (minibatch) gradient ``g_k``::

        s = x_k - x_{k-1},   y = g_k - g_{k-1}
        keep (s, y) if  y^T s > eps * s^T s   (else skip the pair)
        r = H_k g_k          (two-loop recursion over the last history_size pairs,
                              initial matrix gamma I, gamma = s^T y / y^T y of the
                              newest pair; gamma = 1 while no pair is stored)
        x_{k+1} = x_k - lr * r

    So the first step (and any step without stored pairs) is a plain gradient step
    of size ``lr``.  The curvature test keeps ``H_k`` positive definite; with
    ``eps > 0`` it also rejects pairs whose curvature along ``s`` is negligible.

    ``curvature="consecutive"`` (default) forms ``y`` from consecutive minibatch
    gradients, as a fixed-step ``torch.optim.LBFGS`` with one iteration per step
    would.  ``curvature="same_batch"`` evaluates the current minibatch also at
    ``x_{k-1}`` (one extra closure call per step), so that ``y`` measures curvature
    rather than minibatch noise (as in online L-BFGS, Schraudolph et al. 2007).

    This variant (fixed step, history 10) is our reading of the paper's "L-BFGS"
    baseline (book/design.md, D11, flagged as inferred).

    Args:
        params: parameters (one group; treated as one flat vector).
        lr: fixed step size.
        history_size: number ``m`` of curvature pairs kept.
        eps: curvature threshold of the pair test (``>= 0``).
        curvature: ``"consecutive"`` or ``"same_batch"``.
    """

    CURVATURES = ("consecutive", "same_batch")

    def __init__(self, params, lr: float = 1.0, history_size: int = 10, eps: float = 1e-10,
                 curvature: str = "consecutive"):
        _check_lr(lr)
        if isinstance(history_size, bool) or not isinstance(history_size, int) or history_size < 1:
            raise ValueError(f"Invalid history_size: {history_size}")
        if not (isinstance(eps, (int, float)) and math.isfinite(eps)) or eps < 0:
            raise ValueError(f"Invalid eps: {eps}")
        if curvature not in self.CURVATURES:
            raise ValueError(
                f"Invalid curvature: {curvature!r} (valid: 'consecutive', 'same_batch')"
            )
        super().__init__(params, dict(lr=lr, history_size=history_size, eps=eps,
                                      curvature=curvature))

    @staticmethod
    def two_loop(g: torch.Tensor, s_hist: Sequence[torch.Tensor],
                 y_hist: Sequence[torch.Tensor]) -> torch.Tensor:
        """``H g`` by the two-loop recursion; pairs are ordered oldest first."""
        q = g.clone()
        rhos = [1.0 / torch.dot(y, s) for s, y in zip(s_hist, y_hist)]
        alphas = [None] * len(s_hist)
        for i in range(len(s_hist) - 1, -1, -1):
            alphas[i] = rhos[i] * torch.dot(s_hist[i], q)
            q.add_(y_hist[i] * -alphas[i])
        if s_hist:
            s, y = s_hist[-1], y_hist[-1]
            q.mul_(torch.dot(s, y) / torch.dot(y, y))
        for i in range(len(s_hist)):
            b = rhos[i] * torch.dot(y_hist[i], q)
            q.add_(s_hist[i] * (alphas[i] - b))
        return q

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One L-BFGS step.  ``closure`` re-evaluates the loss and sets ``.grad``.

        Without a closure the gradients in ``.grad`` are used (not allowed with
        ``curvature="same_batch"``).  Returns the closure's loss at the current
        point, or None.
        """
        group = self.param_groups[0]
        lr, m, eps = group["lr"], group["history_size"], group["eps"]
        same_batch = group["curvature"] == "same_batch"
        if same_batch and closure is None:
            raise RuntimeError("LBFGS with curvature='same_batch' requires a closure")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        g = self._flat_grad()
        x = self._flat_params()
        state = self._state()
        s_hist = state.setdefault("s_hist", [])
        y_hist = state.setdefault("y_hist", [])
        if "x_prev" in state:
            s = x - state["x_prev"]
            if same_batch:
                y = g - self._grad_at(state["x_prev"], closure)
                self._set_flat_params(x)
                self._restore_grad(g)
            else:
                y = g - state["g_prev"]
            ys, ss = torch.dot(y, s), torch.dot(s, s)
            if torch.isfinite(ys) and ys > eps * ss and ss > 0:
                s_hist.append(s)
                y_hist.append(y)
                if len(s_hist) > m:
                    s_hist.pop(0)
                    y_hist.pop(0)
            else:
                state["skipped"] = state.get("skipped", 0) + 1
        r = self.two_loop(g, s_hist, y_hist)
        self._add_flat(r, -lr)
        state["x_prev"] = x
        state["g_prev"] = g
        state["step"] = state.get("step", 0) + 1
        return loss

    def _restore_grad(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self._params:
            n = p.numel()
            if p.grad is not None:
                p.grad.copy_(flat[offset : offset + n].view_as(p))
            offset += n


# ------------------------------------------------------------------- registry
def _momentum(params, lr: float = 1e-2, momentum: float = 0.9, dampening: float = 0.0,
              nesterov: bool = False, weight_decay: float = 0.0) -> torch.optim.SGD:
    """Heavy-ball momentum: ``v <- momentum v + g``, ``x <- x - lr v`` (torch's SGD)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, dampening=dampening,
                           nesterov=nesterov, weight_decay=weight_decay)


def _sgd(params, lr: float = 1e-1, weight_decay: float = 0.0) -> torch.optim.SGD:
    """Plain SGD: ``x <- x - lr g`` (torch's SGD without momentum)."""
    return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=weight_decay)


def _lr_grid(*values: float) -> tuple[dict, ...]:
    return tuple({"lr": v} for v in values)


# Learning rates on a half-decade grid {1, 3} x 10^k.  Ranges per method were set from a
# probe on the MNIST 48-48-10 objective (T=400) so that the best value lies inside the
# grid, and trimmed at the end where runs do not move, to keep the full tuning near
# 10-15 min on 2 cores (every run evaluates the full training loss at every step).
_GRID_SGD = _lr_grid(3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
_GRID_ADAPTIVE = _lr_grid(3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
_GRID_ADAGRAD = _lr_grid(3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
# Fixed-step Fletcher-Reeves diverges on minibatch gradients for lr >= 3e-4 within
# 400 steps (see ConjugateGradient), so its grid reaches down to 1e-5; the diverging
# runs stop early and cost little.
_GRID_CG = _lr_grid(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
# Below lr = 1e-2 the consecutive-minibatch L-BFGS steps shrink geometrically (the
# scaling gamma = s^T y / y^T y follows the step size), so the runs stay at x_0.
_GRID_LBFGS = _lr_grid(1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
_GRID_MOMENTUM = tuple(
    {"lr": lr, "momentum": mu}
    for lr in (1e-2, 3e-2, 1e-1, 3e-1, 1.0)
    for mu in (0.5, 0.9, 0.95, 0.99)
)


@dataclass(frozen=True)
class OptimizerEntry:
    """One optimizer of the registry.

    Attributes:
        factory: ``factory(params, **hparams) -> torch.optim.Optimizer``.
        defaults: hyperparameters before tuning (tuned values override them).
        grid: configurations tried by the tuning command (may be empty).
        elementwise: the update of each coordinate depends only on that coordinate's
            history, so independent problems stacked as rows of one tensor are
            optimized exactly as if run one by one (used to batch seeds).
        description: one line for tables and figure legends.
    """

    factory: Callable[..., Optimizer]
    defaults: Mapping[str, Any]
    grid: tuple[Mapping[str, Any], ...] = ()
    elementwise: bool = False
    description: str = ""
    label: str = field(default="")


OPTIMIZERS: dict[str, OptimizerEntry] = {
    "sgd": OptimizerEntry(_sgd, {"lr": 1e-1}, _GRID_SGD, True,
                          "stochastic gradient descent", "SGD"),
    "momentum": OptimizerEntry(_momentum, {"lr": 1e-2, "momentum": 0.9}, _GRID_MOMENTUM, True,
                               "SGD with heavy-ball momentum", "Momentum"),
    "cg": OptimizerEntry(ConjugateGradient, {"lr": 1e-4}, _GRID_CG, False,
                         "Fletcher-Reeves conjugate gradient, fixed step", "Conjugate gradient"),
    "lbfgs": OptimizerEntry(LBFGS, {"lr": 1e-1, "history_size": 10}, _GRID_LBFGS, False,
                            "stochastic L-BFGS (m=10), fixed step", "L-BFGS"),
    "adam": OptimizerEntry(torch.optim.Adam, {"lr": 1e-3}, _GRID_ADAPTIVE, True, "Adam", "ADAM"),
    "adagrad": OptimizerEntry(torch.optim.Adagrad, {"lr": 1e-2}, _GRID_ADAGRAD, True,
                              "AdaGrad", "AdaGrad"),
    "rmsprop": OptimizerEntry(torch.optim.RMSprop, {"lr": 1e-3}, _GRID_ADAPTIVE, True,
                              "RMSprop", "RMSprop"),
}
#: The paper's seven hand-engineered algorithms, in the paper's order.
BASELINES = ("sgd", "momentum", "cg", "lbfgs", "adam", "adagrad", "rmsprop")


def register_optimizer(name: str, factory: Callable[..., Optimizer],
                       hparams: Mapping[str, Any] | None = None,
                       grid: Iterable[Mapping[str, Any]] = (), elementwise: bool = False,
                       description: str = "", label: str = "", overwrite: bool = False) -> None:
    """Add an optimizer (e.g. a learned one) to :data:`OPTIMIZERS`.

    Args:
        name: registry key, e.g. ``"psd"``.
        factory: ``factory(params, **hparams) -> torch.optim.Optimizer``.
        hparams: its default keyword arguments.
        grid: tuning grid (usually empty for learned optimizers).
        elementwise: True only if rows of a stacked tensor are optimized independently
            and exactly (enables batching seeds).
        description, label: for tables and legends.
        overwrite: replace an existing entry instead of raising.

    Note:
        Worker processes of :func:`l2o.experiments.run_grid` see an optimizer
        registered in the parent when they are forked (Linux); elsewhere register
        it at import time of a module that the workers import.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"Invalid optimizer name: {name!r} (letters, digits, '-' and '_')")
    if name in OPTIMIZERS and not overwrite:
        raise ValueError(f"Optimizer {name!r} is already registered (pass overwrite=True)")
    if not callable(factory):
        raise TypeError("factory must be callable: factory(params, **hparams) -> Optimizer")
    OPTIMIZERS[name] = OptimizerEntry(factory, dict(hparams or {}), tuple(dict(g) for g in grid),
                                      bool(elementwise), description, label or name)


def _entry(name: str) -> OptimizerEntry:
    try:
        return OPTIMIZERS[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(n) for n in OPTIMIZERS)
        raise ValueError(f"Unknown optimizer {name!r}; valid names are {valid}") from None


def is_elementwise(name: str) -> bool:
    """Whether seeds of optimizer ``name`` may be batched as rows of one tensor."""
    return _entry(name).elementwise


_warned_paths: set[str] = set()


def load_tuned_hparams(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Tuned hyperparameters ``{name: {hparam: value}}`` from ``chosen.json``.

    Args:
        path: the file; default ``$L2O_TUNED_HPARAMS`` or :data:`TUNED_HPARAMS_PATH`.

    Returns:
        The mapping, or ``{}`` (with a warning logged once per path) when the file
        is absent or unreadable, so that callers fall back to the registry defaults.
    """
    if path is None:
        path = os.environ.get(ENV_TUNED) or TUNED_HPARAMS_PATH
    path = Path(path)
    try:
        with open(path) as f:
            data = json.load(f)
        hp = data["hparams"]
        if not isinstance(hp, dict) or not all(isinstance(v, dict) for v in hp.values()):
            raise ValueError("'hparams' must map optimizer names to dicts")
        return {k: dict(v) for k, v in hp.items()}
    except FileNotFoundError:
        reason = "not found"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = f"unreadable ({exc})"
    if str(path) not in _warned_paths:
        _warned_paths.add(str(path))
        logger.warning("tuned hyperparameters %s: %s; using the registry defaults "
                       "(run `python -m l2o.experiments tune`)", path, reason)
    return {}


def default_hparams(name: str, tuned: bool = True,
                    tuned_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The hyperparameters :func:`make_optimizer` uses for ``name`` when given none.

    Registry defaults, overridden by the tuned values when ``tuned`` and the tuning
    file has an entry for ``name``.
    """
    hp = dict(_entry(name).defaults)
    if tuned:
        hp.update(load_tuned_hparams(tuned_path).get(name, {}))
    return hp


def _accepted_kwargs(factory) -> tuple[set[str], bool]:
    """Keyword names ``factory`` accepts (besides ``params``), and whether it takes ``**kw``."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return set(), True
    names, var_kw = set(), False
    for i, (pname, p) in enumerate(sig.parameters.items()):
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            if i == 0 and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
                continue  # the params argument
            names.add(pname)
    return names, var_kw


def make_optimizer(name: str, params, tuned: bool = True, **hparams) -> Optimizer:
    """Build the registered optimizer ``name`` on ``params``.

    Args:
        name: one of :data:`OPTIMIZERS` (``"sgd"``, ``"momentum"``, ``"cg"``,
            ``"lbfgs"``, ``"adam"``, ``"adagrad"``, ``"rmsprop"``, or registered).
        params: iterable of tensors or parameter groups.
        tuned: start from the tuned defaults (``chosen.json``) if available.
        **hparams: overrides, e.g. ``lr=0.1``.

    Raises:
        ValueError: unknown name (the message lists the valid ones), unknown
            hyperparameter, or an invalid value: every optimizer's hyperparameters pass
            the same checks (:func:`check_hparam`: numbers only, finite, ``lr >= 0``,
            ``momentum`` in ``[0, 1)``, ...) with torch.optim's wording, e.g.
            ``Invalid learning rate: nan``.
    """
    entry = _entry(name)
    accepted, var_kw = _accepted_kwargs(entry.factory)
    unknown = sorted(k for k in hparams if k not in accepted and k not in entry.defaults)
    if unknown and not var_kw:
        raise ValueError(
            f"Unknown hyperparameter(s) {', '.join(map(repr, unknown))} for optimizer {name!r}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    kwargs = default_hparams(name, tuned=tuned)
    kwargs.update(hparams)
    if not var_kw:  # a tuned file may carry stale keys; drop them rather than crash
        stale = [k for k in kwargs if k not in accepted]
        for k in stale:
            logger.warning("ignoring hyperparameter %r for %r: not accepted by its factory",
                           k, name)
            kwargs.pop(k)
    for key, value in kwargs.items():
        check_hparam(key, value)
    return entry.factory(params, **kwargs)
