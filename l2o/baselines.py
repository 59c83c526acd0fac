"""The seven hand-engineered optimizers of the paper's comparison (section 4), and two more.

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
  (design decision D11 in book/design.md: our inference).

These two fixed-step variants are the paper's and stay the main rows.  Beside them,
beyond the paper, are the variants a user would pick (:data:`EXTRA_BASELINES`), each
taking its step by a line search on the step's minibatch:

* ``"lbfgs_wolfe"``: :class:`torch.optim.LBFGS` with ``line_search_fn="strong_wolfe"``,
  one L-BFGS iteration per step (per minibatch);
* ``"cg_pr_wolfe"``: :class:`ConjugateGradient` with the Polak-Ribiere+ coefficient,
  restarts, and :func:`strong_wolfe_line_search` (:func:`armijo_line_search`, plain
  backtracking, is the other choice of its ``line_search``).

Registry
--------
:data:`OPTIMIZERS` maps a name (``"sgd"``, ``"momentum"``, ``"cg"``, ``"lbfgs"``,
``"adam"``, ``"adagrad"``, ``"rmsprop"``, ``"lbfgs_wolfe"``, ``"cg_pr_wolfe"``) to an
:class:`OptimizerEntry`: the factory, the pre-tuning default hyperparameters and the
tuning grid.  :data:`BASELINES` names the paper's seven, :data:`EXTRA_BASELINES` the
two extras.  :func:`make_optimizer`
builds one by name.  Defaults come, in this order, from the registry, then from the
tuned values in ``results/tuning/chosen.json`` (written by
``python -m l2o.experiments tune``; path overridable with ``$L2O_TUNED_HPARAMS``),
then from the caller's keyword arguments.  Learned optimizers join the registry
through :func:`register_optimizer`.
"""

from __future__ import annotations

import dataclasses
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
    "EXTRA_BASELINES",
    "PREVIOUS_TUNED",
    "LineSearchResult",
    "strong_wolfe_line_search",
    "armijo_line_search",
    "TUNED_HPARAMS_PATH",
    "register_optimizer",
    "make_optimizer",
    "check_hparam",
    "default_hparams",
    "load_tuned_hparams",
    "is_elementwise",
]

from l2o.paths import ROOT  # noqa: E402 - the project folder ($L2O_ROOT or the checkout)

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
        return self._loss_grad_at(x, closure)[1]

    def _loss_grad_at(self, x: torch.Tensor, closure) -> tuple[float, torch.Tensor]:
        """Objective (as a float) and gradient at ``x``; parameters are left at ``x``."""
        self._set_flat_params(x)
        with torch.enable_grad():
            loss = closure()
        return float(loss), self._flat_grad()


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
    "tolerance_grad": ("tolerance_grad value", _finite(0.0)),
    "tolerance_change": ("tolerance_change value", _finite(0.0)),
    "c1": ("c1 value", _finite(0.0, 1.0, lo_open=True)),
    "c2": ("c2 value", _finite(0.0, 1.0, lo_open=True)),
}
#: Hyperparameters that are counts: an integer ``>= 1``.
INT_HPARAMS = ("history_size", "max_iter", "max_eval", "max_ls")


def check_hparam(key: str, value) -> None:
    """Raise ``ValueError("Invalid <what>: <value> (must be ...)")`` for a bad value.

    Numbers only (no strings, bools or tensors), finite, in the range of
    :data:`HPARAM_RULES`; ``betas`` is a pair in ``[0, 1)``; the counts of
    :data:`INT_HPARAMS` (``history_size``, ``max_iter``, ``max_eval``, ``max_ls``)
    integers ``>= 1``.
    Keys without a rule are left to the optimizer.
    """
    if key == "betas":
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ValueError(f"Invalid betas: {value!r} (must be a pair of numbers in [0, 1))")
        ok, rule = _finite(0.0, 1.0)
        for i, b in enumerate(value):
            if not ok(b):
                raise ValueError(f"Invalid beta parameter at index {i}: {b!r} (must be {rule})")
        return
    if key in INT_HPARAMS:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            what = key if key == "history_size" else f"{key} value"
            raise ValueError(f"Invalid {what}: {value!r} (must be an integer >= 1)")
        return
    if key in HPARAM_RULES:
        what, (ok, rule) = HPARAM_RULES[key]
        if not ok(value):
            raise ValueError(f"Invalid {what}: {value!r} (must be {rule})")


def _check_lr(lr) -> None:
    check_hparam("lr", lr)


# ----------------------------------------------------------------- line searches
@dataclass(frozen=True)
class LineSearchResult:
    """Outcome of a line search along ``d`` from ``x``: ``phi(t) = f(x + t d)``.

    Attributes:
        t: the accepted step (0 when no trial decreased ``phi`` enough).
        f: ``phi(t)``.
        dphi: ``phi'(t) = grad f(x + t d)^T d`` (NaN where not evaluated, e.g. ``t = 0``
            of a failed search that never computed it).
        payload: what ``phi`` returned with the accepted trial (e.g. the gradient), or
            None for ``t = 0``.
        evals: calls of ``phi`` made.
        ok: the conditions the search claims (Armijo, or strong Wolfe) hold at ``t``.
    """

    t: float
    f: float
    dphi: float
    payload: Any
    evals: int
    ok: bool


def _armijo(f: float, t: float, f0: float, dphi0: float, c1: float) -> bool:
    """Sufficient decrease ``phi(t) <= phi(0) + c1 t phi'(0)`` (false for non-finite f)."""
    return math.isfinite(f) and f <= f0 + c1 * t * dphi0


def _cubic_minimizer(a: float, fa: float, da: float, b: float, fb: float,
                     db: float) -> float | None:
    """Minimiser of the cubic that matches ``phi`` and ``phi'`` at ``a`` and ``b``.

    Nocedal & Wright (2006), eq. (3.59); None when the cubic has no finite local
    minimiser (or an input is not finite).
    """
    if not all(math.isfinite(v) for v in (a, fa, da, b, fb, db)) or a == b:
        return None
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    if disc < 0:
        return None
    d2 = math.copysign(math.sqrt(disc), b - a)
    denom = db - da + 2.0 * d2
    if denom == 0:
        return None
    t = b - (b - a) * (db + d2 - d1) / denom
    return t if math.isfinite(t) else None


def strong_wolfe_line_search(phi: Callable[[float], tuple[float, float, Any]], f0: float,
                             dphi0: float, t_init: float, c1: float = 1e-4, c2: float = 0.9,
                             max_ls: int = 25, t_max: float | None = None) -> LineSearchResult:
    r"""A step ``t`` that satisfies the strong Wolfe conditions along a descent direction.

    With ``phi(t) = f(x + t d)`` and ``phi'(0) < 0``::

        phi(t) <= phi(0) + c1 t phi'(0)          (sufficient decrease, Armijo)
        |phi'(t)| <= c2 |phi'(0)|                (strong curvature condition)

    Nocedal & Wright (2006), Algorithms 3.5 (bracketing) and 3.6 (zoom).  Bracketing
    tries ``t_init`` and extrapolates (minimiser of the cubic through the last two
    trials, kept in ``[1.1 t, 10 t]``; ``2 t`` when the cubic has none) until a trial
    fails Armijo, does not decrease ``phi`` below the previous trial, or has
    ``phi' >= 0``: an interval holding acceptable steps is then known.  Zoom shrinks
    it, trying the cubic minimiser of its ends when it lies in the middle 80 % of the
    interval and the midpoint otherwise, always keeping as ``lo`` the lowest trial
    that satisfies Armijo.  A non-finite ``phi`` counts as a failed Armijo test (the
    step was too long).  On a quadratic ``phi`` the cubic interpolant is ``phi``
    itself, so the exact minimiser is found in two or three calls.

    Args:
        phi: ``phi(t) -> (phi(t), phi'(t), payload)``; the payload (e.g. the gradient
            at ``x + t d``) is returned with the accepted trial.
        f0: ``phi(0)``.
        dphi0: ``phi'(0)``, must be negative.
        t_init: first trial (``> 0``).
        c1: Armijo constant, ``0 < c1 < c2``.
        c2: curvature constant, ``c1 < c2 < 1`` (0.9 for quasi-Newton, 0.1 for CG).
        max_ls: most calls of ``phi``.
        t_max: largest step tried while bracketing (default: no bound but ``max_ls``).

    Returns:
        The accepted trial.  When ``max_ls`` calls did not find a strong-Wolfe step,
        the lowest trial that satisfies Armijo (``ok=False``), or ``t = 0`` if none did.
    """
    if not (dphi0 < 0 and math.isfinite(f0)):
        raise ValueError(f"not a descent direction: phi(0) = {f0}, phi'(0) = {dphi0}")
    if not (0 < c1 < c2 < 1):
        raise ValueError(f"Invalid line-search constants: need 0 < c1 < c2 < 1, got {c1}, {c2}")
    t_max = math.inf if t_max is None else t_max
    evals = 0
    best = LineSearchResult(0.0, f0, dphi0, None, 0, False)  # lowest Armijo trial so far

    def wolfe(f, d, t):
        return _armijo(f, t, f0, dphi0, c1) and abs(d) <= -c2 * dphi0

    def zoom(lo, hi):
        # lo = (t, f, dphi, payload) satisfies Armijo and is the lowest such trial;
        # hi is the other end: phi'(lo) (hi - lo) < 0, so a minimiser lies between.
        nonlocal evals, best
        while evals < max_ls:
            a, b = sorted((lo[0], hi[0]))
            width = b - a
            if width <= 1e-12 * max(b, 1e-300):
                break
            t = _cubic_minimizer(lo[0], lo[1], lo[2], hi[0], hi[1], hi[2])
            if t is None or not (a + 0.1 * width <= t <= b - 0.1 * width):
                t = 0.5 * (a + b)
            f, d, payload = phi(t)
            evals += 1
            if not _armijo(f, t, f0, dphi0, c1) or f >= lo[1]:
                hi = (t, f, d, payload)
                continue
            best = LineSearchResult(t, f, d, payload, evals, False)
            if abs(d) <= -c2 * dphi0:
                return LineSearchResult(t, f, d, payload, evals, True)
            if d * (hi[0] - lo[0]) >= 0:
                hi = lo
            lo = (t, f, d, payload)
        return dataclasses.replace(best, evals=evals)

    prev = (0.0, f0, dphi0, None)
    t = t_init
    while evals < max_ls:
        f, d, payload = phi(t)
        evals += 1
        if not _armijo(f, t, f0, dphi0, c1) or (prev[0] > 0 and f >= prev[1]):
            return zoom(prev, (t, f, d, payload))
        best = LineSearchResult(t, f, d, payload, evals, False)
        if wolfe(f, d, t):
            return LineSearchResult(t, f, d, payload, evals, True)
        if d >= 0:
            return zoom((t, f, d, payload), prev)
        if t >= t_max:
            break
        guess = _cubic_minimizer(prev[0], prev[1], prev[2], t, f, d)
        nxt = 2.0 * t if guess is None or guess <= t else min(max(guess, 1.1 * t), 10.0 * t)
        prev, t = (t, f, d, payload), min(nxt, t_max)
    return dataclasses.replace(best, evals=evals)


def armijo_line_search(phi: Callable[[float], tuple[float, float, Any]], f0: float,
                       dphi0: float, t_init: float, c1: float = 1e-4, shrink: float = 0.5,
                       max_ls: int = 25) -> LineSearchResult:
    r"""Backtracking: the first ``t = t_init shrink^k`` with sufficient decrease.

    Returns the first trial of ``t_init, t_init shrink, t_init shrink^2, ...`` with
    ``phi(t) <= phi(0) + c1 t phi'(0)`` (Nocedal & Wright 2006, Algorithm 3.1), so
    the step never exceeds ``t_init``.  After ``max_ls`` failed trials, ``t = 0``.

    Args:
        phi, f0, dphi0, t_init, c1, max_ls: as in :func:`strong_wolfe_line_search`
            (``phi'(t)`` is not used, but is returned with the accepted trial).
        shrink: factor in ``(0, 1)`` between trials.
    """
    if not (dphi0 < 0 and math.isfinite(f0)):
        raise ValueError(f"not a descent direction: phi(0) = {f0}, phi'(0) = {dphi0}")
    if not (0 < c1 < 1 and 0 < shrink < 1):
        raise ValueError(f"Invalid line-search constants: c1 = {c1}, shrink = {shrink}")
    t = t_init
    for k in range(1, max_ls + 1):
        f, d, payload = phi(t)
        if _armijo(f, t, f0, dphi0, c1):
            return LineSearchResult(t, f, d, payload, k, True)
        t *= shrink
    return LineSearchResult(0.0, f0, dphi0, None, max_ls, False)


# --------------------------------------------------------- conjugate gradient
class ConjugateGradient(_FlatOptimizer):
    r"""Nonlinear conjugate gradient, with a fixed step size or a line search.

    Iterates, with ``g_k`` the (minibatch) gradient at ``x_k``::

        d_0 = -g_0
        d_k = -g_k + beta_k d_{k-1}
        x_{k+1} = x_k + alpha_k d_k

    with the Fletcher-Reeves coefficient ``beta_k = |g_k|^2 / |g_{k-1}|^2`` (default),
    or Polak-Ribiere ``beta_k = g_k^T (g_k - g_{k-1}) / |g_{k-1}|^2`` (``beta="pr"``),
    or its non-negative part (``beta="pr+"``, which restarts with ``d_k = -g_k``
    whenever ``beta_PR < 0``).

    **Fixed step** (``line_search=None``, default): ``alpha_k = lr``.  This is the
    variant of the original LTO teacher and of Li & Malik (2016), the paper's "conjugate
    gradient" (book/design.md, D11).  It is *not* the textbook CG: without exact line
    searches the directions are not conjugate, so the "n steps on an n-dim quadratic"
    property does not hold.  What does hold, and is tested: on
    ``f = a/2 |x - x*|^2`` the first step with ``lr = 1/a`` lands on ``x*``; and on a
    well-conditioned quadratic the fixed-step iteration converges for a small enough
    ``lr``.

    Unrolling the Fletcher-Reeves recursion gives the closed form
    ``d_k = -|g_k|^2 sum_{j<=k} g_j / |g_j|^2``.  With exact gradients near a minimum
    the sum settles; with minibatch gradients, whose norms do not shrink, it grows
    with ``k``, so the effective step grows too and fixed-step FR diverges unless
    ``lr`` is very small (on MNIST 48-48-10, batch 64: within 400 steps for every
    ``lr >= 3e-4``).  ``restart`` bounds the sum (``restart=10`` behaves like tuned
    SGD there); it is off by default because the paper's variant has none.

    **Line search on the step's minibatch** (``line_search="armijo"`` or
    ``"strong_wolfe"``): ``alpha_k`` comes from :func:`armijo_line_search`
    (backtracking from ``lr``) or :func:`strong_wolfe_line_search` (first trial
    ``lr``, constants ``c1``, ``c2``) applied to ``phi(t) = f_k(x_k + t d_k)``, where
    ``f_k`` is the minibatch loss of step ``k`` (every closure call of one step sees
    the same minibatch).  In these modes the direction is also restarted, ``d_k =
    -g_k``, when ``d_k`` is not a descent direction (``g_k^T d_k >= 0``: the
    coefficients, formed from consecutive minibatch gradients, guarantee nothing) and
    after a step whose line search found no acceptable point (the iterate then stays
    at ``x_k``).  With ``c2`` small the strong-Wolfe step is an exact line search, and
    CG (any ``beta``) solves an n-dim strongly convex quadratic in n steps.

    ``line_search="exact_quadratic"`` is the textbook step *for quadratic objectives*:
    ``alpha_k = -g_k^T d_k / (d_k^T A d_k)`` where
    ``A d_k = (grad(x_k + h d_k) - g_k) / h`` with ``h = lr``, one extra closure call
    per step (exact for quadratics, a secant estimate otherwise).  If the estimated
    curvature is not positive the fixed step ``lr`` is used instead.

    Args:
        params: parameters (one group; treated as one flat vector).
        lr: fixed step size ``alpha``; the first trial step of a line search; ``h`` of
            the secant in ``"exact_quadratic"`` mode.
        beta: ``"fr"`` (Fletcher-Reeves), ``"pr"`` (Polak-Ribiere) or ``"pr+"``
            (``max(beta_PR, 0)``).
        restart: if set, reset ``d_k = -g_k`` every ``restart`` steps.
        line_search: ``None`` (fixed step), ``"armijo"``, ``"strong_wolfe"`` or
            ``"exact_quadratic"``.
        c1: sufficient-decrease constant of the line searches, ``0 < c1 < 1``.
        c2: curvature constant of the strong-Wolfe search, ``c1 < c2 < 1`` (0.1, as
            Nocedal & Wright advise for CG).
        max_ls: most closure calls of one line search (besides the one at ``x_k``).
    """

    BETAS = ("fr", "pr", "pr+")
    LINE_SEARCHES = (None, "exact_quadratic", "armijo", "strong_wolfe")

    def __init__(self, params, lr: float = 1e-2, beta: str = "fr",
                 restart: int | None = None, line_search: str | None = None,
                 c1: float = 1e-4, c2: float = 0.1, max_ls: int = 25):
        _check_lr(lr)
        if beta not in self.BETAS:
            raise ValueError(f"Invalid beta: {beta!r} (valid: 'fr', 'pr', 'pr+')")
        if restart is not None and (isinstance(restart, bool) or not isinstance(restart, int)
                                    or restart < 1):
            raise ValueError(f"Invalid restart period: {restart}")
        if line_search not in self.LINE_SEARCHES:
            raise ValueError(f"Invalid line_search: {line_search!r} (valid: None, "
                             "'exact_quadratic', 'armijo', 'strong_wolfe')")
        if line_search is not None and lr == 0:
            raise ValueError(
                "Invalid learning rate: 0 (a line search starts from lr; the exact "
                "quadratic one uses it as secant step)")
        for key, value in (("c1", c1), ("c2", c2), ("max_ls", max_ls)):
            check_hparam(key, value)
        if not c2 > c1:
            raise ValueError(f"Invalid c2 value: {c2!r} (must be > c1 = {c1!r})")
        super().__init__(params, dict(lr=lr, beta=beta, restart=restart,
                                      line_search=line_search, c1=c1, c2=c2, max_ls=max_ls))

    def _direction(self, g: torch.Tensor, state: dict, restart: int | None,
                   beta_rule: str) -> torch.Tensor:
        """``d_k`` from ``g_k`` and the stored ``d_{k-1}``, ``g_{k-1}``."""
        k = state.get("step", 0)
        if k == 0 or (restart is not None and k % restart == 0) or state.get("restart_next"):
            return -g
        gg_prev = state["gg_prev"]
        if gg_prev <= 0:  # previous gradient exactly zero: nothing to carry over
            return -g
        if beta_rule == "fr":
            beta = torch.dot(g, g) / gg_prev
        else:
            beta = torch.dot(g, g - state["g_prev"]) / gg_prev
            if beta_rule == "pr+":
                beta = beta.clamp_min(0.0)
        return -g + beta * state["d"]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One CG step.  ``closure`` re-evaluates the loss and sets ``.grad``.

        Without a closure the gradients already stored in ``.grad`` are used (not
        allowed with a line search, which needs more evaluations).  Returns the
        closure's loss at the current point, or None.
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
        state = self._state()
        d = self._direction(g, state, restart, beta_rule)
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
        elif line_search is not None:
            alpha, d = self._line_search_step(closure, float(loss), g, d, group, state)
        else:
            self._add_flat(d, alpha)
        state["d"] = d
        state["gg_prev"] = torch.dot(g, g)
        if beta_rule != "fr":
            state["g_prev"] = g
        state["step"] = state.get("step", 0) + 1
        state["last_alpha"] = alpha
        return loss

    def _line_search_step(self, closure, f0: float, g: torch.Tensor, d: torch.Tensor,
                          group: dict, state: dict) -> tuple[float, torch.Tensor]:
        """Move along ``d`` (or ``-g``) by a line search on the step's minibatch.

        Returns the step taken and the direction used.
        """
        dphi0 = float(torch.dot(g, d))
        if not dphi0 < 0 and bool(torch.isfinite(g).all()):
            state["restarts"] = state.get("restarts", 0) + 1  # not a descent direction
            d = -g
            dphi0 = float(torch.dot(g, d))
        state["restart_next"] = False
        if not (dphi0 < 0 and math.isfinite(f0)):  # zero or non-finite gradient: stay
            state["ls_evals"] = 0
            return 0.0, d
        x = self._flat_params()

        def phi(t: float):
            f, gt = self._loss_grad_at(x + t * d, closure)
            return f, float(torch.dot(gt, d)), None

        if group["line_search"] == "armijo":
            res = armijo_line_search(phi, f0, dphi0, group["lr"], c1=group["c1"],
                                     max_ls=group["max_ls"])
        else:
            res = strong_wolfe_line_search(phi, f0, dphi0, group["lr"], c1=group["c1"],
                                           c2=group["c2"], max_ls=group["max_ls"])
        self._set_flat_params(x + res.t * d)
        state["ls_evals"] = res.evals
        state["ls_ok"] = res.ok
        if res.t == 0:
            state["restart_next"] = True
            state["ls_failures"] = state.get("ls_failures", 0) + 1
        return res.t, d


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


def _lbfgs_strong_wolfe(params, lr: float = 1.0, history_size: int = 10, max_iter: int = 1,
                        max_eval: int = 25, tolerance_grad: float = 1e-7,
                        tolerance_change: float = 1e-9) -> torch.optim.LBFGS:
    """``torch.optim.LBFGS`` with ``line_search_fn="strong_wolfe"``, one iteration per step.

    Each ``step(closure)`` is ``max_iter`` (default 1) L-BFGS iterations on the
    closure's minibatch: direction ``-H g`` by the two-loop recursion over the last
    ``history_size`` pairs, then torch's strong-Wolfe line search (``c1 = 1e-4``,
    ``c2 = 0.9``) from the trial step ``lr`` (``lr min(1, 1/|g|_1)`` at the very first
    iteration).  The curvature pairs live in the optimizer's state across steps, so
    with one iteration per step a pair ``y`` is the difference of two consecutive
    minibatch gradients, as for a user who calls ``step`` once per minibatch.  One
    iteration per step keeps a step of this optimizer comparable with a step of the
    others (the line search's extra evaluations, on the same minibatch, show in the
    runner's ``grad_evals``).

    ``max_eval`` bounds the closure calls of one ``step``; the line search gets what the
    first call leaves.  torch's default, ``max_iter * 5 // 4``, is 1 for ``max_iter = 1``
    and leaves the line search *no* evaluation beyond its first trial (it then takes
    ``lr`` if that lowers the loss and 0 otherwise, and a step of 0 stalls L-BFGS for
    good); 25 is the budget torch's defaults give a step (``max_iter = 20``).
    """
    if max_eval < max_iter + 1:
        raise ValueError(f"Invalid max_eval value: {max_eval!r} (must be > max_iter = "
                         f"{max_iter!r}, so that the line search can evaluate)")
    return torch.optim.LBFGS(params, lr=lr, max_iter=max_iter, max_eval=max_eval,
                             history_size=history_size, tolerance_grad=tolerance_grad,
                             tolerance_change=tolerance_change, line_search_fn="strong_wolfe")


def _cg_pr_plus(params, lr: float = 1.0, line_search: str = "strong_wolfe",
                restart: int | None = None, c1: float = 1e-4, c2: float = 0.1,
                max_ls: int = 25) -> ConjugateGradient:
    """Polak-Ribiere+ CG with a line search on the minibatch (:class:`ConjugateGradient`).

    ``beta = max(beta_PR, 0)``; restarts with ``-g`` when ``beta_PR < 0``, when the
    direction is not a descent direction, after a failed line search, and every
    ``restart`` steps if set.  ``line_search`` is ``"strong_wolfe"`` (first trial
    ``lr``) or ``"armijo"`` (backtracking from ``lr``).
    """
    if line_search not in ("armijo", "strong_wolfe"):
        raise ValueError(f"Invalid line_search: {line_search!r} (valid: 'armijo', "
                         "'strong_wolfe')")
    return ConjugateGradient(params, lr=lr, beta="pr+", restart=restart,
                             line_search=line_search, c1=c1, c2=c2, max_ls=max_ls)


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
# Momentum: the first tuning (lr 1e-2..1, beta in {0.5, 0.9, 0.95, 0.99}) chose beta = 0.5,
# the grid's lower edge (PREVIOUS_TUNED).  The grid now reaches beta = 0 (plain SGD, the
# bound of the range) and lr one half-decade further each way.  beta = 0.99 is left out:
# its best score there (414 at lr = 1e-2) was 1.6 times the optimum, and every lr above
# diverged or scored worse.  Chosen (results/tuning): lr = 1, beta = 0.25, inside the grid;
# the valley is flat (beta = 0 at lr = 1 and beta = 0.75 at lr = 0.3 score within 0.5 %).
_GRID_MOMENTUM = tuple(
    {"lr": lr, "momentum": mu}
    for lr in (3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
    for mu in (0.0, 0.25, 0.5, 0.75, 0.9, 0.95)
)
# Beyond the paper (EXTRA_BASELINES).  L-BFGS with torch's strong-Wolfe line search:
# lr is the first trial step; history 5..20 around torch users' usual 10.  Chosen: lr = 1,
# history 20, the grid's upper edge in history: at lr = 1 the three sizes score within
# 0.3 % of each other (233.8 / 234.5 / 233.9 for 20 / 10 / 5), so the edge is stated
# rather than extended.
_GRID_LBFGS_WOLFE = tuple(
    {"lr": lr, "history_size": m}
    for lr in (0.1, 0.3, 1.0, 3.0)
    for m in (5, 10, 20)
)
# PR+ CG with a strong-Wolfe line search: lr is the first trial step; c2 from Nocedal &
# Wright's value for CG (0.1) to a loose 0.99 (on minibatches a tight c2 minimises each
# minibatch's loss along d and the iterates run away: c2 = 0.1 diverges at every lr).
# Chosen: lr = 0.1, c2 = 0.9, inside the grid.
_GRID_CG_PR_WOLFE = tuple(
    {"lr": lr, "c2": c2}
    for lr in (0.01, 0.03, 0.1, 0.3, 1.0)
    for c2 in (0.1, 0.9, 0.99)
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
        description: one line on the variant (the paper's, or an extra row).
        label: the name in legends and tables of an optimizer registered by a user
            (:func:`l2o.plotting.method_style`, :func:`l2o.plotting.short_label`; the
            package's own methods have theirs in :mod:`l2o.plotting`).
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
                         "Fletcher-Reeves conjugate gradient, fixed step (the paper's variant)",
                         "Conjugate gradient"),
    "lbfgs": OptimizerEntry(LBFGS, {"lr": 1e-1, "history_size": 10}, _GRID_LBFGS, False,
                            "stochastic L-BFGS (m=10), fixed step (the paper's variant)",
                            "L-BFGS"),
    "adam": OptimizerEntry(torch.optim.Adam, {"lr": 1e-3}, _GRID_ADAPTIVE, True, "Adam", "ADAM"),
    "adagrad": OptimizerEntry(torch.optim.Adagrad, {"lr": 1e-2}, _GRID_ADAGRAD, True,
                              "AdaGrad", "AdaGrad"),
    "rmsprop": OptimizerEntry(torch.optim.RMSprop, {"lr": 1e-3}, _GRID_ADAPTIVE, True,
                              "RMSprop", "RMSprop"),
    "lbfgs_wolfe": OptimizerEntry(
        _lbfgs_strong_wolfe, {"lr": 1.0, "history_size": 10}, _GRID_LBFGS_WOLFE, False,
        "L-BFGS (torch.optim.LBFGS) with a strong-Wolfe line search on the minibatch",
        "L-BFGS, strong Wolfe"),
    "cg_pr_wolfe": OptimizerEntry(
        _cg_pr_plus, {"lr": 0.1, "c2": 0.9}, _GRID_CG_PR_WOLFE, False,
        "Polak-Ribiere+ conjugate gradient with restarts and a strong-Wolfe line search "
        "on the minibatch", "CG (PR+), strong Wolfe"),
}
#: The paper's seven hand-engineered algorithms, in the paper's order: the main rows of
#: every figure and verdict.
BASELINES = ("sgd", "momentum", "cg", "lbfgs", "adam", "adagrad", "rmsprop")
#: Beyond the paper: the line-search variants of CG and L-BFGS that a user would pick.
#: Opt-in extra rows (``figure_specs(optimizers=...)``, ``grid --optimizers``,
#: ``figure_results(extras=...)``), never part of :data:`BASELINES`.
EXTRA_BASELINES = ("lbfgs_wolfe", "cg_pr_wolfe")
#: Tuned values replaced by a later tuning, kept for what was run with them:
#: momentum's first tuning (grid lr 1e-2..1 x beta {0.5, 0.9, 0.95, 0.99}, commit
#: 56d94a6, meta-loss 253.85 on the tuning seeds), the GPS teacher of the runs before
#: the grid was extended.
PREVIOUS_TUNED: dict[str, dict[str, Any]] = {"momentum": {"lr": 0.3, "momentum": 0.5}}


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
            ``"lbfgs"``, ``"adam"``, ``"adagrad"``, ``"rmsprop"``, ``"lbfgs_wolfe"``,
            ``"cg_pr_wolfe"``, or registered).
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
